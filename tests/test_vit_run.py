"""`privit run` on the vit job with real processes: the default run (no arguments but the
outputs), its report schema and accuracy fields, the --plot / --save-logits files, an
images file with a teacher model, and usage errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

PRIVIT = [sys.executable, "-m", "privit.launch.cli"]


def run_cli(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(PRIVIT + args, capture_output=True, text=True, timeout=timeout)


def test_default_run_report_plot_and_logits(tmp_path: Path) -> None:
    report_path, plot, logits = tmp_path / "r.json", tmp_path / "cost.png", tmp_path / "l.pt"
    proc = run_cli(["run", "--json", str(report_path), "--plot", str(plot),
                    "--save-logits", str(logits)])
    assert proc.returncode == 0, proc.stderr
    assert "argmax agreement" in proc.stdout
    report = json.loads(report_path.read_text())
    assert report["job"]["name"] == "vit"
    acc = report["accuracy"]
    for key in ("max_abs_error", "parties_agree", "argmax_agreement", "max_abs_logit_error",
                "mpc_top1", "plain_top1", "images"):
        assert key in acc, key
    assert acc["parties_agree"] is True
    assert acc["images"] == 16
    # the command's own process: imports, the model and the plaintext reference
    assert 50 < report["total"]["launcher_peak_rss_mb"] < 2048
    assert report["offline"]["plan"]["source"] in ("traced", "cache")
    assert acc["argmax_agreement"] >= 0.9
    assert acc["max_abs_logit_error"] < 0.1
    assert 0.0 <= acc["mpc_top1"] <= 1.0 and 0.0 <= acc["plain_top1"] <= 1.0
    names = [s["name"] for s in report["scopes"]]
    for scope in ("weights", "input", "embed", "layer0", "layer0/attn", "layer0/mlp",
                  "layer1", "head", "output"):
        assert scope in names, scope
    top = [s for s in report["scopes"] if "/" not in s["name"]]
    assert sum(s["bytes"] for s in top) == report["online"]["bytes"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = torch.load(logits, weights_only=True)
    assert set(saved) == {"mpc_logits", "plain_logits", "labels"}
    assert saved["mpc_logits"].shape == saved["plain_logits"].shape == (16, 10)
    assert saved["labels"].shape == (16,)
    assert (saved["mpc_logits"] - saved["plain_logits"]).abs().max() == pytest.approx(
        acc["max_abs_logit_error"])


def test_images_file_and_teacher_model(tmp_path: Path) -> None:
    images = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "imgs.pt"
    torch.save(images, path)
    out = tmp_path / "r.json"
    proc = run_cli(["run", "--model", "vit_digits_teacher", "--images", str(path), "--batch", "2",
                    "--json", str(out)])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    acc = report["accuracy"]
    assert acc["images"] == 2 and "mpc_top1" not in acc      # no labels in the file
    assert acc["argmax_agreement"] == 1.0
    assert report["job"]["params"]["model"] == "vit_digits_teacher"


@pytest.mark.parametrize("args, message", [
    (["--job", "mlp", "--gelu", "poly"], "apply to the vit job only"),
    (["--relu", "sometimes"], "Invalid value"),
    (["--model", "vit_nope"], "unknown model"),
    (["--batch", "3", "--param", "batch=2"], "both as an option and as --param"),
])
def test_vit_usage_errors(args: list[str], message: str) -> None:
    proc = run_cli(["run", *args], timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
