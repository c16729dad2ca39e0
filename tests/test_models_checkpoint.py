"""Checkpoint saving and strict loading (timm-style .pth.tar, weights_only=True)."""

from __future__ import annotations

import argparse
import ast
import inspect
import pathlib
import pickle
from collections import OrderedDict
from typing import Any

import pytest
import torch

from privit.models import checkpoint as ckpt_module
from privit.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_state_dict,
    save_checkpoint,
)
from privit.models.config import MODEL_CONFIGS, get_config
from privit.models.schema import count_elements, describe_keys, documented_configs, format_key_table
from privit.models.vit import ViTLite

ALPHA = [[1, 0, 1, 0], [0, 0, 1, 1]]


def _digits_model(seed: int = 0, name: str = "vit_digits", **overrides: Any) -> ViTLite:
    torch.manual_seed(seed)
    model = ViTLite(get_config(name, **overrides)).eval()
    if not model.config.teacher:
        model.set_alpha(ALPHA)
    return model


def _timm_dict(state_dict: dict, arch: str, **extra: Any) -> dict:
    return {"epoch": 7, "arch": arch, "state_dict": state_dict, "optimizer": {},
            "version": 2, "args": argparse.Namespace(model=arch, lr=1e-3), "metric": 93.2,
            **extra}


