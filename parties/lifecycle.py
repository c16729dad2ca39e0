"""The phases every role goes through after its handshake, shared by the role processes
(launch/roles.py) and the in-memory runner for tests (parties/inmemory_run.py), so that
both count the same bytes and rounds in the same phases.

Party: 1. offline: receive and expand the dealer's plan up to the party's streaming limits
(phase `offline`; parties/offline.py); 2. a barrier with the other parties (`setup`); 3.
online: the job on a `Session` (`online`), reading the rest of the plan as it needs it
(counted in `offline`); 4. every planned correlation must have been used; 5. a `bye` to
the dealer (`setup`). With preprocessed material (parties/material.py) the chunks come
from the party's file instead and the dealer takes no part (no bye); a preprocess run's
party does step 1 only, writing the chunks to its file (`record_party_material`).
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
from privit.parties.material import MaterialError, MaterialFile, MaterialWriter, record_material
from privit.parties.offline import (
    UNLIMITED,
    ChunkSource,
    DealerChunks,
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
    those read during the online phase), prefetch_s the part before the online phase,
    online_s the online phase less this party's own reading."""

    result: T
    offline_s: float
    online_s: float
    stream: dict[str, int | None]
    prefetch_s: float = 0.0


def barrier(channel: FramedChannel, cfg: RunConfig, party_id: int,
            material_id: str | None = None) -> None:
    """Every party tells every other it is ready, then waits for theirs (one round). With
    preprocessed material each names its file's material id and a peer naming another
    (or none) is refused: files of two preprocess runs must not be mixed."""
    others = [p for p in range(cfg.n_parties) if p != party_id]
    meta = None if material_id is None else {"material_id": material_id}
    for p in others:
        channel.send(p, "data", "barrier", meta=meta)
    for p in others:
        theirs = (channel.recv(p, "data", "barrier").meta or {}).get("material_id")
        if theirs != material_id:
            raise MaterialError(
                f"party {p}'s material is not from the same preprocess run as party "
                f"{party_id}'s (material id {str(theirs)[:12]} there, {str(material_id)[:12]} "
                f"here; None: streamed from the dealer)")


def run_party_phases(channel: FramedChannel, counters: Counters, cfg: RunConfig, party_id: int,
                     registry: CorrelationRegistry, dealer_seed: bytes,
                     pair_seeds: Mapping[int, bytes], job: Callable[[Session], T],
                     progress_sink: Callable[[int, int, str], None] | None = None,
                     sync: bool = True, limits: StreamLimits = UNLIMITED,
                     material: MaterialFile | None = None,
                     on_phase: PhaseHook | None = None) -> PartyOutcome[T]:
    """Offline, barrier, online, the plan used up, bye (see the module docstring); the
    dealer's material streams within `limits` (parties/offline.py). `material`: read it
    from this preprocessed file (parties/material.py, checked by the caller) instead: the
    ids compared at the barrier, the file claimed before the online phase, no bye.
    `on_phase(name, extra)` is told when "offline" (the prefetch; extra: in_bytes, the
    payload read) and "online" end (for progress displays)."""
    counters.set_phase("offline")
    source: ChunkSource = (material if material is not None
                           else DealerChunks(channel, counters, registry, cfg.dealer_id, limits))
    prepared = StreamedCorrelations(source, counters, registry, party_id, cfg.n_parties,
                                    dealer_seed, limits)
    prepared.prefetch()
    if on_phase is not None:
        on_phase("offline", {"in_bytes": prepared.read_bytes})
    counters.set_phase("setup")
    if sync:
        barrier(channel, cfg, party_id, material.header.material_id if material else None)
    if material is not None:
        material.claim()
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
    if sync and material is None:
        channel.send(cfg.dealer_id, "bye", "bye")  # the dealer ends well only after every bye
    counters.finish()
    return PartyOutcome(result, prepared.read_s, online_s, prepared.stats(), read_before)


def record_party_material(channel: FramedChannel, counters: Counters, cfg: RunConfig,
                          registry: CorrelationRegistry, writer: MaterialWriter,
                          sync: bool = True, limits: StreamLimits = UNLIMITED) -> float:
    """A preprocess run's party: its offline phase only, every chunk the dealer sends
    written to `writer` (parties/material.py) as it comes, then the bye. Returns the
    seconds it took. The dealer runs as for an online run."""
    counters.set_phase("offline")
    start = time.perf_counter()
    record_material(DealerChunks(channel, counters, registry, cfg.dealer_id, limits), writer)
    elapsed = time.perf_counter() - start
    counters.set_phase("setup")
    if sync:
        channel.send(cfg.dealer_id, "bye", "bye")
    counters.finish()
    return elapsed


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
