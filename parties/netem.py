"""Network emulation inside the transport, and the cost projection from counters.

Semantics (docs/design.md, "Measurement conventions"): a message of B bytes sent to peer p at
time t is delivered no earlier than

    link_free[p] = max(t, link_free[p]) + 8 B / bandwidth      (the link is busy sending it)
    deliver_at   = link_free[p] + one-way latency

so messages on one link are serialised (a small message waits behind a large one) and
each is in flight for the latency. Bandwidth 0 means unlimited. The delay is applied on
the sender: a `DelaySender` thread holds each message until its `deliver_at`, then hands
it to ZeroMQ. Every time is the sender's own clock, so machines need no clock sync. The
receiving side adds no delay; real transfer time (loopback, or a real link) comes on top,
which is negligible on loopback and makes the emulation an under-estimate on a real link.

`project_time` predicts wall time for any network from counted bytes and rounds.
"""
from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

from privit.parties.config import NetworkConfig

Frames = list[Any]


class LinkClock:
    """When each message on each outgoing link may be delivered (the formula above)."""

    def __init__(self, network: NetworkConfig) -> None:
        self.network = network
        self._link_free: dict[int, float] = {}

    def deliver_at(self, dst: int, nbytes: int, now: float) -> float:
        free = max(now, self._link_free.get(dst, now))
        if self.network.bandwidth_bps > 0:
            free += nbytes * 8 / self.network.bandwidth_bps
        self._link_free[dst] = free
        return free + self.network.latency_s


class DelaySender:
    """A thread that sends each message at its emulated delivery time.

    `send(dst, frames)` is called by the protocol thread: it copies the frames (a sent
    array may be changed by its owner while it waits here), stamps the delivery time and
    queues them. The thread is then the only user of the sockets that `transmit` writes
    to: ZeroMQ sockets are not thread-safe. Errors in the thread are raised by the next
    `send` or by `close`.
    """

    def __init__(self, network: NetworkConfig, transmit: Callable[[int, Frames], None],
                 name: str = "netem") -> None:
        self._clock = LinkClock(network)
        self._transmit = transmit
        self._heap: list[tuple[float, int, int, Frames]] = []
        self._seq = 0
        self._last_at = 0.0  # the latest delivery time queued so far
        self._cond = threading.Condition()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def send(self, dst: int, frames: Frames, nbytes: int) -> None:
        self._raise_error()
        copied = [bytes(f) for f in frames]
        with self._cond:
            if self._closing:
                raise RuntimeError("network emulation is closed")
            at = self._clock.deliver_at(dst, nbytes, time.monotonic())
            self._last_at = max(self._last_at, at)
            heapq.heappush(self._heap, (at, self._seq, dst, copied))
            self._seq += 1
            self._cond.notify()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def close(self, timeout_s: float) -> bool:
        """Deliver everything queued (at its time), then stop.

        Waits until the last queued delivery time plus `timeout_s` at most (the schedule
        itself may be long: a large backlog behind a slow emulated link); returns False
        if that passed first, and what was still queued is then dropped.
        """
        with self._cond:
            self._closing = True
            wait = max(0.0, self._last_at - time.monotonic()) + timeout_s
            self._cond.notify()
        self._thread.join(wait)
        finished = not self._thread.is_alive()
        if not finished:
            with self._cond:
                self._heap.clear()
                self._cond.notify()
            self._thread.join(0.5)
        self._raise_error()
        return finished

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"network emulation failed: {self._error}") from self._error

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while True:
                        if not self._heap:
                            if self._closing:
                                return
                            self._cond.wait()
                            continue
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    _, _, dst, frames = heapq.heappop(self._heap)
                self._transmit(dst, frames)
        except BaseException as exc:  # surfaced to the protocol thread
            self._error = exc


def project_time(compute_s: float, bytes_per_party: int, rounds: int,
                 network: NetworkConfig) -> float:
    """Predicted wall time T = compute + 8 bytes / bandwidth + rounds * RTT.

    compute_s: measured time with no network (loopback, no emulation).
    bytes_per_party: the maximum over parties of the bytes each sent; links are full
      duplex, so parties' transfers overlap and the busiest sender bounds the time.
    rounds: communication rounds on the critical path (Counters' definition).
    A round costs a full RTT, as in a request/response; a symmetric exchange (both
    parties send, then both receive) really waits one one-way latency, so for
    protocols made of exchanges this projection is an upper bound.
    Unlimited bandwidth (0) adds nothing for the bytes.
    """
    transfer = bytes_per_party * 8 / network.bandwidth_bps if network.bandwidth_bps > 0 else 0.0
    return compute_s + transfer + rounds * network.rtt_s
