"""Transport micro-benchmarks: two real processes talking over loopback `ZmqChannel`s.

`python -m privit.launch.bench_transport` prints a table; each row is a dict with op,
bytes, repeats, wall_s and GB_per_s or rtt_us. Data moves through `Session.send` /
`Session.recv`, i.e. exactly what protocols get (writable int64 tensors):
- oneway: party 0 sends `repeats` arrays of `nbytes` back to back; party 1 receives each
  and acks it with 8 bytes. GB/s = repeats * nbytes / (first send to last ack).
- echo: party 0 sends an array, party 1 receives it and sends it back.
  GB/s = 2 * nbytes / (median round trip): bytes moved per second, both directions.
- rtt: party 0 sends an 8-byte array, party 1 returns it; median and 90th percentile
  over `count` ping-pongs after a warm-up.
- raw_rtt: the same ping-pong with plain pyzmq PUSH/PULL sockets (no framing,
  validation, counters or tensors): the floor that ZeroMQ itself sets on this machine.
Targets (the issue): >= 1 GB/s for large arrays, <= 100 us median RTT. No network
emulation is applied. Times are wall clock (`time.perf_counter`).
`channels`: "curve" (the default of every run: CURVE-authenticated and encrypted links,
as roles use them) or "insecure" (plain TCP); each row says which. raw_rtt is always
plain pyzmq.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import statistics
import time
from typing import Any

import torch
import zmq

from privit.launch.roles import keep_freed_memory
from privit.parties.cluster import Cluster, Endpoint
from privit.parties.config import RunConfig
from privit.parties.counters import Counters
from privit.parties.keys import RoleKeys
from privit.parties.session import Session
from privit.parties.transport import ZmqChannel, tcp_address

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


def _raw_rtt(role: int, pull_ep: Endpoint, push_ep: Endpoint, count: int) -> dict[str, Any] | None:
    """The floor: plain pyzmq PUSH/PULL ping-pong of a 40-byte and an 8-byte frame, with
    no framing, validation, counting or tensors."""
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    try:
        pull.bind(tcp_address(pull_ep.host, pull_ep.port))
        push.connect(tcp_address(push_ep.host, push_ep.port))
        frames = [bytes(40), bytes(8)]
        warmup = max(10, count // 10)
        times = []
        for i in range(warmup + count):
            t0 = time.perf_counter()
            if role == 0:
                push.send_multipart(frames)
                pull.recv_multipart()
            else:
                push.send_multipart(pull.recv_multipart())
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        pull.close(linger=0)
        push.close(linger=1000)
        ctx.term()
    if role == 1:
        return None
    times.sort()
    return {"op": "raw_rtt", "bytes": 8, "repeats": count, "wall_s": sum(times),
            "rtt_us": statistics.median(times) * 1e6,
            "rtt_p90_us": times[int(0.9 * len(times))] * 1e6}


_OPS = {"oneway": _oneway, "echo": _echo, "rtt": _rtt}


PINNING = {"none": None, "same": (0, 0), "split": (0, 1)}  # CPU of party 0, party 1


def _role_main(role: int, cluster: Cluster, plan: Plan, tune_malloc: bool, pin: str,
               keys: RoleKeys | None, out: Any) -> None:
    """One process of the benchmark; party 0 puts its rows (or an error) on `out`.

    Roles 0 and 1 of `cluster` carry the channel; endpoints 2 and 3 the raw sockets.
    """
    try:
        cpus = PINNING[pin]
        if cpus is not None:
            os.sched_setaffinity(0, {cpus[role]})
        if tune_malloc:
            keep_freed_memory()  # as every role process does
        rows = []
        for op, _, count in plan:
            if op == "raw_rtt":
                ends = (cluster.endpoint(2), cluster.endpoint(3))
                row = _raw_rtt(role, ends[role], ends[1 - role], count)
                rows += [row] if row else []
        cfg = RunConfig(n_parties=2, timeout_s=60.0)
        counters = Counters()
        with ZmqChannel(role, cluster, [1 - role], counters, cfg.timeout_s, cfg.role_name,
                        keys=keys) as ch:
            sess = Session(cfg, role, ch, counters, correlations={})
            for op, nbytes, repeats in plan:
                if op in _OPS:
                    row = _OPS[op](sess, nbytes, repeats)
                    if row:
                        rows.append({**row, "channels": "insecure" if keys is None else "curve"})
        out.put((role, "ok", rows))
    except BaseException as exc:  # report, never hang the parent
        out.put((role, "error", f"{type(exc).__name__}: {exc}"))


def run_plan(plan: Plan, timeout_s: float = 300.0, tune_malloc: bool = True,
             pin: str = "none", channels: str = "curve") -> list[dict[str, Any]]:
    """Run `plan` between two fresh processes on loopback; returns party 0's rows.

    tune_malloc: set up glibc's allocator as role processes do (launch/roles.py);
    without it, every large received message costs fresh pages (page faults).
    pin: "none" lets the OS place the processes; "same" puts both on CPU 0, "split"
    party 0 on CPU 0 and party 1 on CPU 1 (Linux). Small-message round trips depend
    on it: waking a thread on another CPU is what costs most in a VM.
    """
    if pin not in PINNING:
        raise ValueError(f"pin must be one of {sorted(PINNING)}, got {pin!r}")
    if channels not in ("curve", "insecure"):
        raise ValueError(f"channels must be 'curve' or 'insecure', got {channels!r}")
    ctx = mp.get_context("spawn")
    cluster = Cluster.local(3)
    keys: list[RoleKeys | None] = [None] * 4
    if channels == "curve":
        generated = [RoleKeys.generate(f"bench{r}") for r in range(4)]
        cluster = cluster.with_keys(generated)
        keys = list(generated)
    out = ctx.Queue()
    procs = [ctx.Process(target=_role_main, args=(r, cluster, plan, tune_malloc, pin, keys[r], out),
                         daemon=True)
             for r in (0, 1)]
    for p in procs:
        p.start()
    results: dict[int, tuple[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(results) < 2 and time.monotonic() < deadline:
            try:
                role, status, value = out.get(timeout=0.5)
            except queue.Empty:
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
    plan: Plan = [("raw_rtt", 8, rtt_count), ("rtt", 8, rtt_count)]
    for size in sizes_mb:
        repeats = max(3, 1000 // size)
        plan += [("oneway", size * MB, repeats), ("echo", size * MB, max(3, repeats // 2))]
    return plan


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'op':<8} {'channels':<9} {'bytes':>12} {'repeats':>8} {'result':>22}"]
    for r in rows:
        if r["op"] in ("rtt", "raw_rtt"):
            result = f"{r['rtt_us']:.1f} us (p90 {r['rtt_p90_us']:.1f})"
        else:
            result = f"{r['GB_per_s']:.2f} GB/s"
        lines.append(f"{r['op']:<8} {r.get('channels', 'plain'):<9} {r['bytes']:>12,} "
                     f"{r['repeats']:>8} {result:>22}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m privit.launch.bench_transport")
    parser.add_argument("--sizes-mb", default="10,100", help="comma-separated array sizes (MB)")
    parser.add_argument("--rtt-count", type=int, default=2000)
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's allocator as it is (role processes tune it)")
    parser.add_argument("--pin", choices=sorted(PINNING), default="none",
                        help="CPU placement of the two processes (see run_plan)")
    parser.add_argument("--channels", default="curve,insecure",
                        help="comma-separated: curve (the default of runs), insecure (plain TCP)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes_mb.split(",") if s)
    rows: list[dict[str, Any]] = []
    for channels in args.channels.split(","):
        plan = default_plan(sizes, args.rtt_count)
        if rows:  # raw pyzmq needs no second measurement
            plan = [step for step in plan if step[0] != "raw_rtt"]
        rows += run_plan(plan, tune_malloc=not args.default_malloc, pin=args.pin,
                         channels=channels)
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
