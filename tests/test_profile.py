"""`privit profile` (measured per-head cost file) and `privit pareto` (the sweep's outputs),
with real private runs on vit_digits kept small."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from privit.launch.profile_commands import (
    ParetoPoint,
    pareto_command,
    profile_command,
    run_pareto,
    write_pareto_outputs,
)
from privit.models.search import load_cost_file


def test_profile_writes_a_loadable_cost_file(tmp_path: Path) -> None:
    out = tmp_path / "costs.json"
    result = CliRunner().invoke(profile_command, ["--model", "vit_digits", "--metric", "bytes",
                                                  "--out", str(out)])
    assert result.exit_code == 0, result.output
    obj = json.loads(out.read_text())
    assert obj["unit"] == "bytes" and obj["model"] == "vit_digits"
    costs = load_cost_file(out, depth=2, heads=4, model="vit_digits")
    assert costs.relu_softmax.shape == (2, 4) and costs.scale_attn.shape == (2, 4)
    assert bool((costs.scale_attn > 0).all())
    # ReLU-softmax costs more than ScaleAttn in every layer (its division alone sends bytes)
    assert bool((costs.relu_softmax > costs.scale_attn).all())
    assert "layer 0" in result.output


def test_profile_rejects_teacher_and_bad_model() -> None:
    runner = CliRunner()
    result = runner.invoke(profile_command, ["--model", "vit_digits_teacher"])
    assert result.exit_code != 0 and "teacher" in result.output
    result = runner.invoke(profile_command, ["--model", "no_such_model"])
    assert result.exit_code != 0


def _point(label: str, mu: float | None, wan: float, top1: float) -> ParetoPoint:
    return ParetoPoint(label, mu, f"{label}.pth.tar", top1, 4, 100.0, 100.0, 100.0, 1_000_000,
                       30, 0.1, wan, 0.0)


def test_write_pareto_outputs(tmp_path: Path) -> None:
    points = [_point("mu=0", 0.0, 1.0, 97.0), _point("mu=1", 1.0, 2.0, 96.5),
              _point("softmax teacher", None, 5.0, 98.0)]
    paths = write_pareto_outputs(points, tmp_path, {"epochs": 1})
    table = paths["md"].read_text().splitlines()
    assert table[0].startswith("| model | mu |") and len(table) == 2 + 3
    assert "| softmax teacher | - | 98.00 %" in table[-1]
    data = json.loads(paths["json"].read_text())
    assert data["meta"] == {"epochs": 1} and len(data["points"]) == 3
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_tiny_real_run_and_reuse(tmp_path: Path) -> None:
    """One epoch, mu in {0, 1} only, 2 images, no teacher: real retrain + private runs."""
    out = tmp_path / "pareto"
    points = run_pareto(mus=(1.0,), epochs=1, search_epochs=1, out_dir=str(out), images=2,
                        kd=False, echo=lambda _msg: None)
    assert [p.mu for p in points] == [0.0, 1.0]
    for p in points:
        assert 0.0 <= p.top1 <= 100.0 and p.images == 2
        assert p.bytes > 0 and p.rounds > 0 and 0 < p.lan_s < p.wan_s
        assert 0.0 <= p.agreement <= 100.0 and 0.0 <= p.plain_top1 <= 100.0
    # all ReLU-softmax costs more online than all ScaleAttn
    assert points[1].bytes > points[0].bytes and points[1].rounds > points[0].rounds
    for name in ("results.json", "results.md", "pareto.png", "vit_digits_mu0.pth.tar",
                 "vit_digits_mu1.pth.tar", "vit_digits_search.pth.tar"):
        assert (out / name).is_file(), name
    # a second call reuses the finished checkpoints (no training time spent)
    result = CliRunner().invoke(pareto_command, ["--mus", "1", "--epochs", "1", "--no-teacher",
                                                 "--searched", str(out / "vit_digits_search.pth.tar"),
                                                 "--images", "2", "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    again = json.loads((out / "results.json").read_text())["points"]
    assert [p["top1"] for p in again] == pytest.approx([p.top1 for p in points])
    assert all(p["train_s"] < 1.0 for p in again)


def test_pareto_rejects_bad_mus() -> None:
    result = CliRunner().invoke(pareto_command, ["--mus", "0.5,2"])
    assert result.exit_code != 0 and "mu" in result.output
