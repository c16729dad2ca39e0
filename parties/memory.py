"""An in-process channel for unit tests: each role is a thread, links are queues.

It uses the same framing and counting as the ZeroMQ channel (frames are encoded and
decoded), so a test over `MemoryChannel` asserts the same bytes and rounds that real
processes produce. Not for runs: it has no processes and no network.
"""
from __future__ import annotations

import queue
from collections.abc import Callable, Sequence
from typing import Any

from privit.parties.channel import DEFAULT_LIMITS, ChannelLimits, FramedChannel
from privit.parties.counters import Counters


class MemoryHub:
    """The shared set of queues, one inbox per role."""

    def __init__(self, roles: Sequence[int]) -> None:
        # Each item is (sender role, frames): the hub knows who put it there.
        self.inboxes: dict[int, queue.Queue[tuple[list[bytes], int]]] = {
            r: queue.Queue() for r in roles}


class MemoryChannel(FramedChannel):
    def __init__(
        self,
        hub: MemoryHub,
        role: int,
        peers: Sequence[int],
        counters: Counters,
        timeout_s: float = 30.0,
        role_name: Callable[[int], str] = lambda r: f"role {r}",
        limits: ChannelLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(role, peers, counters, timeout_s, role_name, limits)
        self.hub = hub

    def _transmit(self, dst: int, frames: list[Any]) -> None:
        # Copy now: the sender may reuse its arrays, as with zero-copy ZeroMQ sends.
        self.hub.inboxes[dst].put(([bytes(f) for f in frames], self.role))

    def _receive(self, timeout_s: float) -> tuple[list[Any], int | None] | None:
        try:
            return self.hub.inboxes[self.role].get(timeout=timeout_s)
        except queue.Empty:
            return None
