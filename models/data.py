"""Image classification datasets for training and evaluating ViT-Lite models.

Every loader returns an :class:`ImageDataset`: a train and a test :class:`Split`,
each holding ``images`` (float32, (N, C, H, W), normalised per channel with the
dataset's mean and std) and ``labels`` (int64, (N,)).

* ``digits`` (default, no download): scikit-learn's bundled 8x8 digits (1,797
  grayscale images, values 0..16).  Scaled to [0, 1], split stratified and
  deterministically (1,437 train / 360 test for the default seed), then
  normalised with the *train* split's mean and std (one channel).
* ``cifar10`` / ``cifar100``: the python-pickle batches of the official archives
  (``data_batch_1``..``data_batch_5`` + ``test_batch``; ``train`` + ``test`` with
  ``fine_labels``), found in ``data_dir`` or in its ``cifar-10-batches-py`` /
  ``cifar-100-python`` subfolder.  The pickles are read with
  :class:`RestrictedUnpickler`, which rebuilds numpy arrays and nothing else.
* ``tinyimagenet``: the folder layout of ``tiny-imagenet-200`` (``wnids.txt``,
  ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` +
  ``val/val_annotations.txt``), decoded with PIL.  The labelled ``val`` split is
  the test split (the official test split has no labels); class indices follow
  the sorted wnids (torchvision's ImageFolder order).

Mean/std for CIFAR and Tiny-ImageNet come from
:data:`privit.models.config.DATASET_NORMALIZATION`.  Any missing or malformed
file raises :class:`DatasetError`, a one-line ``ValueError`` naming the file.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from privit.models.config import DATASET_NORMALIZATION

__all__ = [
    "DATASETS",
    "DEFAULT_MODELS",
    "DatasetError",
    "Split",
    "ImageDataset",
    "RefusedGlobal",
    "RestrictedUnpickler",
    "safe_unpickle",
    "load_dataset",
    "load_digits",
    "load_cifar",
    "load_tinyimagenet",
]

PathLike = str | os.PathLike[str]

DATASETS = ("digits", "cifar10", "cifar100", "tinyimagenet")
"""Names accepted by :func:`load_dataset` (and the CLI's ``--dataset``)."""

DEFAULT_MODELS: Mapping[str, str] = {
    "digits": "vit_digits",
    "cifar10": "vit_7_4_32",
    "cifar100": "vit_7_4_32",
    "tinyimagenet": "vit_9_12_64",
}
"""The student registry name trained on each dataset by default (teacher: + '_teacher')."""

_CIFAR_PIXELS = 3 * 32 * 32
_TINY_SIZE = 64


class DatasetError(ValueError):
    """A dataset file that is missing or malformed (one line, naming the file)."""


# ---------------------------------------------------------------- containers
@dataclass(frozen=True)
class Split:
    """One split: normalised float32 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.float32 or self.images.ndim != 4:
            raise ValueError(f"images must be float32 (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be int64 ({self.images.shape[0]},), got "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, count: int, seed: int = 0) -> Split:
        """A random subset of ``count`` examples (all of them if count >= len)."""
        if count >= len(self):
            return self
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        index = index.sort().values
        return Split(self.images[index], self.labels[index])

    def batches(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive (images, labels) batches in order (for evaluation)."""
        for start in range(0, len(self), size):
            yield self.images[start:start + size], self.labels[start:start + size]


@dataclass(frozen=True)
class ImageDataset:
    """A dataset's train and test splits with the normalisation applied to both."""

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)

    def background(self) -> torch.Tensor:
        """The normalised value of a black (zero) pixel per channel, shape (C, 1, 1)."""
        mean = torch.tensor(self.mean, dtype=torch.float32)
        std = torch.tensor(self.std, dtype=torch.float32)
        return (-mean / std).reshape(-1, 1, 1)

    def subset(self, train: int, test: int, seed: int = 0) -> ImageDataset:
        """The same dataset cut to at most ``train`` / ``test`` examples (quick runs, tests)."""
        return ImageDataset(self.name, self.train.subset(train, seed),
                            self.test.subset(test, seed), self.num_classes, self.mean, self.std)


def _normalise(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
               chunk: int = 4096) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 ((x / 255) - mean) / std, chunked to bound memory."""
    out = torch.empty(images.shape, dtype=torch.float32)
    m = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
    for start in range(0, images.shape[0], chunk):
        block = torch.from_numpy(np.ascontiguousarray(images[start:start + chunk]))
        out[start:start + chunk] = (block.float() / 255.0 - m) / s
    return out


def _check_labels(labels: np.ndarray, num_classes: int, source: str) -> torch.Tensor:
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DatasetError(f"{source}: labels must be a 1-d list of integers, got "
                           f"{labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{source}: labels must lie in [0, {num_classes}), found "
                           f"{int(labels.min())}..{int(labels.max())}")
    return torch.from_numpy(labels.astype(np.int64))


# -------------------------------------------------------------------- digits
def load_digits(seed: int = 0, test_size: int = 360) -> ImageDataset:
    """scikit-learn's 8x8 digits: stratified split, scaled to [0, 1], train-normalised.

    Args:
        seed: ``random_state`` of the stratified split (0 gives the shipped models' split).
        test_size: images held out for testing (360 of 1,797 by default).
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[:, None]   # (1797, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_size, stratify=labels, random_state=seed)
    mean, std = float(x_train.mean()), float(x_train.std())

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy((x - mean) / std).float(), torch.from_numpy(y))

    return ImageDataset("digits", split(x_train, y_train), split(x_test, y_test), 10,
                        (mean,), (std,))


