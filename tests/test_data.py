"""Dataset loaders on generated files: digits, CIFAR pickles, a Tiny-ImageNet tree."""

from __future__ import annotations

import collections
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from privit.models.config import DATASET_NORMALIZATION
from privit.models.data import (
    DatasetError,
    load_cifar,
    load_dataset,
    load_digits,
    load_tinyimagenet,
    safe_unpickle,
)


# ------------------------------------------------------------------ digits
def test_digits_split_is_stratified_deterministic_and_normalised() -> None:
    data = load_digits()
    again = load_digits()
    assert (len(data.train), len(data.test)) == (1437, 360)
    assert data.train.images.shape == (1437, 1, 8, 8)
    assert data.train.images.dtype == torch.float32 and data.train.labels.dtype == torch.int64
    assert torch.equal(data.train.images, again.train.images)
    assert torch.equal(data.test.labels, again.test.labels)
    counts = np.bincount(data.test.labels.numpy(), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37           # stratified: 36 +- 1 per class
    assert abs(float(data.train.images.mean())) < 1e-4
    assert abs(float(data.train.images.std()) - 1) < 1e-3
    # black pixels (value 0) map to the background value
    assert float(data.train.images.min()) == pytest.approx(float(data.background()), abs=1e-6)
    other = load_digits(seed=1)
    assert not torch.equal(other.test.labels, data.test.labels)


def test_shipped_digits_test_split_is_scikit_learns() -> None:
    """models/assets/digits_test.pt (what `privit run` reads, without scikit-learn) is
    exactly the test split load_digits() makes today."""
    from privit.launch.vit_job import DIGITS_TEST_ASSET, assets_dir, digits_test_split

    assert (assets_dir() / DIGITS_TEST_ASSET).is_file()
    images, labels = digits_test_split()
    test = load_digits().test
    assert torch.equal(images, test.images) and images.dtype == torch.float32
    assert torch.equal(labels, test.labels) and labels.dtype == torch.int64


def test_load_dataset_dispatch_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="--data-dir"):
        load_dataset("cifar10")
    with pytest.raises(DatasetError, match="no such dataset directory"):
        load_dataset("cifar10", tmp_path / "absent")


# ------------------------------------------------------------------- CIFAR
class _Py2StylePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python-2 str opcodes and numpy globals as numpy.core.*, like the
    official CIFAR files (pickled by Python 2's cPickle)."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = getattr(obj, "__module__", "").replace("numpy._core", "numpy.core")
        qualname = name or obj.__qualname__  # type: ignore[attr-defined]
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)

    dispatch[type] = save_global


def _batch(n: int, classes: int, seed: int, label_key: bytes = b"labels") -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"fake", label_key: [int(v) for v in rng.integers(0, classes, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"x.png"] * n}


def _dump(path: Path, obj: object, style: str = "py3") -> None:
    with open(path, "wb") as handle:
        if style == "py2":
            _Py2StylePickler(handle, protocol=2).dump(obj)
        else:
            pickle.dump(obj, handle, protocol=5 if style == "py3-5" else 4)


def _fake_cifar10(root: Path, style: str = "py3") -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", _batch(3, 10, i), style)
    _dump(folder / "test_batch", _batch(4, 10, 9), style)
    return folder


@pytest.mark.parametrize("style", ["py2", "py3", "py3-5"])
def test_cifar10_loads_each_pickle_style(tmp_path: Path, style: str) -> None:
    folder = _fake_cifar10(tmp_path, style)
    data = load_cifar(tmp_path, 10)                 # the parent folder works too
    assert load_cifar(folder, 10).train.labels.tolist() == data.train.labels.tolist()
    assert data.train.images.shape == (15, 3, 32, 32) and len(data.test) == 4
    raw = _batch(3, 10, 1)
    assert data.train.labels[:3].tolist() == raw[b"labels"]
    mean, std = DATASET_NORMALIZATION["cifar10"]
    first = raw[b"data"][0].reshape(3, 32, 32).astype(np.float32) / 255
    want = (first - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(data.train.images[0].numpy(), want, rtol=1e-5, atol=1e-5)
    assert data.mean == mean and data.num_classes == 10


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = _batch(5, 100, 1, b"fine_labels")
    train[b"fine_labels"][0] = 99
    _dump(folder / "train", train)
    _dump(folder / "test", _batch(2, 100, 2, b"fine_labels"))
    data = load_dataset("cifar100", tmp_path)
    assert data.num_classes == 100 and data.train.labels[0] == 99 and len(data.train) == 5


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (os.remove, (self.target,))


def _corrupt(kind: str, folder: Path, tmp_path: Path) -> str:
    """Break the CIFAR-10 folder in one way; return a regex the error must match."""
    target = folder / "data_batch_3"
    bad = _batch(3, 10, 3)
    if kind == "missing":
        target.unlink()
        return "data_batch_3: cannot read"
    if kind == "shape":
        bad[b"data"] = bad[b"data"][:, :3000]
        _dump(target, bad)
        return r"data_batch_3: 'data' must be a uint8 array"
    if kind == "dtype":
        bad[b"data"] = bad[b"data"].astype(np.float32)
        _dump(target, bad)
        return "data_batch_3: 'data' must be a uint8 array"
    if kind == "label_range":
        bad[b"labels"][1] = 10
        _dump(target, bad)
        return r"data_batch_3: 'labels': labels must lie in \[0, 10\)"
    if kind == "label_count":
        bad[b"labels"] = bad[b"labels"][:2]
        _dump(target, bad)
        return "data_batch_3: 'labels' has"
    if kind == "no_labels":
        del bad[b"labels"]
        _dump(target, bad)
        return "data_batch_3: no 'labels' entry"
    if kind == "not_dict":
        _dump(target, [1, 2, 3])
        return "data_batch_3: expected a dict"
    if kind == "garbage":
        target.write_bytes(b"this is not a pickle")
        return "data_batch_3: not a valid pickle"
    if kind == "evil":
        sentinel = tmp_path / "sentinel"
        sentinel.write_text("still here")
        bad[b"data"] = _Evil(str(sentinel))
        _dump(target, bad)
        return r"data_batch_3: refuses to unpickle (posix|nt|os)\.(remove|unlink)"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "shape", "dtype", "label_range", "label_count",
                                  "no_labels", "not_dict", "garbage", "evil"])
