"""Each role holds only its own secret, checked on real, separate `privit` processes.

Party 0 loads the model, party 1 the images, the dealer neither; an audit hook inside each
role process records every file it opens, so "party 1 never opens a checkpoint" is
observed, not inferred from the code.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from mp_harness import error_lines, finish_popens, track_popen

from privit.launch.vit_job import default_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PRIVIT = [sys.executable, "-m", "privit.launch.cli"]

# Runs `privit` with an audit hook that appends every path the process opens to a log.
AUDITED = r'''
import os, sys
log = open(sys.argv[1], "a")
def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        log.write(os.fsdecode(args[0]) + "\n")
        log.flush()
sys.addaudithook(hook)
sys.argv = ["privit"] + sys.argv[2:]
from privit.launch.cli import run_cli
run_cli()
'''


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _cluster_folders(tmp: Path) -> dict[str, Path]:
    """`privit cluster init`, then one folder per role holding the cluster file and only
    its own key."""
    subprocess.run(PRIVIT + ["cluster", "init", "--out", str(tmp / "cl")], check=True,
                   capture_output=True, timeout=60)
    folders = {}
    for name, key in (("p0", "party0"), ("p1", "party1"), ("dealer", "dealer")):
        folder = tmp / name
        folder.mkdir()
        shutil.copy(tmp / "cl" / "cluster.json", folder)
        shutil.copy(tmp / "cl" / f"{key}.key", folder)
        os.chmod(folder / f"{key}.key", 0o600)
        folders[name] = folder
    return folders


def _start(folder: Path, args: list[str], audit: Path | None = None) -> subprocess.Popen[str]:
    cmd = ([sys.executable, "-c", AUDITED, str(audit)] if audit else PRIVIT) + args
    return track_popen(subprocess.Popen(cmd, cwd=folder, env=_env(), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True))


def _finish(procs: dict[str, subprocess.Popen[str]], timeout: float = 180) -> dict[str, tuple[int, str]]:
    return finish_popens(procs, timeout)


def _role_args(name: str, extra: dict[str, list[str]] | None = None) -> list[str]:
    head = {"p0": ["party", "--id", "0", "--key", "party0.key"],
            "p1": ["party", "--id", "1", "--key", "party1.key"],
            "dealer": ["dealer", "--key", "dealer.key"]}[name]
    return head + ["--cluster", "cluster.json", "--json", f"{name}.json", "--timeout", "60",
                   *(extra or {}).get(name, [])]


def _numbers(obj: Any) -> set[float]:
    if isinstance(obj, bool):
        return set()
    if isinstance(obj, (int, float)):
        return {float(obj)}
    if isinstance(obj, dict):
        return set().union(*(_numbers(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(_numbers(v) for v in obj)) if obj else set()
    return set()


def test_each_role_opens_only_its_own_files(tmp_path: Path) -> None:
    """Three separate commands in three folders; only party 0's folder holds the model.
    Party 1 and the dealer open no checkpoint (audit hook), party 1's report holds no
    weight, and the logits are those of `privit run` on the same checkpoint."""
    source = default_checkpoint()
    assert source is not None, "the package ships no model"
    folders = _cluster_folders(tmp_path)
    shutil.copy(source, folders["p0"] / "model.pth.tar")
    audits = {name: tmp_path / f"audit-{name}.txt" for name in folders}
    extra = {"p0": ["--checkpoint", "model.pth.tar"]}
    procs = {name: _start(folders[name], _role_args(name, extra), audits[name]) for name in folders}
    results = _finish(procs)
    assert all(code == 0 for code, _ in results.values()), results

    opened = {name: audits[name].read_text().splitlines() for name in folders}
    for name in ("p1", "dealer"):
        checkpoints = [p for p in opened[name] if p.endswith((".pth.tar", ".pth", ".pt.tar"))]
        assert not checkpoints, f"{name} opened {checkpoints}"
    assert any(p.endswith("model.pth.tar") for p in opened["p0"]), "party 0 never read its model"

    p0 = json.loads((folders["p0"] / "p0.json").read_text())
    p1 = json.loads((folders["p1"] / "p1.json").read_text())
    dealer = json.loads((folders["dealer"] / "dealer.json").read_text())
    assert p0["arch_hash"] == p1["arch_hash"] == dealer["arch_hash"]
    assert len(p0["checkpoint_sha256"]) == 64
    assert "checkpoint_sha256" not in p1 and "checkpoint_sha256" not in dealer

    state = torch.load(source, map_location="cpu", weights_only=False)["state_dict"]
    weights = {float(v) for t in state.values() for v in t.flatten().tolist()} - {0.0, 1.0}
    leaked = _numbers(p1) & weights
    assert not leaked, f"party 1's report holds weight values: {sorted(leaked)[:5]}"

    logits = torch.tensor(p0["outputs"]["logits"]["data"]).reshape(p0["outputs"]["logits"]["shape"])
    saved = tmp_path / "run_logits.pt"
    run = subprocess.run(PRIVIT + ["run", "--checkpoint", str(source), "--save-logits", str(saved)],
                         capture_output=True, text=True, timeout=180, env=_env())
    assert run.returncode == 0, run.stderr
    ref = torch.load(saved, weights_only=True)
    assert logits.shape == ref["mpc_logits"].shape
    assert (logits - ref["plain_logits"]).abs().max() < 0.05
    assert torch.equal(logits.argmax(-1), ref["mpc_logits"].argmax(-1))


def test_architecture_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    """Party 1 pins vit_7_4_32's architecture; party 0 runs the digits model: party 1
    refuses it in one line naming both, and no role exits 0."""
    folders = _cluster_folders(tmp_path)
    arch = tmp_path / "arch.json"
    made = subprocess.run(PRIVIT + ["arch", "--model", "vit_7_4_32", "--out", str(arch)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    extra = {"p1": ["--arch", str(arch)]}
    results = _finish({name: _start(folders[name], _role_args(name, extra)) for name in folders})
    assert all(code != 0 for code, _ in results.values()), results
    err = results["p1"][1].strip()
    assert "architecture mismatch" in err and "vit_digits" in err and "vit_7_4_32" in err, err
    assert len(error_lines(err)) == 1, err


@pytest.mark.parametrize(("args", "message"), [
    (["party", "--id", "1", "--checkpoint", "{model}"], "party 1 must not hold the weights"),
    (["party", "--id", "0", "--images", "{model}"], "party 0 must not hold the images"),
    (["dealer", "--checkpoint", "{model}"], "No such option"),  # click's words vary by version
    (["dealer", "--images", "{model}"], "No such option"),
    (["run", "--parties", "3"], "exactly 2 parties"),
    (["party", "--id", "0", "--parties", "3"], "exactly 2 parties"),
    (["party", "--id", "0"], "needs --key FILE"),
])
def test_role_options_are_checked_before_anything_starts(tmp_path: Path, args: list[str],
                                                         message: str) -> None:
    model = tmp_path / "model.pth.tar"
    model.write_bytes(b"not read")
    cluster = tmp_path / "cluster.json"
    cluster.write_text('{"parties": [{"host": "127.0.0.1", "port": 1}, '
                       '{"host": "127.0.0.1", "port": 2}], "dealer": {"host": "127.0.0.1", "port": 3}}')
    args = [a.format(model=model) for a in args]
    if args[0] in ("party", "dealer"):
        args += ["--cluster", str(cluster)]
    proc = subprocess.run(PRIVIT + args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert all(flag in proc.stderr for flag in args if flag in ("--checkpoint", "--images")) \
        or "party" in message, proc.stderr
    # The check came from the command line alone: torch was never imported.
    probe = subprocess.run([sys.executable, "-X", "importtime", "-m", "privit.launch.cli", *args],
                           capture_output=True, text=True, timeout=60)
    assert not re.search(r"\| +torch$", probe.stderr, re.MULTILINE), "torch imported before the check"


def test_readme_across_machines_example_runs_as_written(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    marker = text.index("<!-- across-machines-example")
    block = re.search(r"```bash\n(.*?)```", text[marker:], re.DOTALL)
    assert block is not None, "the README lost its across-machines example"
    proc = subprocess.run(["bash", "-e", "-c", block.group(1)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["security"]["channels"] == "curve"
    assert report["model"] == "vit_digits" and report["accuracy"]["argmax_agreement"] == 1.0


def test_privit_arch_prints_and_writes_the_public_architecture(tmp_path: Path) -> None:
    out = tmp_path / "arch.json"
    proc = subprocess.run(PRIVIT + ["arch", "--out", str(out)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert set(data) == {"arch", "arch_hash"} and data["arch_hash"] in proc.stdout
    assert set(data["arch"]) == {"config", "modes", "betas"}
    assert data["arch"]["config"]["name"] == "vit_digits"