def digits_test_asset(path: str) -> None:
    """Write the digits test split of `load_digits()` (images, labels) to `path`: the
    shipped models/assets/digits_test.pt, which `privit run` reads instead of importing
    scikit-learn. Regenerate with
    `python -c "from privit.models.data import digits_test_asset as w; w('models/assets/digits_test.pt')"`."""
    test = load_digits().test
    torch.save({"images": test.images.clone(), "labels": test.labels.clone()}, path)


# --------------------------------------------------------------------- CIFAR
def _numpy_attr(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)


def _allowed_globals() -> dict[tuple[str, str], Callable[[], Any]]:
    """(module, name) -> lazy getter for the numpy array rebuilders a pickle may use."""
    core = "numpy._core" if hasattr(np, "_core") else "numpy.core"
    table: dict[tuple[str, str], Callable[[], Any]] = {
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }
    # Python-2 era files name numpy.core, numpy >= 2 writes numpy._core; both map
    # to the module this numpy actually has.
    for prefix in ("numpy.core", "numpy._core"):
        for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"),
                             ("numeric", "_frombuffer")):
            table[(f"{prefix}.{module}", name)] = functools.partial(
                _numpy_attr, f"{core}.{module}", name)
    return table


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global that :class:`RestrictedUnpickler` does not allow."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds plain containers and numpy arrays, nothing else.

    Allowed globals: ``numpy.ndarray``, ``numpy.dtype`` and numpy's array/scalar
    rebuilders (``multiarray._reconstruct``, ``multiarray.scalar``,
    ``numeric._frombuffer``, under ``numpy.core`` or ``numpy._core``).  Any other
    global (``os.system``, ``builtins.eval``, a class...) raises
    :class:`RefusedGlobal` before anything is called; persistent ids are refused
    by the base class.
    """

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        getter = self._ALLOWED.get((module, name))
        if getter is None:
            raise RefusedGlobal(
                f"refuses to unpickle {module}.{name}: only numpy arrays are allowed")
        return getter()


def safe_unpickle(path: PathLike) -> Any:
    """Read a (Python 2 or 3) pickle with :class:`RestrictedUnpickler`.

    Python-2 strings are decoded as latin-1 (what numpy needs for py2 arrays).

    Raises:
        DatasetError: missing file, a refused global, or a corrupt pickle.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise DatasetError(f"{name}: cannot read: {err.strerror or err}") from None
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedGlobal as err:
        raise DatasetError(f"{name}: {err}") from None
    except Exception as err:  # corrupt/truncated pickles fail in many ways
        detail = str(err).splitlines()[0][:160] if str(err) else ""
        raise DatasetError(f"{name}: not a valid pickle: {type(err).__name__}: "
                           f"{detail}") from None


