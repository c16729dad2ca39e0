"""`privit bench`: microbenchmarks of every op on real processes (2 parties + dealer).

Each selected op runs in its own multi-process run of the `bench` job, each repetition in its
own scope `op#rep` after an untimed warm-up `op#warmup`, so that rounds and bytes come
from the same counters as any run.
Per op, the job generates seeded inputs (benchmark data, known to every party so that
each can check the opened result), shares them from their owner, runs `setup` outside
the timed scope (e.g. a fixed weight's mask opening), then the op inside it, then opens
the result outside the scope and compares it with the float64 reference.

Row fields: op, shape, rounds, online_bytes (all parties), offline_bytes (dealer
payload attributed to the op's scope), wall_s (best repetition, slowest party),
max_abs_error, network, plus any op-specific metrics (e.g. fault rates).
Ops are declared in the `bench_ops_*` modules and registered in `BENCH_OPS`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from privit.launch.jobs import ALL_INPUTS, JOBS, Job, RoleInputs
from privit.parties.config import JobSpec, NetworkConfig, RunConfig
from privit.parties.session import Session
from privit.protocols import ring, sharing

Plain = dict[str, torch.Tensor]
Shares = dict[str, torch.Tensor]


@dataclass(frozen=True)
class BenchOp:
    """One benchmarked op.

    inputs(gen) -> {name: (float64 tensor, owner party)}; run(sess, shares, state) -> share of
    the fixed-point result; reference(plain inputs) -> float64 result; setup(sess, shares)
    -> state, untimed; check(result, reference, plain inputs) -> extra metrics (default
    max_abs_error). `raw_output`: the result is an integer (e.g. a 0/1 bit), not fixed point.
    """

    name: str
    shape: str
    inputs: Callable[[torch.Generator], dict[str, tuple[torch.Tensor, int]]]
    run: Callable[[Session, Shares, Any], torch.Tensor]
    reference: Callable[[Plain], torch.Tensor]
    setup: Callable[[Session, Shares], Any] | None = None
    check: Callable[[torch.Tensor, torch.Tensor, Plain], dict[str, float]] | None = None
    raw_output: bool = False
    config: dict[str, Any] = field(default_factory=dict)  # e.g. {"truncation": "dealer"}


def default_check(result: torch.Tensor, reference: torch.Tensor, _: Plain) -> dict[str, float]:
    err = (result - reference).abs().max() if result.numel() else torch.tensor(0.0)
    return {"max_abs_error": float(err)}


def _registry() -> dict[str, BenchOp]:
    from privit.launch import bench_ops_arith

    ops: list[BenchOp] = list(bench_ops_arith.OPS)
    for module in ("bench_ops_compare", "bench_ops_math"):
        try:
            mod = __import__(f"privit.launch.{module}", fromlist=["OPS"])
        except ModuleNotFoundError as exc:
            if exc.name != f"privit.launch.{module}":
                raise
            continue
        ops.extend(mod.OPS)
    return {op.name: op for op in ops}


class BenchJob(Job):
    """params: ops (comma-separated names), reps."""

    name = "bench"
    description = "microbenchmarks (see `privit bench`)"

    def __init__(self, cfg: RunConfig, inputs: RoleInputs = ALL_INPUTS) -> None:
        super().__init__(cfg, inputs)
        registry = _registry()
        names = str(cfg.job.param("ops", ",".join(registry))).split(",")
        unknown = [n for n in names if n not in registry]
        if unknown:
            raise ValueError(f"unknown bench ops {unknown}; available: {sorted(registry)}")
        self.ops = [registry[n] for n in names]
        self.reps = int(cfg.job.param("reps", 3))
        if self.reps < 1:
            raise ValueError("reps must be >= 1")

    def run(self, sess: Session) -> dict[str, torch.Tensor]:
        f = self.cfg.frac_bits
        out: dict[str, torch.Tensor] = {}
        for index, op in enumerate(self.ops):
            gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + index)
            plain_inputs = op.inputs(gen)
            plain = {k: v for k, (v, _) in plain_inputs.items()}
            reference = op.reference(plain)
            # rep -1 is an untimed warm-up (first-use costs: allocator, sockets, thread pools)
            for rep in range(-1, self.reps):
                shares = {
                    k: sharing.share_input(sess, owner, None if sess.is_tracing else ring.encode(v, f),
                                           tuple(v.shape))
                    for k, (v, owner) in plain_inputs.items()
                }
                state = op.setup(sess, shares) if op.setup else None
                with sess.scope(f"{op.name}#{'warmup' if rep < 0 else rep}"):
                    result = op.run(sess, shares, state)
                opened = sharing.open_all(sess, result, label="bench_check")
                if rep == 0:
                    value = opened.double() if op.raw_output else ring.decode(opened, f)
                    metrics = (op.check or default_check)(value, reference, plain)
                    for key, v in metrics.items():
                        out[f"{op.name}.{key}"] = torch.tensor([v], dtype=torch.float64)
        return out

    def reference(self) -> dict[str, torch.Tensor] | None:
        return None


JOBS[BenchJob.name] = BenchJob


def rows_from_report(report: dict[str, Any], job: BenchJob,
                     outputs: dict[str, float]) -> list[dict[str, Any]]:
    scopes = {s["name"]: s for s in report["scopes"]}
    rows = []
    for op in job.ops:
        reps = [scopes[f"{op.name}#{r}"] for r in range(job.reps)]
        first = reps[0]
        row: dict[str, Any] = {
            "op": op.name, "shape": op.shape, "rounds": first["rounds"],
            "online_bytes": first["bytes"], "offline_bytes": first["offline_bytes"],
            "wall_s": min(r["wall_s"] for r in reps),
            "network": report["network"]["name"],
        }
        for key, value in outputs.items():
            prefix = f"{op.name}."
            if key.startswith(prefix):
                row[key[len(prefix):]] = value
        row.setdefault("max_abs_error", math.nan)
        rows.append(row)
    return rows


def run_bench(network: NetworkConfig, ops: list[str] | None, reps: int,
              transport: bool, prg: bool = False) -> list[dict[str, Any]]:
    """Run the selected ops (grouped by the run config they need), then the PRG and the
    transport rows when asked."""
    from privit.launch.coordinator import run_local

    registry = _registry()
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
        from privit.launch import bench_prg

        rows.extend({**row, "network": "none (in process)"} for row in bench_prg.run())
    if transport:
        from privit.launch import bench_transport

        for channels in ("curve", "insecure"):
            for row in bench_transport.run_plan(bench_transport.default_plan(), channels=channels):
                rows.append({**row, "network": "none (loopback, no emulation)"})
    return rows


ROW_COLUMNS = frozenset({"op", "shape", "rounds", "online_bytes", "offline_bytes", "wall_s",
                         "max_abs_error", "network"})
TRANSPORT_COLUMNS = frozenset({"op", "network"})


def _extra(row: dict[str, Any], shown: frozenset[str]) -> str:
    """The fields of a row not in its own columns (fault rates, auto's choice, throughput)."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in row.items() if k not in shown)


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'op':<22}{'shape':<22}{'rounds':>7}{'online B':>13}{'offline B':>13}"
             f"{'wall ms':>10}{'max err':>11}  extra"]
    for r in rows:
        if "online_bytes" not in r:  # transport rows
            blank = f"{'':<22}{'':>7}{'':>13}{'':>13}{'':>10}{'':>11}"
            lines.append(f"{r['op']:<22}{blank}  {_extra(r, TRANSPORT_COLUMNS)}")
            continue
        lines.append(f"{r['op']:<22}{r['shape']:<22}{r['rounds']:>7}{r['online_bytes']:>13,}"
                     f"{r['offline_bytes']:>13,}{r['wall_s'] * 1e3:>10.2f}"
                     f"{r['max_abs_error']:>11.3g}  {_extra(r, ROW_COLUMNS)}")
    return "\n".join(lines)