def _img(config: Any, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(5)
    return torch.randn(batch, config.in_chans, config.img_size, config.img_size, generator=gen)


def _same_logits(a: ViTLite, b: ViTLite) -> bool:
    img = _img(a.config)
    with torch.no_grad():
        return torch.equal(a(img), b(img))


# -------------------------------------------------------------- round trips

def test_round_trip_identical_logits(tmp_path: pathlib.Path) -> None:
    model = _digits_model()
    path = tmp_path / "m.pth.tar"
    save_checkpoint(path, model, extra={"epoch": 12, "metric": 88.5, "amp_scaler": {"scale": 1.0}})
    loaded, meta = load_checkpoint(path)
    assert _same_logits(model, loaded)
    assert not loaded.training
    assert (meta.arch, meta.stored_arch, meta.container, meta.epoch, meta.metric, meta.version) \
        == ("vit_digits", "vit_digits", "timm", 12, 88.5, 2)
    assert isinstance(meta.args, argparse.Namespace) and meta.args.model == "vit_digits"
    assert meta.other_keys == ("amp_scaler",) and meta.dropped_keys == ()
    raw = ckpt_module.read_checkpoint_file(path)
    assert list(raw)[:7] == ["epoch", "arch", "state_dict", "optimizer", "version", "args",
                             "metric"]


def test_vit_7_4_32_cifar100_classes_inferred() -> None:
    model = ViTLite(get_config("vit_7_4_32", num_classes=100)).eval()
    model.set_alpha(torch.arange(28).reshape(7, 4) % 2)
    loaded, config, dropped = model_from_state_dict(model.state_dict(), "vit_7_4_32")
    assert config.num_classes == 100 and dropped == []
    assert sum(v.numel() for v in loaded.state_dict().values()) == 3_740_032
    assert torch.equal(loaded.get_alpha(), model.get_alpha())


def test_round_trip_mpcvit_plus(tmp_path: pathlib.Path) -> None:
    model = _digits_model(linear_gelu=True)
    beta = model.blocks[1].beta
    assert beta is not None
    with torch.no_grad():
        beta[0, 3:9] = 0.0
    save_checkpoint(tmp_path / "plus.pth.tar", model)
    loaded, meta = load_checkpoint(tmp_path / "plus.pth.tar")
    assert meta.config.linear_gelu and meta.arch == "vit_digits"
    assert _same_logits(model, loaded)


def test_bare_state_dict_infers_arch(tmp_path: pathlib.Path) -> None:
    for name in ("vit_digits", "vit_digits_teacher"):
        model = _digits_model(name=name)
        torch.save(model.state_dict(), tmp_path / f"{name}.pt")
        loaded, meta = load_checkpoint(tmp_path / f"{name}.pt")
        assert (meta.container, meta.arch, meta.stored_arch) == ("state_dict", name, None)
        assert _same_logits(model, loaded)


def test_model_name_overrides_arch(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.pth.tar"
    save_checkpoint(path, _digits_model())
    with pytest.raises(CheckpointError, match="unexpected key for vit_digits_teacher: "
                                              "'classifier.blocks.0.self_attn.alpha'"):
        load_checkpoint(path, model_name="vit_digits_teacher")


def test_search_checkpoint_needs_search_flag(tmp_path: pathlib.Path) -> None:
    model = _digits_model()
    model.set_alpha(torch.full((2, 4), 0.5))
    path = tmp_path / "search.pth.tar"
    save_checkpoint(path, model)
    message = r"self_attn.alpha' must hold only 0 or 1, found \[0.5\]"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    loaded, _ = load_checkpoint(path, search=True)
    assert loaded.search and torch.equal(loaded.get_alpha(), torch.full((2, 4), 0.5))


# ---------------------------------------------------- teacher dead weights

def _teacher_with_dead(name: str) -> tuple[ViTLite, OrderedDict]:
    teacher = _digits_model(name=name)
    live = teacher.state_dict()
    full: OrderedDict[str, torch.Tensor] = OrderedDict()
    for spec in describe_keys(teacher.config, include_dead=True):
        full[spec.name] = live[spec.name] if spec.live else torch.zeros(spec.shape)
    return teacher, full


def test_teacher_state_dict_with_dead_params_vit_7_4_32() -> None:
    teacher, full = _teacher_with_dead("vit_7_4_32_teacher")
    assert len(full) == 187 and sum(v.numel() for v in full.values()) == 28_658_767
    loaded, config, dropped = model_from_state_dict(full)  # arch inferred
    assert config.name == "vit_7_4_32_teacher" and len(dropped) == 187 - 85
    assert "classifier.blocks.6.self_attn.W" in dropped
    assert "classifier.fc_expand.1.bias" in dropped
    assert list(loaded.state_dict()) == list(teacher.state_dict())
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, full[key])


def test_teacher_checkpoint_file_with_dead_params(tmp_path: pathlib.Path) -> None:
    teacher, full = _teacher_with_dead("vit_digits_teacher")
    assert len(full) == 62
    path = tmp_path / "teacher.pth.tar"
    torch.save(_timm_dict(full, "vit_digits_teacher"), path)
    loaded, meta = load_checkpoint(path)
    assert len(meta.dropped_keys) == 62 - 30 and meta.arch == "vit_digits_teacher"
    assert _same_logits(teacher, loaded)


def test_teacher_dead_param_wrong_shape_rejected() -> None:
    _, full = _teacher_with_dead("vit_digits_teacher")
    full["classifier.blocks.1.self_attn.kernel_s"] = torch.zeros(3, 1, 3, 3)
    with pytest.raises(CheckpointError, match=r"'classifier.blocks.1.self_attn.kernel_s' has "
                                              r"shape \(3, 1, 3, 3\), expected \(4, 1, 3, 3\)"):
        model_from_state_dict(full, "vit_digits_teacher")


def test_dead_teacher_key_in_student_rejected() -> None:
    sd = _digits_model().state_dict()
    sd["classifier.blocks.0.self_attn.kernel_o"] = torch.zeros(1, 1, 3, 3)
    with pytest.raises(CheckpointError, match="unexpected key.*kernel_o"):
        model_from_state_dict(sd, "vit_digits")


def test_dead_teacher_keys_count_schema_only() -> None:
    specs = describe_keys(MODEL_CONFIGS["vit_9_12_64_teacher"], include_dead=True)
    assert len(specs) == 237 and count_elements(specs) == 24_999_085


# ------------------------------------------------------- strict state_dict

def _corrupt(kind: str) -> tuple[dict, str]:
    sd = dict(_digits_model().state_dict())
    if kind == "missing":
        del sd["classifier.norm.bias"]
        return sd, "missing key for vit_digits: 'classifier.norm.bias'"
    if kind == "unexpected":
        sd["classifier.head.weight"] = torch.zeros(3)
        return sd, "unexpected key for vit_digits: 'classifier.head.weight'"
    if kind == "shape":
        sd["classifier.blocks.1.self_attn.qkv.weight"] = torch.zeros(96, 33)
        return sd, (r"'classifier.blocks.1.self_attn.qkv.weight' has shape \(96, 33\), "
                    r"expected \(96, 32\)")
    if kind == "alpha":
        alpha = torch.tensor([1.0, 0.5, 0.0, 1.0]).reshape(1, 4, 1, 1)
        sd["classifier.blocks.0.self_attn.alpha"] = alpha
        return sd, r"'classifier.blocks.0.self_attn.alpha' must hold only 0 or 1, found \[0.5\]"
    if kind == "nan":
        sd["classifier.blocks.1.linear1.weight"] = sd["classifier.blocks.1.linear1.weight"].clone()
        sd["classifier.blocks.1.linear1.weight"][3, 4] = float("nan")
        return sd, "'classifier.blocks.1.linear1.weight' contains NaN or Inf"
    if kind == "dtype":
        sd["classifier.fc.bias"] = sd["classifier.fc.bias"].double()
        return sd, "'classifier.fc.bias' has dtype torch.float64"
    if kind == "module_prefix":
        return {"module." + k: v for k, v in sd.items()}, "'module.' \\(DataParallel\\) prefix"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "unexpected", "shape", "alpha", "nan", "dtype",
                                  "module_prefix"])