def test_cifar_malformed_is_one_line_error_naming_the_file(tmp_path: Path, kind: str) -> None:
    folder = _fake_cifar10(tmp_path)
    pattern = _corrupt(kind, folder, tmp_path)
    with pytest.raises(DatasetError, match=pattern) as info:
        load_cifar(folder, 10)
    assert "\n" not in str(info.value)
    if kind == "evil":
        assert (tmp_path / "sentinel").exists()        # the payload never ran


def test_restricted_unpickler_refuses_builtins(tmp_path: Path) -> None:
    path = tmp_path / "f.pkl"
    _dump(path, {"x": collections.OrderedDict(a=1)})
    with pytest.raises(DatasetError, match="refuses to unpickle collections.OrderedDict"):
        safe_unpickle(path)


# ----------------------------------------------------------- Tiny-ImageNet
WNIDS = ["n02", "n01", "n03"]                           # sorted order gives the labels


def _jpeg(path: Path, value: int, size: int = 64, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, value // 2)
    Image.new(mode, (size, size), colour).save(path, "JPEG")


def _fake_tiny(root: Path) -> Path:
    base = root / "tiny-imagenet-200"
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    for k, wnid in enumerate(WNIDS):
        for i in range(2):
            _jpeg(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", 40 * k + i,
                  mode="L" if (k, i) == (0, 1) else "RGB")
    lines = []
    for i, wnid in enumerate(["n03", "n01", "n02"]):
        _jpeg(base / "val" / "images" / f"val_{i}.JPEG", 100 + i)
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def test_tinyimagenet_layout(tmp_path: Path) -> None:
    _fake_tiny(tmp_path)
    data = load_tinyimagenet(tmp_path)
    assert data.num_classes == 3 and data.image_shape == (3, 64, 64)
    assert data.train.labels.tolist() == [0, 0, 1, 1, 2, 2]   # n01, n02, n03
    assert data.test.labels.tolist() == [2, 0, 1]
    assert data.mean == DATASET_NORMALIZATION["tinyimagenet"][0]
    assert torch.isfinite(data.train.images).all()


@pytest.mark.parametrize("kind,pattern", [
    ("wnids", "wnids.txt: missing"),
    ("class_dir", r"n03[/\\]images: missing"),
    ("unknown_wnid", r"val_annotations.txt:2: expected"),
    ("size", r"n01_0.JPEG: image is 32x32, expected 64x64"),
    ("corrupt", r"n01_1.JPEG: not a readable image"),
    ("val_image", r"val_1.JPEG: missing"),
])
def test_tinyimagenet_malformed(tmp_path: Path, kind: str, pattern: str) -> None:
    base = _fake_tiny(tmp_path)
    if kind == "wnids":
        (base / "wnids.txt").unlink()
        pattern = "tiny-imagenet-200.wnids.txt: missing|wnids.txt: missing"
    elif kind == "class_dir":
        for f in (base / "train" / "n03" / "images").iterdir():
            f.unlink()
        (base / "train" / "n03" / "images").rmdir()
    elif kind == "unknown_wnid":
        ann = base / "val" / "val_annotations.txt"
        lines = ann.read_text().splitlines()
        lines[1] = lines[1].replace("n01", "n99")
        ann.write_text("\n".join(lines))
    elif kind == "size":
        _jpeg(base / "train" / "n01" / "images" / "n01_0.JPEG", 5, size=32)
    elif kind == "corrupt":
        (base / "train" / "n01" / "images" / "n01_1.JPEG").write_bytes(b"\xff\xd8 broken")
    elif kind == "val_image":
        (base / "val" / "images" / "val_1.JPEG").unlink()
    with pytest.raises(DatasetError, match=pattern) as info:
        load_tinyimagenet(tmp_path)
    assert "\n" not in str(info.value)
