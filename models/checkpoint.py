"""Strict loading and saving of MPCViT checkpoints (timm-style ``.pth.tar``).

A checkpoint is what ``torch.save`` writes for the dict::

    {'epoch': int, 'arch': str, 'state_dict': {key: tensor}, 'optimizer': ... | None,
     'version': 2, 'args': argparse.Namespace, 'metric': float | None, ...}

Files are read with ``torch.load(weights_only=True)`` and exactly one extra
class allow-listed, ``argparse.Namespace`` (the ``args`` entry); nothing is
ever unpickled with ``weights_only=False``.  A file holding a bare state_dict
(a dict of tensors) is accepted too; its architecture is then inferred from
the shapes unless ``model_name`` is given.

Loading is strict: a missing key, an unexpected key, a wrong shape or dtype, a
NaN/Inf, or an alpha (or MPCViT+ beta) that is not exactly 0 or 1 raises
:class:`CheckpointError` naming the key.  The only keys dropped are the dead
parameters of MPCViT's teacher classes, matched by exact name and shape
(see :func:`privit.models.schema.dead_teacher_keys`).
"""

from __future__ import annotations

import argparse
import os
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from privit.models.attention import is_binary
from privit.models.config import MODEL_CONFIGS, ViTConfig
from privit.models.provenance import PROVENANCE_KEY
from privit.models.schema import dead_teacher_keys, describe_keys
from privit.models.vit import ViTLite

__all__ = [
    "CheckpointError",
    "CheckpointMeta",
    "describe_keys",
    "read_checkpoint_file",
    "infer_arch",
    "validate_state_dict",
    "model_from_state_dict",
    "load_checkpoint",
    "save_checkpoint",
]

PathLike = str | os.PathLike[str]
_SAFE_GLOBALS: list[Any] = [argparse.Namespace]
_BETA_KEY = re.compile(r"classifier\.blocks\.\d+\.beta")
_BLOCK_INDEX = re.compile(r"classifier\.blocks\.(\d+)\.")


class CheckpointError(ValueError):
    """A checkpoint file or state_dict that privit refuses to load (one-line reason)."""


@dataclass(frozen=True)
class CheckpointMeta:
    """What :func:`load_checkpoint` learned besides the weights."""

    path: str
    arch: str                       # the registry name the model was built from
    stored_arch: str | None         # 'arch' as written in the file (None for a bare state_dict)
    config: ViTConfig
    container: str                  # 'timm' (dict with 'state_dict') or 'state_dict' (bare)
    epoch: int | None
    metric: float | None
    version: int | None
    args: argparse.Namespace | None
    dropped_keys: tuple[str, ...]   # dead teacher parameters that were dropped
    other_keys: tuple[str, ...]     # further top-level entries (amp_scaler, saver, ...), unused
    provenance: dict[str, Any] | None = None   # how privit made the file (models/provenance.py)


# --------------------------------------------------------------------- reading
def _torch_error_line(err: BaseException) -> str:
    text = str(err)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (f"refuses to unpickle {found.group(1)}: weights_only=True allows tensors, "
                "plain containers and argparse.Namespace only")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first[:200]}" if first else type(err).__name__


