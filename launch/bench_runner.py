"""`privit bench`'s runs: each op in its own multi-process run of the bench job, then the
PRG's and the transport's rows."""
from __future__ import annotations

from typing import Any

from privit.launch import bench_prg, bench_transport
from privit.launch.bench import BENCH_OPS, BenchJob, rows_from_report
from privit.launch.coordinator import run_local
from privit.parties.config import JobSpec, NetworkConfig, RunConfig


def run_bench(network: NetworkConfig, ops: list[str] | None, reps: int,
              transport: bool, prg: bool = False) -> list[dict[str, Any]]:
    """Run the selected ops (grouped by the run config they need), then the PRG and the
    transport rows when asked."""
    registry = BENCH_OPS
    names = ops or list(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"unknown bench ops {unknown}; available: {sorted(registry)}")
    # One run per op: the dealer prepares every repetition's material before the online
    # phase, and FSS keys for a large softmax or GeLU are hundreds of MB per repetition.
    rows: list[dict[str, Any]] = []
    for n in names:
        cfg = RunConfig(job=JobSpec.make("bench", ops=n, reps=reps), network=network,
                        session_id="bench", timeout_s=120.0, **registry[n].config)
        result = run_local(cfg, overall_timeout_s=1800)
        outputs = {k: float(v.flatten()[0]) for k, v in result.outputs.items()}
        rows.extend(rows_from_report(result.report, BenchJob(cfg), outputs))
    if prg:
        rows.extend({**row, "network": "none (in process)"} for row in bench_prg.run())
    if transport:
        for channels in ("curve", "insecure"):
            for row in bench_transport.run_plan(bench_transport.default_plan(), channels=channels):
                rows.append({**row, "network": "none (loopback, no emulation)"})
    return rows
