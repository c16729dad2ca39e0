"""Preprocessed dealer material (parties/material.py): written by a preprocess run, read by
a later online run in place of the dealer. The online run equals a streamed run (results,
online bytes and rounds); material is refused when reused, from another config, another
party's, truncated, corrupt, or mixed from two preprocess runs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from privit.launch.job_registry import make_job
from privit.parties.config import JobSpec, RunConfig
from privit.parties.counters import Counters
from privit.parties.inmemory_run import InMemoryRun, run_in_memory_detailed
from privit.parties.lifecycle import barrier
from privit.parties.material import MaterialError, MaterialFile
from privit.parties.memory import MemoryChannel, MemoryHub
from privit.protocols.registry import CORRELATIONS

PRIVIT = [sys.executable, "-m", "privit.launch.cli"]
MLP = RunConfig(n_parties=2, seed=3, timeout_s=60, job=JobSpec.make("mlp"))
VIT = RunConfig(n_parties=2, seed=0, timeout_s=120, job=JobSpec.make("vit", batch=1))
SEEDS = b"same randomness"


def _online(run: InMemoryRun[Any]) -> list[tuple[int, int]]:
    return [(r["phases"]["online"]["bytes"], r["phases"]["online"]["rounds"]) for r in run.reports]


def _files(folder: Path, n: int = 2) -> list[Path]:
    return [folder / f"party-{p}.material" for p in range(n)]


def _preprocess(cfg: RunConfig, folder: Path) -> list[Path]:
    paths = _files(folder)
    run_in_memory_detailed(cfg, make_job(cfg).run, CORRELATIONS, seed_source=SEEDS, record=paths)
    return paths


@pytest.mark.parametrize("cfg", [MLP, VIT], ids=["mlp", "vit"])
def test_preprocess_then_online_equals_one_run(cfg: RunConfig, tmp_path: Path) -> None:
    job = make_job(cfg)
    whole = run_in_memory_detailed(cfg, job.run, CORRELATIONS, seed_source=SEEDS)
    paths = _preprocess(cfg, tmp_path)
    assert [p.stat().st_mode & 0o777 for p in paths] == [0o600, 0o600]  # they hold seeds
    headers = [MaterialFile.open(p, CORRELATIONS) for p in paths]
    assert headers[0].header.material_id == headers[1].header.material_id
    assert [h.trailer["payload_bytes"] for h in headers] == [s["payload_bytes"] for s in whole.streams]
    assert [h.trailer["requests"] for h in headers] == [len(whole.plan)] * 2
    for h in headers:
        h.close()
    online = run_in_memory_detailed(cfg, job.run, CORRELATIONS, seed_source=SEEDS, material=paths)
    for a, b in zip(whole.results, online.results, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), name
    assert _online(online) == _online(whole)
    assert [s["payload_bytes"] for s in online.streams] == [s["payload_bytes"] for s in whole.streams]
    # No dealer: nothing was sent in the offline phase.
    assert [r["phases"]["offline"]["bytes"] for r in online.reports] == [0, 0]
    # Used once: the file is renamed, emptied, and a second run is refused.
    assert [p.exists() for p in paths] == [False, False]
    assert [p.with_name(p.name + ".used").stat().st_size for p in paths] == [0, 0]
    with pytest.raises(Exception, match=r"party-[01].material was already used .* single-use"):
        run_in_memory_detailed(cfg, job.run, CORRELATIONS, material=paths)
    # nor can the claimed file itself be given (it keeps its contents if its run is killed)
    with pytest.raises(MaterialError, match=r"party-0.material.used is used up"):
        MaterialFile.open(paths[0].with_name(paths[0].name + ".used"), CORRELATIONS)


def test_material_from_another_config_is_refused(tmp_path: Path) -> None:
    paths = _preprocess(MLP, tmp_path)
    other = RunConfig(n_parties=2, seed=3, frac_bits=14, timeout_s=60, job=JobSpec.make("mlp"))
    material = MaterialFile.open(paths[0], CORRELATIONS)
    with pytest.raises(MaterialError, match=r"preprocessed for another config: frac_bits is "
                                            r"16 there, 14 here"):
        material.check(other, 0)
    with pytest.raises(MaterialError, match=r"party-0.material is party 0's, not party 1's"):
        material.check(MLP, 1)
    material.close()
    assert paths[0].exists()  # refused before any use: not claimed


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_file_is_refused(tmp_path: Path, damage: str) -> None:
    path = _preprocess(MLP, tmp_path)[0]
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[len(data) // 2:]
        expected = "no end marker"
    else:
        data[len(data) // 2] ^= 1
        expected = "digest does not match"
    path.write_bytes(bytes(data))
    with pytest.raises(MaterialError, match=f"is not a valid material file: .*{expected}"):
        MaterialFile.open(path, CORRELATIONS)


def test_parties_refuse_material_of_two_preprocess_runs() -> None:
    hub = MemoryHub([0, 1, 2])
    channels = [MemoryChannel(hub, p, [q for q in range(3) if q != p], Counters(), timeout_s=5.0)
                for p in range(2)]
    channels[1].send(0, "data", "barrier", meta={"material_id": "b" * 32})
    with pytest.raises(MaterialError, match="party 1's material is not from the same "
                                            "preprocess run as party 0's"):
        barrier(channels[0], MLP, 0, "a" * 32)


def _privit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(PRIVIT + list(args), capture_output=True, text=True, timeout=300)


def _report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def test_processes_preprocess_then_run(tmp_path: Path) -> None:
    """Real processes, the default vit job: `privit preprocess` then `privit run
    --material` gives the online bytes and rounds of one streamed `privit run` (the same
    config), reads from disk what the dealer would have sent, starts no dealer, and uses
    the material up. (The in-memory test above also pins the logits, for mlp and vit.)"""
    job = ["--batch", "1"]
    streamed = tmp_path / "streamed.json"
    assert _privit("run", *job, "--insecure", "--json", str(streamed)).returncode == 0
    out, summary = tmp_path / "material", tmp_path / "summary.json"
    proc = _privit("preprocess", *job, "--insecure", "--out", str(out), "--json", str(summary))
    assert proc.returncode == 0, proc.stderr
    online = tmp_path / "online.json"
    proc = _privit("run", *job, "--insecure", "--material", str(out), "--json", str(online))
    assert proc.returncode == 0, proc.stderr
    assert "read from disk" in proc.stdout
    whole, done, pre = _report(streamed), _report(online), _report(summary)
    assert [(p["online_bytes"], p["online_rounds"]) for p in done["per_party"]] == \
        [(p["online_bytes"], p["online_rounds"]) for p in whole["per_party"] if p["role"] != "dealer"]
    assert [p["role"] for p in done["per_party"]] == ["party 0", "party 1"]  # no dealer
    payload = [p["stream"]["payload_bytes"] for p in whole["per_party"] if p["role"] != "dealer"]
    assert [p["payload_bytes"] for p in pre["parties"]] == payload
    assert done["offline"]["source"] == "disk"
    assert done["offline"]["bytes"] == 0
    assert done["offline"]["from_disk_bytes"] == sum(payload)
    assert done["offline"]["material_id"] == pre["material_id"]
    assert done["offline"]["requests"] == whole["offline"]["requests"]
    assert done["accuracy"]["parties_agree"]
    assert done["accuracy"]["max_abs_error"] < 0.05
    assert done["total"]["offline_s"] > 0 and done["total"]["online_s"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["party-0.material.used", "party-1.material.used"]
    again = _privit("run", *job, "--insecure", "--material", str(out))
    assert again.returncode != 0
    assert "party-0.material was already used" in again.stderr


def test_processes_refuse_material_of_two_preprocess_runs(tmp_path: Path) -> None:
    for name in ("a", "b"):
        proc = _privit("preprocess", "--job", "mlp", "--insecure", "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (tmp_path / "a" / "party-0.material").rename(mixed / "party-0.material")
    (tmp_path / "b" / "party-1.material").rename(mixed / "party-1.material")
    proc = _privit("run", "--job", "mlp", "--insecure", "--material", str(mixed))
    assert proc.returncode == 1
    assert "material is not from the same preprocess run" in proc.stderr
    # Refused before the online phase: neither file was claimed.
    assert sorted(p.name for p in mixed.iterdir()) == ["party-0.material", "party-1.material"]
    # Another config is refused by each party before it starts.
    proc = _privit("run", "--job", "mlp", "--insecure", "--frac-bits", "14", "--material",
                   str(mixed))
    assert proc.returncode == 1
    assert "preprocessed for another config: frac_bits is 16 there, 14 here" in proc.stderr
