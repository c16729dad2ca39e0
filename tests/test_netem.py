"""Network emulation: the delivery-time formula, the delay thread, and real processes."""
from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import numpy as np
import pytest
from mp_harness import expect_ok, run_processes

from privit.parties.cluster import Cluster
from privit.parties.config import NETWORK_PRESETS, NetworkConfig
from privit.parties.counters import Counters
from privit.parties.netem import DelaySender, LinkClock, project_time
from privit.parties.transport import ZmqChannel

MBIT = 1e6


def test_link_clock_serialises_messages_on_one_link() -> None:
    clock = LinkClock(NetworkConfig("custom", 0.010, 8 * MBIT))  # 1 MB/s, 10 ms one way
    # 1000 bytes take 1 ms on the wire; the second message waits for the first.
    assert clock.deliver_at(1, 1000, now=0.0) == pytest.approx(0.011)
    assert clock.deliver_at(1, 1000, now=0.0) == pytest.approx(0.012)
    # Another link is independent.
    assert clock.deliver_at(2, 1000, now=0.0) == pytest.approx(0.011)
    # An idle link starts from now.
    assert clock.deliver_at(1, 0, now=5.0) == pytest.approx(5.010)


def test_link_clock_unlimited_bandwidth_is_latency_only() -> None:
    clock = LinkClock(NetworkConfig("custom", 0.020, 0.0))
    assert clock.deliver_at(0, 10**9, now=1.0) == pytest.approx(1.020)


def test_delay_sender_keeps_times_and_order() -> None:
    sent: list[tuple[float, int, bytes]] = []
    lock = threading.Lock()

    def transmit(dst: int, frames: list[Any]) -> None:
        with lock:
            sent.append((time.monotonic(), dst, frames[0]))

    net = NetworkConfig("custom", 0.030, 8 * 100_000)  # 100 kB/s: 1 ms per 100 bytes
    sender = DelaySender(net, transmit)
    payload = bytearray(b"a" * 2000)
    start = time.monotonic()
    sender.send(1, [payload], 2000)  # 20 ms on the wire + 30 ms
    payload[:] = b"b" * 2000  # the sender may reuse its buffer: the queued copy is kept
    sender.send(1, [b"small"], 100)  # waits for the big one: 21 ms + 30 ms
    sender.send(2, [b"other link"], 100)  # 1 ms + 30 ms
    assert sender.close(timeout_s=2.0)
    (t_other, d_other, _), (t_big, _, big), (t_small, _, small) = sent
    assert d_other == 2 and big == b"a" * 2000 and small == b"small"
    assert t_other - start >= 0.031
    assert t_big - start >= 0.050
    assert t_small - start >= 0.051 and t_small >= t_big
    with pytest.raises(RuntimeError, match="closed"):
        sender.send(1, [b"late"], 4)


def test_delay_sender_close_waits_for_the_schedule() -> None:
    sent: list[float] = []
    sender = DelaySender(NetworkConfig("custom", 0.5, 0.0), lambda dst, frames: sent.append(1.0))
    sender.send(1, [b"x"], 1)
    start = time.monotonic()
    assert sender.close(timeout_s=0.1)  # the timeout is slack beyond the 0.5 s schedule
    assert sent and time.monotonic() - start >= 0.45


def test_delay_sender_close_is_bounded() -> None:
    release = threading.Event()
    sender = DelaySender(NetworkConfig("custom", 0.001, 0.0), lambda dst, frames: release.wait(5))
    sender.send(1, [b"x"], 1)  # its transmit hangs, like a socket that cannot send
    sender.send(1, [b"y"], 1)
    start = time.monotonic()
    assert not sender.close(timeout_s=0.2)
    assert time.monotonic() - start < 1.5
    release.set()


def test_delay_sender_reports_transmit_errors() -> None:
    def transmit(dst: int, frames: list[Any]) -> None:
        raise OSError("socket closed")

    sender = DelaySender(NetworkConfig("custom", 0.001, 0.0), transmit)
    sender.send(1, [b"x"], 1)
    with pytest.raises(RuntimeError, match="network emulation failed: socket closed"):
        sender.close(timeout_s=1.0)