def read_checkpoint_file(path: PathLike) -> Any:
    """``torch.load`` a file safely: CPU, ``weights_only=True``, only Namespace allow-listed.

    Raises:
        CheckpointError: no such file, not a torch zip archive (garbage or
            truncated), a disallowed pickled class, or any other read failure.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise CheckpointError(f"{name}: no such checkpoint file")
    if not zipfile.is_zipfile(name):
        raise CheckpointError(f"{name}: not a torch checkpoint: not a zip archive "
                              "(truncated, or not written by torch.save)")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(name, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure of the reader is a bad file to the caller
        raise CheckpointError(f"{name}: cannot read checkpoint: {_torch_error_line(err)}") from err


# ----------------------------------------------------------------- inference
def _shape(sd: Mapping[str, Any], key: str) -> tuple[int, ...] | None:
    value = sd.get(key)
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def infer_arch(state_dict: Mapping[str, Any]) -> str:
    """Find the one registry model whose shapes match a state_dict.

    Uses the patch conv, cls/positional embeddings, block count, alpha presence
    (student vs teacher) and head count (from alpha or the teacher's kernel_s).
    """
    conv = _shape(state_dict, "tokenizer.conv_layers.0.0.weight")
    pos = _shape(state_dict, "classifier.positional_emb")
    if conv is None or pos is None or len(conv) != 4 or len(pos) != 3:
        raise CheckpointError("cannot infer the architecture: patch conv or positional "
                              "embedding missing; pass model_name")
    depth = len({m.group(1) for k in state_dict if (m := _BLOCK_INDEX.match(k))})
    alpha = _shape(state_dict, "classifier.blocks.0.self_attn.alpha")
    kernel_s = _shape(state_dict, "classifier.blocks.0.self_attn.kernel_s")
    heads = alpha[1] if alpha and len(alpha) == 4 else kernel_s[0] if kernel_s else None
    matches = [
        name for name, cfg in MODEL_CONFIGS.items()
        if cfg.teacher == (alpha is None) and cfg.depth == depth
        and (cfg.dim, cfg.in_chans, cfg.patch_size, cfg.patch_size) == conv
        and cfg.n_tokens == pos[1] and (heads is None or cfg.heads == heads)
    ]
    if len(matches) != 1:
        raise CheckpointError(f"cannot infer the architecture (conv {conv}, {depth} blocks, "
                              f"{'student' if alpha else 'teacher'}): "
                              f"{len(matches)} registry matches; pass model_name")
    return matches[0]


def _config_for(arch: str, state_dict: Mapping[str, Any]) -> ViTConfig:
    if arch not in MODEL_CONFIGS:
        raise CheckpointError(f"unknown arch {arch!r}; known: {', '.join(sorted(MODEL_CONFIGS))}")
    fc = _shape(state_dict, "classifier.fc.weight")
    classes = fc[0] if fc and len(fc) == 2 and fc[0] > 0 else None
    linear_gelu = any(_BETA_KEY.fullmatch(k) for k in state_dict)
    try:
        return MODEL_CONFIGS[arch].with_overrides(num_classes=classes,
                                                  linear_gelu=linear_gelu)
    except ValueError as err:
        raise CheckpointError(f"state_dict does not fit arch {arch!r}: {err}") from None


# ---------------------------------------------------------------- validation
def _first(problem: str, keys: list[str]) -> str:
    more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
    return f"{problem} {keys[0]!r}{more}"


def validate_state_dict(state_dict: Mapping[str, Any], config: ViTConfig, *,
                        search: bool = False) -> tuple[OrderedDict[str, torch.Tensor], list[str]]:
    """Check a state_dict strictly against ``config``; return (live tensors, dropped keys).

    Args:
        search: accept non-binary alpha/beta (a search-phase checkpoint).

    Raises:
        CheckpointError: the first problem found, naming the key.
    """
    bad = [k for k, v in state_dict.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(_first("state_dict entry is not a named tensor:",
                                     [str(b) for b in bad]))
    keys = list(state_dict)
    if keys and all(k.startswith("module.") for k in keys):
        raise CheckpointError("state_dict keys carry a 'module.' (DataParallel) prefix; "
                              "MPCViT checkpoints have none")
    expected = {k.name: k.shape for k in describe_keys(config)}
    dead = dead_teacher_keys(config)
    unexpected = [k for k in keys if k not in expected and k not in dead]
    if unexpected:
        raise CheckpointError(_first(f"unexpected key for {config.name}:", unexpected))
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise CheckpointError(_first(f"missing key for {config.name}:", missing))

    live: OrderedDict[str, torch.Tensor] = OrderedDict()
    dropped: list[str] = []
    for key, tensor in state_dict.items():
        want = expected.get(key, dead.get(key))
        if tuple(tensor.shape) != want:
            raise CheckpointError(f"key {key!r} has shape {tuple(tensor.shape)}, expected {want}")
        if key not in expected:
            dropped.append(key)
            continue
        if tensor.layout != torch.strided or tensor.dtype != torch.float32:
            raise CheckpointError(f"key {key!r} has dtype {tensor.dtype} ({tensor.layout}), "
                                  "expected dense torch.float32")
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"key {key!r} contains NaN or Inf")
        is_arch = key.endswith(".self_attn.alpha") or _BETA_KEY.fullmatch(key) is not None
        if is_arch and not search and not is_binary(tensor):
            odd = sorted({v for v in tensor.flatten().tolist() if v not in (0.0, 1.0)})[:4]
            raise CheckpointError(f"key {key!r} must hold only 0 or 1, found {odd} "
                                  "(a search checkpoint; load it with search=True)")
        live[key] = tensor
    # Keep the schema order whatever order the file had.
    return OrderedDict((k, live[k]) for k in expected), dropped


def model_from_state_dict(state_dict: Mapping[str, Any], arch: str | None = None, *,
                          search: bool = False) -> tuple[ViTLite, ViTConfig, list[str]]:
    """Build an eval-mode :class:`ViTLite` from a state_dict, strictly.

    ``arch`` defaults to :func:`infer_arch`; classes come from ``classifier.fc.weight``
    and MPCViT+ from the presence of ``beta`` keys.  With ``search`` the model is
    put in search mode (continuous alpha allowed, alpha trainable).

    Returns:
        (model, config, dropped dead teacher keys)
    """
    config = _config_for(arch if arch is not None else infer_arch(state_dict), state_dict)
    live, dropped = validate_state_dict(state_dict, config, search=search)
    model = ViTLite(config)
    model.load_state_dict(live, strict=True)
    if search and not config.teacher:
        model.set_search(True)
    model.eval()
    return model, config, dropped


# ------------------------------------------------------------------- loading
def load_checkpoint(path: PathLike, model_name: str | None = None, *,
                    search: bool = False) -> tuple[ViTLite, CheckpointMeta]:
    """Load an MPCViT ``.pth.tar`` (or a bare state_dict file) into an eval-mode ViTLite.

    Args:
        path: the checkpoint file.
        model_name: registry name overriding the file's ``arch`` (needed for a bare
            state_dict whose shapes match several models).
        search: accept a search checkpoint with continuous alpha (model in search mode).

    Raises:
        CheckpointError: unreadable file or any strict-loading problem.
    """
    name = os.fspath(path)
    obj = read_checkpoint_file(name)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        container, state_dict = "timm", obj["state_dict"]
        if not isinstance(state_dict, Mapping):
            raise CheckpointError(f"{name}: 'state_dict' is a {type(state_dict).__name__}, "
                                  "not a dict of tensors")
        stored_arch = obj.get("arch") if isinstance(obj.get("arch"), str) else None
    elif (isinstance(obj, Mapping) and obj
          and all(isinstance(v, torch.Tensor) for v in obj.values())):
        container, state_dict, stored_arch, obj = "state_dict", obj, None, {}
    else:
        raise CheckpointError(f"{name}: not an MPCViT checkpoint: expected a dict with "
                              f"'state_dict' or a dict of tensors, got {type(obj).__name__}")
    arch = model_name or stored_arch
    try:
        model, config, dropped = model_from_state_dict(state_dict, arch, search=search)
    except CheckpointError as err:
        raise CheckpointError(f"{name}: {err}") from None
    epoch, metric, version, args = (obj.get(k) for k in ("epoch", "metric", "version", "args"))
    known = {"epoch", "arch", "state_dict", "optimizer", "version", "args", "metric",
             PROVENANCE_KEY}
    provenance = obj.get(PROVENANCE_KEY)
    meta = CheckpointMeta(
        path=name, arch=config.name, stored_arch=stored_arch, config=config,
        container=container,
        epoch=epoch if isinstance(epoch, int) else None,
        metric=float(metric) if isinstance(metric, (int, float)) else None,
        version=version if isinstance(version, int) else None,
        args=args if isinstance(args, argparse.Namespace) else None,
        dropped_keys=tuple(dropped),
        other_keys=tuple(str(k) for k in obj if k not in known),
        provenance=dict(provenance) if isinstance(provenance, Mapping) else None,
    )
    return model, meta


# -------------------------------------------------------------------- saving
def _check_arch(model: ViTLite, arch: str) -> None:
    if arch not in MODEL_CONFIGS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(sorted(MODEL_CONFIGS))}")
    want = MODEL_CONFIGS[arch].with_overrides(num_classes=model.config.num_classes,
                                              linear_gelu=model.config.linear_gelu)
    got = model.config
    if (want.img_size, want.in_chans, want.patch_size, want.dim, want.depth, want.heads,
            want.mlp_hidden, want.teacher) != (got.img_size, got.in_chans, got.patch_size,
                                               got.dim, got.depth, got.heads, got.mlp_hidden,
                                               got.teacher):
        raise ValueError(f"model config {got} does not match arch {arch!r}")


def save_checkpoint(path: PathLike, model: ViTLite, arch: str | None = None,
                    extra: Mapping[str, Any] | None = None) -> None:
    """Write a timm-style checkpoint that :func:`load_checkpoint` (and MPCViT) can read.

    Args:
        path: destination; written atomically (temporary file, then rename).
        model: the model; its state_dict is copied to CPU.
        arch: registry name stored as 'arch' (default ``model.config.name``).
        extra: optional 'epoch' (default 0), 'metric' (None), 'optimizer' (None),
            'args' (default: a Namespace with model, num_classes, img_size,
            linear_gelu) and any other top-level entries (e.g. 'amp_scaler').
            Values must be loadable with weights_only=True; the file is read back
            once to check.

    Raises:
        ValueError: unknown arch, arch not matching the model, a reserved key in
            ``extra``, or an entry that a safe load would refuse.
    """
    arch = arch or model.config.name
    _check_arch(model, arch)
    extra = dict(extra or {})
    reserved = {"arch", "state_dict", "version"} & set(extra)
    if reserved:
        raise ValueError(f"extra may not set {sorted(reserved)}")
    default_args = argparse.Namespace(model=arch, num_classes=model.config.num_classes,
                                      img_size=model.config.img_size,
                                      linear_gelu=model.config.linear_gelu)
    checkpoint: dict[str, Any] = {
        "epoch": extra.pop("epoch", 0),
        "arch": arch,
        "state_dict": OrderedDict((k, v.detach().cpu().clone())
                                  for k, v in model.state_dict().items()),
        "optimizer": extra.pop("optimizer", None),
        "version": 2,
        "args": extra.pop("args", default_args),
        "metric": extra.pop("metric", None),
    }
    checkpoint.update(extra)
    name = os.fspath(path)
    tmp = f"{name}.tmp{os.getpid()}"
    try:
        torch.save(checkpoint, tmp)
        read_checkpoint_file(tmp)
        os.replace(tmp, name)
    except CheckpointError as err:
        raise ValueError(f"checkpoint for {name} would not load safely: {err}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
