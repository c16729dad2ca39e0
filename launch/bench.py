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
Ops are declared in the `bench_ops_*` modules and listed in `BENCH_OPS`; the runs are
launch/bench_runner.py's.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from privit.launch import bench_ops_arith, bench_ops_compare, bench_ops_math
from privit.launch.bench_op import BenchOp, default_check
from privit.launch.jobs import ALL_INPUTS, Job, RoleInputs
from privit.parties.config import RunConfig
from privit.parties.session import Session
from privit.protocols import ring, sharing


def _ops() -> dict[str, BenchOp]:
    ops = [*bench_ops_arith.OPS, *bench_ops_compare.OPS, *bench_ops_math.OPS]
    return {op.name: op for op in ops}


BENCH_OPS: Mapping[str, BenchOp] = MappingProxyType(_ops())
"""Every op `privit bench` knows, by name (static: declared in the bench_ops_* modules)."""


@dataclass(frozen=True)
class BenchSpec:
    ops: str | None = field(default=None, metadata={"help": "comma-separated op names [all]"})
    reps: int = field(default=3, metadata={"help": "timed repetitions per op (best kept)"})


class BenchJob(Job):
    """One run of the selected ops, each repetition in its own scope."""

    name = "bench"
    description = "microbenchmarks (see `privit bench`)"
    spec_class = BenchSpec

    spec: BenchSpec

    def __init__(self, cfg: RunConfig, inputs: RoleInputs = ALL_INPUTS) -> None:
        super().__init__(cfg, inputs)
        registry = BENCH_OPS
        names = (self.spec.ops or ",".join(registry)).split(",")
        unknown = [n for n in names if n not in registry]
        if unknown:
            raise ValueError(f"unknown bench ops {unknown}; available: {sorted(registry)}")
        self.ops = [registry[n] for n in names]
        self.reps = self.spec.reps
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
