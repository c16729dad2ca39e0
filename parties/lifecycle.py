"""The phases every role goes through after its handshake, shared by the role processes
(launch/roles.py) and the in-memory runner for tests (parties/inmemory_run.py), so that
both count the same bytes and rounds in the same phases.

Party: 1. offline: receive and expand the dealer's plan up to the party's streaming limits
(phase `offline`; parties/offline.py); 2. a barrier with the other parties (`setup`); 3.
online: the job on a `Session` (`online`), reading the rest of the plan as it needs it
(counted in `offline`); 4. every planned correlation must have been used; 5. a `bye` to
the dealer (`setup`).
Dealer: 1. deal the plan within the windows the parties granted (`offline`); 2. wait
until every party has read it all, then for every party's `bye` (`setup`), so that it
ends successfully only when the whole run did.

The barrier and the bye synchronise separate processes. The in-memory runner, whose
threads end together at one join, passes `sync=False` and skips both: its counters then
hold exactly the offline and online messages (the sequence numbers of a party's online
messages start at 0), which is what the protocol tests assert to the byte.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from privit.parties.channel import FramedChannel
from privit.parties.config import RunConfig
from privit.parties.counters import Counters
from privit.parties.offline import (
    UNLIMITED,
    DealerStream,
    PartyWindows,
    StreamedCorrelations,
    StreamLimits,
)
from privit.parties.session import CorrelationRegistry, Params, Session

T = TypeVar("T")
# Told when a phase ends: its name and extra figures (e.g. the payload bytes read).
PhaseHook = Callable[[str, dict[str, Any]], None]
# The dealer hears nothing while the parties compute online, for as long as that takes: its
# wait for their byes is bounded by their liveness (a party that fails aborts, one that dies
# closes its link, which the channel notices), and only this generous cap besides.
BYE_WAIT_S = 24 * 3600.0


@dataclass
class PartyOutcome(Generic[T]):
    """The job's result; offline_s counts reading and expanding the dealer's chunks (also
    those read during the online phase), online_s the online phase less that."""

    result: T
    offline_s: float
    online_s: float
    stream: dict[str, int | None]


def barrier(channel: FramedChannel, cfg: RunConfig, party_id: int) -> None:
    """Every party tells every other it is ready, then waits for theirs (one round)."""
    others = [p for p in range(cfg.n_parties) if p != party_id]
    for p in others:
        channel.send(p, "data", "barrier")
    for p in others:
        channel.recv(p, "data", "barrier")


def run_party_phases(channel: FramedChannel, counters: Counters, cfg: RunConfig, party_id: int,
                     registry: CorrelationRegistry, dealer_seed: bytes,
                     pair_seeds: Mapping[int, bytes], job: Callable[[Session], T],
                     progress_sink: Callable[[int, int, str], None] | None = None,
                     sync: bool = True, limits: StreamLimits = UNLIMITED,
                     on_phase: PhaseHook | None = None) -> PartyOutcome[T]:
    """Offline, barrier, online, the plan used up, bye (see the module docstring); the
    dealer's material streams within `limits` (parties/offline.py). `on_phase(name, extra)`
    is told when "offline" (the prefetch; extra: in_bytes, the payload read) and "online"
    end (for progress displays)."""
    counters.set_phase("offline")
    prepared = StreamedCorrelations(channel, counters, registry, cfg.dealer_id, party_id,
                                    cfg.n_parties, dealer_seed, limits)
    prepared.prefetch()
    if on_phase is not None:
        on_phase("offline", {"in_bytes": prepared.read_bytes})
    counters.set_phase("setup")
    if sync:
        barrier(channel, cfg, party_id)
    counters.set_phase("online")
    sess = Session(cfg, party_id, channel, counters, correlations=registry, prepared=prepared,
                   pair_seeds=dict(pair_seeds))
    if progress_sink is not None:
        sess.progress_sink = progress_sink
    start = time.perf_counter()
    read_before = prepared.read_s
    result = job(sess)
    online_s = time.perf_counter() - start - (prepared.read_s - read_before)
    counters.set_phase("setup")
    if on_phase is not None:
        on_phase("online", {})
    if prepared.remaining:
        raise RuntimeError(f"the job left {prepared.remaining} planned correlations unused")
    if sync:
        channel.send(cfg.dealer_id, "bye", "bye")  # the dealer ends well only after every bye
    counters.finish()
    return PartyOutcome(result, prepared.read_s, online_s, prepared.stats())


def run_dealer_phases(channel: FramedChannel, counters: Counters, cfg: RunConfig,
                      registry: CorrelationRegistry, plan: Sequence[tuple[str, Params]],
                      seeds: Sequence[bytes], sync: bool = True,
                      windows: Sequence[int] | None = None,
                      on_phase: PhaseHook | None = None) -> tuple[list[int], float]:
    """Deal `plan` with one seed per party, then wait for every party's bye (a party that
    fails aborts; one that dies is noticed by the channel), within the `windows` the parties
    granted (None: no flow control). Returns each request's payload bytes and the seconds
    the dealing took. `on_phase("offline", {})` is told when the plan is dealt, and
    `on_phase("online", {})` when every party said bye."""
    counters.set_phase("offline")
    start = time.perf_counter()
    flow = None if windows is None else PartyWindows(channel, windows, max(BYE_WAIT_S, cfg.timeout_s))
    stream = DealerStream(channel, registry, seeds, flow)
    request_bytes = stream.send_plan(plan)
    deal_s = time.perf_counter() - start
    counters.set_phase("setup")
    if on_phase is not None:
        on_phase("offline", {})
    stream.finish()
    for party in range(cfg.n_parties if sync else 0):
        channel.recv(party, "bye", "bye", timeout_s=max(BYE_WAIT_S, cfg.timeout_s))
    counters.finish()
    if on_phase is not None:
        on_phase("online", {})
    return request_bytes, deal_s