def test_strict_loading_errors(tmp_path: pathlib.Path, kind: str) -> None:
    sd, message = _corrupt(kind)
    path = tmp_path / f"{kind}.pth.tar"
    torch.save(_timm_dict(sd, "vit_digits"), path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_arch(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "x.pth.tar"
    torch.save(_timm_dict(_digits_model().state_dict(), "vit_13_37"), path)
    with pytest.raises(CheckpointError, match="unknown arch 'vit_13_37'"):
        load_checkpoint(path)


# ------------------------------------------------------------- bad files

def test_truncated_file(tmp_path: pathlib.Path) -> None:
    good = tmp_path / "good.pth.tar"
    save_checkpoint(good, _digits_model())
    bad = tmp_path / "truncated.pth.tar"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{bad}: not a torch checkpoint"):
        load_checkpoint(bad)


@pytest.mark.parametrize("content", [b"", b"definitely not a checkpoint" * 20,
                                     pickle.dumps({"state_dict": {}})])
def test_garbage_file(tmp_path: pathlib.Path, content: bytes) -> None:
    path = tmp_path / "garbage.pth.tar"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path}: not a torch checkpoint"):
        load_checkpoint(path)


def test_missing_file_and_wrong_container(tmp_path: pathlib.Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pth.tar")
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="not an MPCViT checkpoint.*got list"):
        load_checkpoint(path)


# ------------------------------------------------------ safe unpickling

def test_namespace_is_the_only_allow_listed_class(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.pth.tar"
    save_checkpoint(path, _digits_model())
    with pytest.raises(pickle.UnpicklingError):  # why the allow-list is needed
        torch.load(path, weights_only=True)
    load_checkpoint(path)
    evil = tmp_path / "evil.pth.tar"
    args = argparse.Namespace(output=pathlib.PurePosixPath("/tmp/x"))
    torch.save(_timm_dict(_digits_model().state_dict(), "vit_digits", args=args), evil)
    with pytest.raises(CheckpointError, match="refuses to unpickle pathlib.PurePosixPath"):
        load_checkpoint(evil)


def test_weights_only_false_never_used(tmp_path: pathlib.Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tree = ast.parse(inspect.getsource(ckpt_module))
    weights_only = [kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                    for kw in node.keywords if kw.arg == "weights_only"]
    assert weights_only and all(isinstance(v, ast.Constant) and v.value is True
                                for v in weights_only)
    calls: list[dict] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    path = tmp_path / "m.pth.tar"
    save_checkpoint(path, _digits_model())
    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(path)
    assert calls and all(c.get("weights_only") is True for c in calls)


# ----------------------------------------------------------- save errors

def test_save_rejects_bad_requests(tmp_path: pathlib.Path) -> None:
    model = _digits_model()
    with pytest.raises(ValueError, match="does not match arch 'vit_7_4_32'"):
        save_checkpoint(tmp_path / "a.pth.tar", model, arch="vit_7_4_32")
    with pytest.raises(ValueError, match="extra may not set"):
        save_checkpoint(tmp_path / "b.pth.tar", model, extra={"version": 3})
    with pytest.raises(ValueError, match="would not load safely"):
        save_checkpoint(tmp_path / "c.pth.tar", model,
                        extra={"args": argparse.Namespace(p=pathlib.PurePosixPath("/x"))})
    assert list(tmp_path.iterdir()) == []


def test_docs_tables_match_schema() -> None:
    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "checkpoint_format.md"
    text = doc.read_text(encoding="utf-8")
    for config in documented_configs():
        assert "### " + format_key_table(config) in text, config
