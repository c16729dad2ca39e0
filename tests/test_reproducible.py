"""`privit pipeline --seed S` is reproducible bit for bit, and checkpoints say how they were made.

The pipeline test runs short pipelines (1 epoch per stage) as separate OS processes, as a
user would run the command twice, and compares every tensor of every checkpoint.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from privit.models.checkpoint import load_checkpoint, read_checkpoint_file, save_checkpoint
from privit.models.data import load_digits
from privit.models.provenance import PROVENANCE_KEY, make_provenance
from privit.models.train import build_model

ASSETS = Path(__file__).resolve().parents[1] / "models" / "assets"
STAGES = ("vit_digits_teacher", "vit_digits_search", "vit_digits_mu0.5")
SHORT = ["--teacher-epochs", "1", "--search-epochs", "1", "--epochs", "1", "--batch", "64",
         "--quiet"]


def _pipelines(tmp_path: Path, seeds: dict[str, int]) -> dict[str, Path]:
    """Run one short pipeline per name, side by side, each in its own process."""
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "privit.launch.cli", "pipeline", *SHORT, "--seed", str(seed),
         "--out", name], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True) for name, seed in seeds.items()}
    for name, proc in procs.items():
        try:
            output, _ = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, f"{name}: {output}"
        assert f"wrote {name}/summary.json" in output
    return {name: tmp_path / name for name in seeds}


def test_pipeline_run_twice_gives_identical_weights(tmp_path: Path) -> None:
    runs = _pipelines(tmp_path, {"a": 0, "b": 0})
    data = load_digits()
    for stage in STAGES:
        a = read_checkpoint_file(runs["a"] / f"{stage}.pth.tar")
        b = read_checkpoint_file(runs["b"] / f"{stage}.pth.tar")
        assert list(a["state_dict"]) == list(b["state_dict"])
        for key, tensor in a["state_dict"].items():
            assert tensor.dtype == torch.float32
            assert torch.equal(tensor, b["state_dict"][key]), f"{stage}: {key} differs"
        # What is compared is trained: the seeded initialisation has other weights.
        init = build_model(a["arch"], data, seed=0).state_dict()
        assert not torch.equal(a["state_dict"]["classifier.fc.weight"],
                               init["classifier.fc.weight"])
        provenance = a[PROVENANCE_KEY]
        assert provenance["command"] == "privit pipeline --epochs 1 --batch 64 --seed 0 " \
                                        "--quiet --teacher-epochs 1 --search-epochs 1 --out a"
        assert provenance["seed"] == 0 and provenance["threads"] == 1
        assert provenance["deterministic"] is True
        assert provenance["options"]["mu"] == 0.5 and provenance["options"]["kd"] is True
        assert provenance == {**b[PROVENANCE_KEY], "command": provenance["command"],
                              "options": {**b[PROVENANCE_KEY]["options"], "out": "a"}}


def test_shipped_models_record_the_command_that_rebuilds_them() -> None:
    for name in ("vit_digits_teacher", "vit_digits_mu0.5"):
        _, meta = load_checkpoint(ASSETS / f"{name}.pth.tar")
        assert meta.provenance is not None, name
        assert meta.provenance["command"] == "privit pipeline --seed 0 --quiet"
        assert meta.provenance["seed"] == 0 and meta.provenance["threads"] == 1
        assert meta.provenance["deterministic"] is True
        assert set(meta.provenance["versions"]) == {"privit", "torch", "numpy", "python"}
        assert PROVENANCE_KEY not in meta.other_keys


def test_provenance_is_a_known_entry_of_the_loader(tmp_path: Path) -> None:
    model = build_model("vit_digits", load_digits().subset(8, 8), seed=0)
    provenance = make_provenance("privit train --seed 3", {"seed": 3, "out": None}, seed=3,
                                 threads=1, deterministic=True)
    path = tmp_path / "m.pth.tar"
    save_checkpoint(path, model, extra={PROVENANCE_KEY: provenance, "amp_scaler": {}})
    _, meta = load_checkpoint(path)
    assert meta.provenance == provenance
    assert meta.other_keys == ("amp_scaler",)
    save_checkpoint(path, model)
    assert load_checkpoint(path)[1].provenance is None