def test_project_time() -> None:
    wan = NETWORK_PRESETS["wan"]
    # 1 s compute + 50 MB at 400 Mbit/s (1 s) + 10 rounds of 40 ms
    assert project_time(1.0, 50_000_000, 10, wan) == pytest.approx(2.4)
    assert project_time(0.5, 10**9, 3, NETWORK_PRESETS["none"]) == pytest.approx(0.5)
    lan = NETWORK_PRESETS["lan"]
    assert project_time(0.0, 3 * 10**8 // 8, 1000, lan) == pytest.approx(0.1 + 0.3)


# -- real processes ------------------------------------------------------------------

def timing_target(role: int, clusters: dict[str, Cluster]) -> dict[str, Any]:
    """Party 0 measures; party 1 answers. One process pair for every scenario."""
    wan = NETWORK_PRESETS["wan"]
    thin = NetworkConfig("custom", 0.0, 400 * MBIT)  # 400 Mbit/s, no latency
    out: dict[str, Any] = {}
    small = np.zeros(1, dtype=np.int64)
    big = np.zeros(10_000_000 // 8, dtype=np.int64)  # 10 MB
    half = np.zeros(5_000_000 // 8, dtype=np.int64)

    def channel(name: str, net: NetworkConfig) -> ZmqChannel:
        return ZmqChannel(role, clusters[name], [1 - role], Counters(), 10.0,
                          lambda r: f"party {r}", net)

    with channel("wan", wan) as ch:
        # ping-pong (request, response): one round trip
        times = []
        for i in range(5):
            start = time.monotonic()
            if role == 0:
                ch.send(1, "data", f"ping{i}", [small])
                ch.recv(1, "data", f"pong{i}")
            else:
                ch.recv(0, "data", f"ping{i}")
                ch.send(0, "data", f"pong{i}", [small])
            times.append(time.monotonic() - start)
        out["ping_pong_s"] = statistics.median(times)
        # symmetric exchange: both send, then both receive. The two processes cannot
        # start at the same instant, so record when each message left and arrived
        # (CLOCK_MONOTONIC is one clock for all processes of a machine).
        out["exchange"] = []
        for i in range(5):
            sent_at = time.monotonic()
            ch.send(1 - role, "data", f"x{i}", [small])
            ch.recv(1 - role, "data", f"x{i}")
            out["exchange"].append((sent_at, time.monotonic()))
    with channel("thin", thin) as ch:
        # 10 MB through 400 Mbit/s, then two 5 MB messages back to back
        for label, arrays in (("big", [big]), ("two", [half, half])):
            start = time.monotonic()
            if role == 0:
                for i, a in enumerate(arrays):
                    ch.send(1, "data", f"{label}{i}", [a])
                ch.recv(1, "data", f"{label}_ack")
            else:
                for i in range(len(arrays)):
                    ch.recv(0, "data", f"{label}{i}")
                ch.send(0, "data", f"{label}_ack", [small])
            out[f"{label}_s"] = time.monotonic() - start
    return out


@pytest.fixture(scope="module")
def timings() -> dict[str, Any]:
    clusters = {name: Cluster.local(1) for name in ("wan", "thin")}
    p0, p1 = expect_ok(run_processes([(timing_target, (r, clusters)) for r in (0, 1)]))
    # Each exchange message: from its sender's send to its receiver's arrival.
    flights = [r1 - s0 for (s0, _), (_, r1) in zip(p0["exchange"], p1["exchange"], strict=True)]
    flights += [r0 - s1 for (_, r0), (s1, _) in zip(p0["exchange"], p1["exchange"], strict=True)]
    return {**p0, "exchange_flight_s": statistics.median(flights)}


def test_wan_round_trip(timings: dict[str, Any]) -> None:
    # 40 ms RTT: a request and its response take one RTT, plus a little processing.
    assert 0.040 <= timings["ping_pong_s"] < 0.060


def test_wan_exchange_waits_one_latency(timings: dict[str, Any]) -> None:
    # Both parties send, then receive: each message is in flight one one-way latency.
    assert 0.020 <= timings["exchange_flight_s"] < 0.040


def test_bandwidth_delays_a_large_message(timings: dict[str, Any]) -> None:
    # 10 MB at 400 Mbit/s = 0.2 s on the link.
    assert 0.2 <= timings["big_s"] < 0.5


def test_messages_on_one_link_are_serialised(timings: dict[str, Any]) -> None:
    # Two 5 MB messages sent together: 0.1 s each, one after the other, not in parallel.
    assert 0.2 <= timings["two_s"] < 0.5
