"""The streamed offline phase (parties/offline.py): material read and expanded during the
online phase within a party's limits gives the same results, the same online bytes and
rounds, and stays within the memory budget; malformed flow control is refused."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from privit.launch.vit_job import VitJob
from privit.parties import offline
from privit.parties.channel import PeerError
from privit.parties.config import JobSpec, RunConfig
from privit.parties.counters import Counters
from privit.parties.inmemory_run import run_in_memory_detailed
from privit.parties.memory import MemoryChannel, MemoryHub
from privit.parties.offline import PartyWindows, StreamLimits
from privit.protocols.registry import CORRELATIONS

PRIVIT = [sys.executable, "-m", "privit.launch.cli"]


def _online(run: Any) -> list[tuple[int, int]]:
    return [(r["phases"]["online"]["bytes"], r["phases"]["online"]["rounds"]) for r in run.reports]


def test_streamed_run_equals_the_unstreamed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks and a small window, so that this small model streams: the dealer must
    # wait for acks and the parties read most chunks during the online phase.
    monkeypatch.setattr(offline, "CHUNK_BYTES", 64 << 10)
    monkeypatch.setattr(offline, "MIN_WINDOW_BYTES", 512 << 10)
    cfg = RunConfig(n_parties=2, seed=0, timeout_s=120,
                    job=JobSpec.make("vit", batch=1, model="vit_7_4_32", mu=0.5))
    job = VitJob(cfg)
    whole = run_in_memory_detailed(cfg, job.run, CORRELATIONS, seed_source=b"same randomness")
    # The window must hold two of the largest request (14 MB of adder-gate material: the
    # erf GeLU's 7 comparisons on the MLP's hidden layer).
    limits = StreamLimits(window_bytes=32 << 20, held_bytes=1 << 20)
    streamed = run_in_memory_detailed(cfg, job.run, CORRELATIONS, limits=limits,
                                      seed_source=b"same randomness")
    for a, b in zip(whole.results, streamed.results, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), name
    assert _online(streamed) == _online(whole)
    assert all(s["chunks_read_online"] == 0 for s in whole.streams)
    assert all(s["chunks_read_online"] > 10 for s in streamed.streams)
    for w, s in zip(whole.streams, streamed.streams, strict=True):
        assert s["payload_bytes"] == w["payload_bytes"]
        assert s["peak_prepared_bytes"] < w["peak_prepared_bytes"] / 4
    # The dealer waited for acks only when the windows were bounded.
    assert whole.dealer_report["phases"]["offline"]["rounds"] == 0
    assert streamed.dealer_report["phases"]["offline"]["rounds"] > 0


def test_dealer_refuses_a_request_over_half_a_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offline, "MIN_WINDOW_BYTES", 1 << 20)
    # auto for the online phase alone: FSS ReLU keys, the largest requests
    cfg = RunConfig(n_parties=2, seed=0, timeout_s=60, auto_objective="online",
                    job=JobSpec.make("vit", batch=1, model="vit_7_4_32", mu=0.5))
    with pytest.raises(Exception, match=r"request 50 \(relu_fss\) gives party 0 4 MB of material, "
                                        r"more than half of the 8 MB window it granted"):
        run_in_memory_detailed(cfg, VitJob(cfg).run, CORRELATIONS,
                               limits=StreamLimits(window_bytes=8 << 20, held_bytes=1 << 20))


def _windows(acks: list[Any]) -> PartyWindows:
    hub = MemoryHub([0, 1, 2])
    party = MemoryChannel(hub, 0, [1, 2], Counters())
    dealer = MemoryChannel(hub, 2, [0, 1], Counters(), timeout_s=2.0)
    for read in acks:
        party.send(2, "corr", "ack", meta={"read": read})
    windows = PartyWindows(dealer, [offline.MIN_WINDOW_BYTES] * 2, wait_s=2.0)
    windows.sent[0] = 1000
    return windows


@pytest.mark.parametrize("read", [0, 1001, -5, "10", True, None])
def test_dealer_refuses_a_bad_ack(read: Any) -> None:
    windows = _windows([read])
    with pytest.raises(PeerError, match="acknowledged"):
        windows.drain()


def test_dealer_drains_good_acks() -> None:
    windows = _windows([400, 1000])
    windows.drain()
    assert windows.read[0] == 1000


def test_limits_refuse_a_budget_below_what_the_role_uses() -> None:
    with pytest.raises(ValueError, match="memory budget of 400 MB is too small: this role "
                                         "already uses or reserves 350 MB"):
        StreamLimits.for_budget(400 << 20, 350 << 20)
    limits = StreamLimits.for_budget(2048 << 20, 448 << 20)
    assert (limits.window_bytes, limits.held_bytes) == (400 << 20, 800 << 20)


def _run(tmp_path: Path, name: str, *extra: str) -> dict[str, Any]:
    path = tmp_path / f"{name}.json"
    # --auto-objective online: the FSS-heavy plan, whose material (296 MB) makes the
    # unstreamed parties peak above the budget below
    proc = subprocess.run(PRIVIT + ["run", "--model", "vit_7_4_32_teacher", "--insecure",
                                    "--auto-objective", "online", "--json", str(path), *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def test_processes_stream_within_a_small_memory_budget(tmp_path: Path) -> None:
    """Real processes: a budget below what the unstreamed run's parties peak at forces
    streaming (chunks read during the online phase, less material prepared at once); every
    party stays within it (peak RSS, the kernel's VmHWM) with the same online bytes and
    rounds."""
    whole = _run(tmp_path, "whole")
    budget = 450
    streamed = _run(tmp_path, "streamed", "--memory-budget-mb", str(budget))
    parties = [p for p in streamed["per_party"] if p["role"] != "dealer"]
    unstreamed = [p for p in whole["per_party"] if p["role"] != "dealer"]
    assert max(q["peak_rss_mb"] for q in unstreamed) > budget  # the budget binds
    for p, q in zip(parties, unstreamed, strict=True):
        assert p["stream"]["chunks_read_online"] > 0, p
        assert q["stream"]["chunks_read_online"] == 0, q
        assert p["stream"]["peak_prepared_bytes"] < q["stream"]["peak_prepared_bytes"], (p, q)
        assert p["peak_rss_mb"] <= budget, p
    assert [(p["online_bytes"], p["online_rounds"]) for p in parties] == \
        [(p["online_bytes"], p["online_rounds"]) for p in unstreamed]
    assert streamed["offline"]["bytes"] == whole["offline"]["bytes"]
    assert streamed["accuracy"]["max_abs_logit_error"] < 0.02
    total = streamed["total"]
    assert total["bytes"] == streamed["online"]["bytes"] + streamed["offline"]["bytes"]
    parts = sum(total[k] for k in ("startup_s", "handshake_s", "offline_s", "online_s", "other_s"))
    assert parts == pytest.approx(total["wall_s"], rel=1e-6)
    # what the parties read while online is inside online_s, not added to offline_s
    assert total["offline_during_online_s"] > 0
    assert total["offline_s"] == max(p["offline_prefetch_s"] for p in parties)
    assert set(total["peak_rss_mb"]) == {"party 0", "party 1", "dealer"}
