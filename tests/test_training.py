"""Training, search, binarisation, retraining with KD, resume and the CLI (fast, tiny runs)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from privit.launch.train_commands import TRAIN_COMMANDS
from privit.models.checkpoint import CheckpointError, load_checkpoint
from privit.models.data import ImageDataset, load_digits
from privit.models.distill import distillation_terms, retrain
from privit.models.search import binarise, cost_penalty, load_cost_file, parse_costs, search
from privit.models.train import (
    TrainSettings,
    augment_batch,
    build_model,
    cross_entropy_loss,
    evaluate,
    fit,
    lr_factor,
    train_teacher,
)

FAST = {"lr": 3e-3, "batch": 16, "seed": 0, "progress": False, "warmup_epochs": 0}


@pytest.fixture(scope="module")
def tiny() -> ImageDataset:
    return load_digits().subset(96, 48)


# ---------------------------------------------------------------- binarise
def test_binarise_hand_example() -> None:
    alpha = [[0.9, 0.1, 0.5], [0.3, 0.7, 0.2]]          # ascending: .1 .2 .3 .5 .7 .9
    assert binarise(alpha, 0.5).tolist() == [[1, 0, 1], [0, 1, 0]]     # top 3: .9 .7 .5
    assert binarise(alpha, 1 / 3).tolist() == [[1, 0, 0], [0, 1, 0]]   # top 2: .9 .7
    assert binarise(alpha, 0.0).tolist() == [[0, 0, 0], [0, 0, 0]]
    assert binarise(alpha, 1.0).tolist() == [[1, 1, 1], [1, 1, 1]]


def test_binarise_ties_and_rounding() -> None:
    # Clamped alphas tie at 1.0: the stable sort keeps the later (layer-major) heads.
    alpha = [[1.0, 1.0, 0.4], [1.0, 0.4, 1.0]]
    assert binarise(alpha, 0.5).tolist() == [[0, 1, 0], [1, 0, 1]]
    assert binarise(np.zeros((2, 2)), 0.5).tolist() == [[0, 0], [1, 1]]
    # MPCViT's float rounding: int((1 - 0.9) * 10) = int(0.999...) = 0 -> all 10 kept.
    assert int(binarise(np.arange(10.0).reshape(2, 5), 0.9).sum()) == 10
    assert int(binarise(np.arange(10.0).reshape(2, 5), 0.7).sum()) == 7


def test_binarise_matches_argsort_rule_and_validates() -> None:
    rng = np.random.default_rng(3)
    for layers, heads, mu in [(7, 4, 0.5), (9, 12, 0.5), (2, 4, 0.25), (3, 5, 0.8)]:
        alpha = rng.random((layers, heads)).astype(np.float32)
        flat = alpha.reshape(-1)
        want = np.zeros_like(flat)
        want[np.argsort(flat)[int((1 - mu) * flat.size):]] = 1
        assert binarise(alpha, mu).numpy().reshape(-1).tolist() == want.tolist()
    with pytest.raises(ValueError, match="mu"):
        binarise([[0.5]], 1.5)
    with pytest.raises(ValueError, match="shape"):
        binarise([0.5, 0.2], 0.5)


# ---------------------------------------------------------- pieces of fit
def test_schedule_and_augmentation() -> None:
    assert lr_factor(0, 100, 10, 0.01) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, 0.01) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, 0.01) == pytest.approx(0.01)
    images = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    out = augment_batch(images, 1, False, torch.full((1, 1, 1), -1.0),
                        torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    for img, src in zip(out, images, strict=True):
        # every shifted image is a crop of the padded original
        padded = torch.nn.functional.pad(src, (1, 1, 1, 1), value=-1.0)
        assert any(torch.equal(img, padded[:, y:y + 4, x:x + 4])
                   for y in range(3) for x in range(3))


# ------------------------------------------------------------- training
def test_one_epoch_teacher_writes_loadable_checkpoint(tiny: ImageDataset, tmp_path: Path) -> None:
    out = tmp_path / "teacher.pth.tar"
    model, result = train_teacher("vit_digits_teacher", tiny, epochs=1, out_path=out, **FAST)
    loaded, meta = load_checkpoint(out)
    assert meta.arch == "vit_digits_teacher" and meta.epoch == 1
    assert meta.metric == pytest.approx(result.top1)
    assert evaluate(loaded, tiny) == pytest.approx(result.top1)
    assert 0 <= result.top1 <= 100 and len(result.history) == 1


def test_resume_continues_exactly(tiny: ImageDataset, tmp_path: Path) -> None:
    settings = TrainSettings(epochs=2, lr=3e-3, batch=16, warmup_epochs=0)
    steps = len(tiny.train) // settings.batch

    def run(path: Path, stop_after: int | None = None) -> torch.nn.Module:
        model = build_model("vit_digits_teacher", tiny)
        count = 0

        def after(_: object) -> None:
            nonlocal count
            count += 1
            if stop_after is not None and count == stop_after:
                raise KeyboardInterrupt

        fit(model, tiny, settings, path, loss_fn=cross_entropy_loss(), after_step=after,
            identity={"mode": "teacher"}, progress=False)
        return model

    straight = run(tmp_path / "a.pth.tar")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.pth.tar", stop_after=steps + 2)     # dies inside epoch 2
    assert load_checkpoint(tmp_path / "b.pth.tar")[1].epoch == 1
    resumed = run(tmp_path / "b.pth.tar")
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    # a finished run only re-evaluates
    _, again = train_teacher("vit_digits_teacher", tiny, epochs=2, out_path=tmp_path / "b.pth.tar",
                             **{**FAST, "warmup_epochs": 0})
    assert again.start_epoch == 2 and len(again.history) == 2
    with pytest.raises(CheckpointError, match="mode"):
        search("vit_digits", tiny, epochs=1, out_path=tmp_path / "b.pth.tar", **FAST)


# --------------------------------------------------------------- search
def test_search_gives_continuous_alpha_in_unit_interval(tiny: ImageDataset,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "search.pth.tar"
    model, _ = search("vit_digits", tiny, epochs=1, out_path=out, lambda_alpha=1e-2, **FAST)
    alpha = model.get_alpha()
    assert alpha.shape == (2, 4)
    assert bool(((alpha >= 0) & (alpha <= 1)).all())
    assert bool(((alpha > 0) & (alpha < 1)).any())
    with pytest.raises(CheckpointError, match="search"):
        load_checkpoint(out)
    loaded, _ = load_checkpoint(out, search=True)
    assert torch.equal(loaded.get_alpha(), alpha)


def test_cost_file_formats(tmp_path: Path) -> None:
    costs = parse_costs({"relu_softmax": [4.0, [1, 2, 3, 4]], "scale_attn": 1, "unit": "bytes"},
                        2, 4)
    assert costs.relu_softmax.tolist() == [[4, 4, 4, 4], [1, 2, 3, 4]]
    assert costs.scale == 4.0 and costs.unit == "bytes"
    alpha = torch.full((2, 4), 0.5, requires_grad=True)
    cost_penalty(alpha, costs).backward()
    assert alpha.grad is not None and float(alpha.grad[0, 0]) == pytest.approx(3 / 4)
    path = tmp_path / "costs.json"
    path.write_text(json.dumps({"relu_softmax": 2.0, "scale_attn": 1.0, "model": "vit_digits"}))
    assert load_cost_file(path, 2, 4, "vit_digits").scale == 2.0
    for bad, pattern in [({"relu_softmax": 1}, "missing"), ({"relu_softmx": 1}, "unknown keys"),
                         ({"relu_softmax": -1, "scale_attn": 0}, ">= 0"),
                         ({"relu_softmax": [1, 2, 3], "scale_attn": 0}, "2 per-layer"),
                         ({"relu_softmax": 0, "scale_attn": 0}, "all costs are zero")]:
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=pattern):
            load_cost_file(path, 2, 4)


def test_search_with_cost_term_pushes_expensive_layer_down(tiny: ImageDataset,
                                                           tmp_path: Path) -> None:
    costs = tmp_path / "costs.json"
    costs.write_text(json.dumps({"relu_softmax": [100.0, 0.0], "scale_attn": 0.0}))
    model, _ = search("vit_digits", tiny, epochs=1, out_path=tmp_path / "s.pth.tar",
                      cost_file=costs, gamma=1.0, **FAST)
    alpha = model.get_alpha()
    assert float(alpha[0].mean()) < float(alpha[1].mean())


# -------------------------------------------------------------- retrain
def test_distillation_terms_are_finite() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(8, 10) * 30, torch.randn(8, 10) * 30
    tokens = torch.randn(8, 17, 32)
    terms = distillation_terms(s, t, torch.arange(8), temperature=4.0,
                               student_tokens=tokens, teacher_tokens=tokens + 1)
    assert all(bool(torch.isfinite(v)) for v in terms.values())
    assert float(terms["kl"]) > 0 and float(terms["token_mse"]) == pytest.approx(1.0)
    same = distillation_terms(s, s, torch.arange(8), temperature=2.0)
    assert float(same["kl"]) == pytest.approx(0.0, abs=1e-5)
    assert float(same["token_mse"]) == 0.0


def test_retrain_with_kd_gives_binary_alpha(tiny: ImageDataset, tmp_path: Path) -> None:
    searched, _ = search("vit_digits", tiny, epochs=1, out_path=tmp_path / "s.pth.tar", **FAST)
    train_teacher("vit_digits_teacher", tiny, epochs=1, out_path=tmp_path / "t.pth.tar", **FAST)
    out = tmp_path / "mu.pth.tar"
    model, result = retrain("vit_digits", tiny, tmp_path / "s.pth.tar", 0.5, epochs=1,
                            out_path=out, teacher_path=tmp_path / "t.pth.tar",
                            token_mse_weight=1.0, **FAST)
    assert torch.isfinite(torch.tensor(result.history[0]["loss"]))
    alpha = model.get_alpha()
    assert int(alpha.sum()) == 4 and torch.equal(alpha, binarise(searched.get_alpha(), 0.5))
    loaded, meta = load_checkpoint(out)                  # strict: binary alpha required
    assert torch.equal(loaded.get_alpha(), alpha) and meta.arch == "vit_digits"
    assert vars(meta.args)["mu"] == 0.5


def test_mpcvit_plus_linear_gelu(tiny: ImageDataset, tmp_path: Path) -> None:
    search("vit_digits", tiny, epochs=1, out_path=tmp_path / "s.pth.tar", linear_gelu=True,
           lambda_alpha=1e-2, **FAST)
    with pytest.raises(ValueError, match="linear_gelu"):
        retrain("vit_digits", tiny, build_model("vit_digits", tiny), 0.5, epochs=1,
                out_path=tmp_path / "x.pth.tar", linear_gelu=True, **FAST)
    model, _ = retrain("vit_digits", tiny, tmp_path / "s.pth.tar", 0.25, epochs=1,
                       out_path=tmp_path / "r.pth.tar", linear_gelu=True, beta_keep=0.5, **FAST)
    betas = torch.stack([b.beta.reshape(-1) for b in model.blocks])
    assert betas.shape == (2, 17) and int(betas.sum()) == 17 and int(model.get_alpha().sum()) == 2
    loaded, meta = load_checkpoint(tmp_path / "r.pth.tar")
    assert meta.config.linear_gelu


# ------------------------------------------------------------------ CLI
def _cli() -> click.Group:
    group = click.Group("privit")
    for command in TRAIN_COMMANDS:
        group.add_command(command)
    return group


def test_cli_pipeline_and_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(_cli(), ["pipeline", "--teacher-epochs", "1", "--search-epochs", "1",
                                    "--epochs", "1", "--batch", "64", "--out", str(out),
                                    "--quiet", "--threads", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert sum(map(sum, summary["retrain"]["alpha"])) == 4
    for name in ("vit_digits_teacher", "vit_digits_search", "vit_digits_mu0.5"):
        assert (out / f"{name}.pth.tar").is_file()
    missing = runner.invoke(_cli(), ["train", "--dataset", "cifar10", "--data-dir",
                                     str(tmp_path / "nope")])
    assert missing.exit_code != 0 and "no such dataset directory" in missing.output
    no_teacher = runner.invoke(_cli(), ["retrain", "--searched", "x", "--kd"])
    assert no_teacher.exit_code != 0 and "--kd needs --teacher" in no_teacher.output
