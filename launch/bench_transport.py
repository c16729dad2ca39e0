"""Transport micro-benchmarks: two real processes talking over loopback `ZmqChannel`s.

Measures (each row a dict; `python -m privit.launch.bench_transport` prints a table):
Data moves through `Session.send` / `Session.recv`, i.e. exactly what protocols get
(int64 tensors, writable).
- throughput, one-way: party 0 sends `repeats` arrays of `nbytes` back to back; party 1
  receives each and acks with 8 bytes. GB/s = repeats * nbytes / (time from the first send to the ack).
- throughput, echo: party 0 sends an array, party 1 receives it and sends it back.
  GB/s = 2 * nbytes / (time per round trip): bytes moved per second, both directions.
- small-message round trip: party 0 sends an 8-byte array, party 1 returns it; median
  and 90th percentile over `count` ping-pongs (after a warm-up).
Targets (the issue): >= 1 GB/s for large arrays, <= 100 us median RTT.
No network emulation is applied. Times are wall clock (`time.perf_counter`).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

import torch

from privit.parties.cluster import Cluster
from privit.parties.config import RunConfig
from privit.parties.counters import Counters
from privit.parties.session import Session
from privit.parties.transport import ZmqChannel

MB = 1_000_000
Plan = list[tuple[str, int, int]]  # (op, nbytes, repeats or count)


def _oneway(sess: Session, nbytes: int, repeats: int) -> dict[str, Any] | None:
    shape = (nbytes // 8,)
    ack = torch.zeros(1, dtype=torch.int64)
    if sess.party_id == 1:
        for _ in range(repeats + 1):  # one warm-up message
            sess.recv(0, "bulk", shape)
            sess.send(0, ack, "ack")
        return None
    arr = torch.arange(shape[0], dtype=torch.int64)
    sess.send(1, arr, "bulk")
    sess.recv(1, "ack", (1,))
    t0 = time.perf_counter()
    for _ in range(repeats):
        sess.send(1, arr, "bulk")
    for _ in range(repeats):
        sess.recv(1, "ack", (1,))
    wall = time.perf_counter() - t0
    return {"op": "oneway", "bytes": 8 * shape[0], "repeats": repeats, "wall_s": wall,
            "GB_per_s": repeats * 8 * shape[0] / wall / 1e9}


def _echo(sess: Session, nbytes: int, repeats: int) -> dict[str, Any] | None:
    shape = (nbytes // 8,)
    if sess.party_id == 1:
        for _ in range(repeats + 1):
            sess.send(0, sess.recv(0, "echo", shape), "echo")
        return None
    arr = torch.arange(shape[0], dtype=torch.int64)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        sess.send(1, arr, "echo")
        got = sess.recv(1, "echo", shape)
        if i:
            times.append(time.perf_counter() - t0)
        elif not torch.equal(got, arr):
            raise AssertionError("echo returned different data")
    wall = statistics.median(times)
    return {"op": "echo", "bytes": 8 * shape[0], "repeats": repeats, "wall_s": wall,
            "GB_per_s": 2 * 8 * shape[0] / wall / 1e9}


def _rtt(sess: Session, nbytes: int, count: int) -> dict[str, Any] | None:
    warmup = max(10, count // 10)
    shape = (max(1, nbytes // 8),)
    if sess.party_id == 1:
        for _ in range(warmup + count):
            sess.send(0, sess.recv(0, "ping", shape), "pong")
        return None
    arr = torch.zeros(shape, dtype=torch.int64)
    times = []
    for i in range(warmup + count):
        t0 = time.perf_counter()
        sess.send(1, arr, "ping")
        sess.recv(1, "pong", shape)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"op": "rtt", "bytes": 8 * shape[0], "repeats": count,
            "wall_s": sum(times), "rtt_us": statistics.median(times) * 1e6,
            "rtt_p90_us": times[int(0.9 * len(times))] * 1e6}


_OPS = {"oneway": _oneway, "echo": _echo, "rtt": _rtt}


def _role_main(role: int, cluster: Cluster, plan: Plan, out: Any) -> None:
    """One process of the benchmark; party 0 puts its rows (or an error) on `out`."""
    try:
        rows = []
        cfg = RunConfig(n_parties=2, timeout_s=60.0)
        counters = Counters()
        with ZmqChannel(role, cluster, [1 - role], counters, cfg.timeout_s, cfg.role_name) as ch:
            sess = Session(cfg, role, ch, counters, correlations={})
            for op, nbytes, repeats in plan:
                row = _OPS[op](sess, nbytes, repeats)
                if row is not None:
                    rows.append(row)
        out.put((role, "ok", rows))
    except BaseException as exc:  # report, never hang the parent
        out.put((role, "error", f"{type(exc).__name__}: {exc}"))


def run_plan(plan: Plan, timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """Run `plan` between two fresh processes on loopback; returns party 0's rows."""
    ctx = mp.get_context("spawn")
    cluster = Cluster.local(2)
    out = ctx.Queue()
    procs = [ctx.Process(target=_role_main, args=(r, cluster, plan, out), daemon=True)
             for r in (0, 1)]
    for p in procs:
        p.start()
    results: dict[int, tuple[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(results) < 2 and time.monotonic() < deadline:
            try:
                role, status, value = out.get(timeout=0.5)
            except Exception:  # queue.Empty: check that both are still alive
                if not any(p.is_alive() for p in procs):
                    break
                continue
            results[role] = (status, value)
    finally:
        for p in procs:
            p.join(5.0)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [f"party {r}: {v}" for r, (s, v) in sorted(results.items()) if s != "ok"]
    if errors or len(results) < 2:
        missing = [r for r in (0, 1) if r not in results]
        raise RuntimeError(f"benchmark failed: {errors or f'no result from party {missing}'}")
    return list(results[0][1])


def throughput(nbytes: int, mode: str = "oneway", repeats: int = 5) -> dict[str, Any]:
    """One throughput row (`mode` "oneway" or "echo") for arrays of `nbytes`."""
    if mode not in ("oneway", "echo"):
        raise ValueError(f"mode must be 'oneway' or 'echo', got {mode!r}")
    return run_plan([(mode, nbytes, repeats)])[0]


def small_rtt(count: int = 2000, nbytes: int = 8) -> dict[str, Any]:
    """Median round trip of `count` ping-pongs of an `nbytes` array."""
    return run_plan([("rtt", nbytes, count)])[0]


def default_plan(sizes_mb: tuple[int, ...] = (10, 100), rtt_count: int = 2000) -> Plan:
    plan: Plan = [("rtt", 8, rtt_count)]
    for size in sizes_mb:
        repeats = max(3, 1000 // size)
        plan += [("oneway", size * MB, repeats), ("echo", size * MB, max(3, repeats // 2))]
    return plan


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'op':<8} {'bytes':>12} {'repeats':>8} {'result':>22}"]
    for r in rows:
        if r["op"] == "rtt":
            result = f"{r['rtt_us']:.1f} us (p90 {r['rtt_p90_us']:.1f})"
        else:
            result = f"{r['GB_per_s']:.2f} GB/s"
        lines.append(f"{r['op']:<8} {r['bytes']:>12,} {r['repeats']:>8} {result:>22}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m privit.launch.bench_transport")
    parser.add_argument("--sizes-mb", default="10,100", help="comma-separated array sizes (MB)")
    parser.add_argument("--rtt-count", type=int, default=2000)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes_mb.split(",") if s)
    rows = run_plan(default_plan(sizes, args.rtt_count))
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