def _cifar_file(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch -> uint8 (N, 3, 32, 32) and int labels, validated."""
    obj = safe_unpickle(path)
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a dict, got {type(obj).__name__}")
    entries = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    for key in ("data", label_key):
        if key not in entries:
            raise DatasetError(f"{path}: no {key!r} entry (has {sorted(map(str, entries))})")
    data = entries["data"]
    if (not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2
            or data.shape[1] != _CIFAR_PIXELS):
        shape = getattr(data, "shape", None)
        raise DatasetError(f"{path}: 'data' must be a uint8 array (N, {_CIFAR_PIXELS}), got "
                           f"{type(data).__name__} {getattr(data, 'dtype', '')} {shape}")
    try:
        labels = np.asarray(entries[label_key])
    except Exception:  # ragged or odd objects
        raise DatasetError(f"{path}: {label_key!r} is not a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {label_key!r} has {labels.shape} entries for "
                           f"{data.shape[0]} images")
    _check_labels(labels, num_classes, f"{path}: {label_key!r}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _find_dir(data_dir: PathLike, marker: str, subfolder: str) -> Path:
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset directory")
    for candidate in (root, root / subfolder):
        if (candidate / marker).exists():
            return candidate
    raise DatasetError(f"{root / marker}: missing (looked in {root} and {root / subfolder})")


def load_cifar(data_dir: PathLike, num_classes: int = 10) -> ImageDataset:
    """CIFAR-10 (``num_classes=10``) or CIFAR-100 (100, fine labels) from pickles.

    ``data_dir`` is the extracted folder (``cifar-10-batches-py`` /
    ``cifar-100-python``) or its parent.
    """
    if num_classes == 10:
        name, subfolder, label_key = "cifar10", "cifar-10-batches-py", "labels"
        train_files, test_file = [f"data_batch_{i}" for i in range(1, 6)], "test_batch"
    elif num_classes == 100:
        name, subfolder, label_key = "cifar100", "cifar-100-python", "fine_labels"
        train_files, test_file = ["train"], "test"
    else:
        raise ValueError(f"CIFAR has 10 or 100 classes, not {num_classes}")
    root = _find_dir(data_dir, test_file, subfolder)
    mean, std = DATASET_NORMALIZATION[name]

    def split(files: list[str]) -> Split:
        parts = [_cifar_file(root / f, label_key, num_classes) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        return Split(_normalise(images, mean, std), torch.from_numpy(labels))

    return ImageDataset(name, split(train_files), split([test_file]), num_classes, mean, std)


# ------------------------------------------------------------- Tiny-ImageNet
def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read: {err}") from None


def _read_jpeg(path: Path) -> np.ndarray:
    """One 64x64 image as uint8 (3, 64, 64); grayscale files are expanded to RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"{path}: not a readable image: {type(err).__name__}") from None
    if rgb.size != (_TINY_SIZE, _TINY_SIZE):
        raise DatasetError(f"{path}: image is {rgb.size[0]}x{rgb.size[1]}, "
                           f"expected {_TINY_SIZE}x{_TINY_SIZE}")
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _tiny_split(files: list[tuple[Path, int]], source: Path) -> tuple[np.ndarray, np.ndarray]:
    if not files:
        raise DatasetError(f"{source}: no images found")
    images = np.empty((len(files), 3, _TINY_SIZE, _TINY_SIZE), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        images[i] = _read_jpeg(path)
    return images, np.array([label for _, label in files], dtype=np.int64)


def load_tinyimagenet(data_dir: PathLike) -> ImageDataset:
    """Tiny-ImageNet-200 from its folder layout (``data_dir`` or ``data_dir/tiny-imagenet-200``).

    Memory: the full train split is 100,000 x 3 x 64 x 64 float32, about 4.9 GB.
    """
    root = _find_dir(data_dir, "wnids.txt", "tiny-imagenet-200")
    wnids_path = root / "wnids.txt"
    wnids = [w.strip() for w in _read_text(wnids_path).splitlines() if w.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise DatasetError(f"{wnids_path}: expected distinct class ids, one per line")
    classes = {w: i for i, w in enumerate(sorted(wnids))}

    train_files: list[tuple[Path, int]] = []
    for wnid in sorted(wnids):
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise DatasetError(f"{folder}: missing (class {wnid} of wnids.txt)")
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
        if not found:
            raise DatasetError(f"{folder}: no .JPEG images")
        train_files += [(p, classes[wnid]) for p in found]

    ann_path = root / "val" / "val_annotations.txt"
    val_files: list[tuple[Path, int]] = []
    for number, line in enumerate(_read_text(ann_path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in classes:
            raise DatasetError(f"{ann_path}:{number}: expected '<file>\\t<wnid>...' with a "
                               f"wnid from wnids.txt, got {line.strip()[:80]!r}")
        image = root / "val" / "images" / fields[0]
        if not image.is_file():
            raise DatasetError(f"{image}: missing (listed in {ann_path}:{number})")
        val_files.append((image, classes[fields[1]]))

    mean, std = DATASET_NORMALIZATION["tinyimagenet"]
    x_train, y_train = _tiny_split(train_files, root / "train")
    x_val, y_val = _tiny_split(val_files, ann_path)
    return ImageDataset("tinyimagenet",
                        Split(_normalise(x_train, mean, std), torch.from_numpy(y_train)),
                        Split(_normalise(x_val, mean, std), torch.from_numpy(y_val)),
                        len(wnids), mean, std)


# ------------------------------------------------------------------ dispatch
def load_dataset(name: str, data_dir: PathLike | None = None, *, seed: int = 0) -> ImageDataset:
    """Load a dataset by name (see :data:`DATASETS`).

    Args:
        name: 'digits', 'cifar10', 'cifar100' or 'tinyimagenet'.
        data_dir: folder of the files (not used for digits, required otherwise).
        seed: the digits split seed (other datasets have fixed splits).

    Raises:
        DatasetError: unknown name, no ``data_dir``, or a missing/malformed file.
    """
    if name == "digits":
        return load_digits(seed=seed)
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if data_dir is None:
        raise DatasetError(f"dataset {name!r} needs a data directory (--data-dir)")
    if name == "tinyimagenet":
        return load_tinyimagenet(data_dir)
    return load_cifar(data_dir, num_classes=10 if name == "cifar10" else 100)
