"""The offline phase: the dealer sends each party its correction payloads, streamed.

Steps:
1. The dealer traces the job (`Session.tracing`) and gets the plan: the ordered list of
   (kind, params) correlation requests, identical for every party.
2. For request r it seeds one `Prg(seed_i, stream=r)` per party i and calls
   `kind.deal(params, prgs)`, which returns the arrays each party must receive.
3. Requests are packed into chunks (a few hundred requests or ~8 MB of arrays); each chunk
   is one 'corr' message per party whose meta lists [kind, params, number of arrays]
   for every request in it, so a party learns the plan with its payloads. A final chunk
   with an empty list and `end: true` closes the phase.
4. Each party expands requests with its own PRG (the same streams) and its payload, into
   prepared tensors that the online phase reads in plan order.

Streaming and memory (`StreamLimits`): in its hello (parties/handshake.py) each party
grants the dealer a window of payload bytes; the dealer never has more than that sent to
a party and not yet read by it (the party acknowledges each chunk it reads with an 'ack'
carrying its running total of payload bytes read). A party prepares material ahead of use
only up to its `held_bytes`: before the online phase it expands requests (reading chunks
as needed) until that much is prepared (everything, for a plan that fits) and then,
during the online phase, expands the next request (and reads the next chunk) when the job
asks for one it does not hold yet. So a party's memory for dealer material is bounded by
window + held + one request + one chunk's payload whatever the model size. The dealer,
which deals while the parties compute, holds one chunk, one request's `deal` arrays and
what its parties' windows let through (as the network emulation's copies, or frames
ZeroMQ has not sent yet); its own budget is not applied, and its peak is mostly the trace
of step 1 (docs/design.md, step 3, "The dealer's own memory"). Time and rounds spent
reading chunks during the online phase are counted in the `offline` phase; acks are flow
control, counted in `setup` like the barrier. A party with an unbounded window (the
in-memory runner's default) sends no acks and reads the whole plan before its online
phase. The result is the same material in the same order whatever the limits: the same
logits, online bytes and rounds.

Preprocessed material (parties/material.py): a party's chunks may come from a file written
by an earlier preprocess run instead of the dealer (a `ChunkSource`); expansion, limits and
counting are the same.

Deadlock freedom: the dealer sends chunks in plan order to party 0, 1, ..., so it can be
blocked on one party's window only while that party has unread chunks, i.e. while it is at
most one protocol step behind the others. A window that holds one step's material and a
chunk keeps the others supplied: the dealer refuses (with the figures) a request whose
payload exceeds half of a party's window, and a window is at least MIN_WINDOW_BYTES.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from privit.parties.channel import FramedChannel, PeerError
from privit.parties.counters import Counters
from privit.parties.prg import Prg
from privit.parties.session import CorrelationRegistry, Params, PreparedCorrelations
from privit.parties.wire import MAX_ARRAYS

if TYPE_CHECKING:
    import torch

CHUNK_REQUESTS = 256
CHUNK_BYTES = 8 << 20
MIN_WINDOW_BYTES = 4 * CHUNK_BYTES
UNBOUNDED = 1 << 62


@dataclass(frozen=True)
class StreamLimits:
    """How far a party lets dealer material run ahead of its use (see the module docstring).

    window_bytes: payload bytes the dealer may have sent to this party and it not yet read.
    held_bytes: expanded material the party prepares ahead of the request being used.
    """

    window_bytes: int = UNBOUNDED
    held_bytes: int = UNBOUNDED

    def __post_init__(self) -> None:
        if self.window_bytes < MIN_WINDOW_BYTES:
            raise ValueError(f"a dealer window of {self.window_bytes / 2**20:.0f} MB is below the "
                             f"minimum of {MIN_WINDOW_BYTES / 2**20:.0f} MB (4 chunks); raise "
                             f"--max-buffer-mb or --memory-budget-mb")
        if self.held_bytes < 0:
            raise ValueError(f"held_bytes must be >= 0, got {self.held_bytes}")

    @staticmethod
    def for_budget(budget_bytes: int, in_use_bytes: int) -> StreamLimits:
        """Limits that keep a party within `budget_bytes` of resident memory when it already
        uses or will hold `in_use_bytes` (interpreter, libraries, weights, what its job
        reserves, its online working set among them): of what is left, a quarter for the
        window, half for prepared material, a quarter for slack.
        A budget that leaves less than the minimum window is refused with both figures."""
        free = budget_bytes - in_use_bytes
        if free // 4 < MIN_WINDOW_BYTES:
            raise ValueError(
                f"memory budget of {budget_bytes / 2**20:.0f} MB is too small: this role already "
                f"uses or reserves {in_use_bytes / 2**20:.0f} MB and streaming needs at least "
                f"{(in_use_bytes + 4 * MIN_WINDOW_BYTES) / 2**20:.0f} MB (--memory-budget-mb)")
        return StreamLimits(window_bytes=free // 4, held_bytes=free // 2)


UNLIMITED = StreamLimits()
"""No streaming: a party reads and expands the whole plan before its online phase."""


def _material_bytes(material: dict[str, Any]) -> int:
    return sum(int(t.numel()) * t.element_size() for t in material.values())


# -- dealer -------------------------------------------------------------------------------
class PartyWindows:
    """The dealer's view of each party's window: what it sent and what the party read.
    `windows` are what the parties granted (in their hellos); `wait_s` bounds the wait for
    an ack (a party computing online may take long to read its next chunk)."""

    def __init__(self, channel: FramedChannel, windows: Sequence[int], wait_s: float) -> None:
        self.channel, self.wait_s = channel, wait_s
        self.window = list(windows)
        self.sent = [0] * len(self.window)
        self.read = [0] * len(self.window)

    def _ack(self, party: int) -> None:
        meta = self.channel.recv(party, "corr", "ack", timeout_s=self.wait_s).meta or {}
        read = meta.get("read")
        if not (isinstance(read, int) and not isinstance(read, bool)
                and self.read[party] < read <= self.sent[party]):
            raise PeerError(f"party {party} acknowledged {read!r:.40} bytes; "
                            f"{self.read[party]} < read <= {self.sent[party]} expected")
        self.read[party] = read

    def check_fits(self, r: int, kind: str, nbytes: Sequence[int]) -> None:
        """Refuse a request whose payload would take more than half a party's window: the
        window must hold one protocol step's material and a chunk besides, or the parties
        could wait on each other while the dealer waits on a window (module docstring)."""
        for party, size in enumerate(nbytes):
            if 2 * size > self.window[party]:
                raise ValueError(
                    f"request {r} ({kind}) gives party {party} {size / 2**20:.0f} MB of material, "
                    f"more than half of the {self.window[party] / 2**20:.0f} MB window it "
                    f"granted; raise its --memory-budget-mb")

    def make_room(self, party: int, nbytes: int) -> None:
        """Wait until `nbytes` more fit in the party's window (a lone chunk always fits)."""
        while self.sent[party] > self.read[party] and \
                self.sent[party] - self.read[party] + nbytes > self.window[party]:
            self._ack(party)

    def drain(self) -> None:
        """Wait until every party with a bounded window has read everything sent to it."""
        for party in range(len(self.sent)):
            while self.window[party] < UNBOUNDED and self.read[party] < self.sent[party]:
                self._ack(party)


class DealerStream:
    """Deals a plan chunk by chunk within each party's window (steps 2-3); `windows` None
    sends without flow control (a channel that only counts, in tests)."""

    def __init__(self, channel: FramedChannel, registry: CorrelationRegistry,
                 seeds: Sequence[bytes], windows: PartyWindows | None) -> None:
        self.channel, self.registry, self.seeds = channel, registry, list(seeds)
        self.windows = windows

    def send_plan(self, plan: Sequence[tuple[str, Params]]) -> list[int]:
        """Deal every request of `plan`; returns the payload bytes of each request (all
        parties together), so that a report can attribute offline traffic to its scope."""
        n = len(self.seeds)
        request_bytes: list[int] = []
        r0 = 0
        per_party: list[list[Any]] = [[] for _ in range(n)]
        payloads: list[list[np.ndarray]] = [[] for _ in range(n)]
        size = 0
        for r, (kind, params) in enumerate(plan):
            prgs = [Prg(seed, r) for seed in self.seeds]
            dealt = self.registry[kind].deal(params, prgs)
            if len(dealt) != n:
                raise ValueError(f"{kind}.deal returned payloads for {len(dealt)} parties, expected {n}")
            request_bytes.append(sum(a.nbytes for arrays in dealt for a in arrays))
            if self.windows is not None:
                self.windows.check_fits(r, kind, [sum(a.nbytes for a in arrays) for arrays in dealt])
            # Close the chunk before this request if it is full, or if this request's arrays
            # would take a message past the wire's MAX_ARRAYS.
            full = (len(per_party[0]) >= CHUNK_REQUESTS or size >= CHUNK_BYTES
                    or any(len(payloads[p]) + len(dealt[p]) > MAX_ARRAYS for p in range(n)))
            if per_party[0] and full:
                self._send_chunk(r0, per_party, payloads, end=False)
                r0 = r
                per_party = [[] for _ in range(n)]
                payloads = [[] for _ in range(n)]
                size = 0
            for party in range(n):
                per_party[party].append((kind, params, dealt[party]))
                payloads[party].extend(dealt[party])
                size += sum(a.nbytes for a in dealt[party])
        self._send_chunk(r0, per_party, payloads, end=True)
        return request_bytes

    def _send_chunk(self, r0: int, per_party: list[list[Any]], payloads: list[list[np.ndarray]],
                    end: bool) -> None:
        for party, entries in enumerate(per_party):
            nbytes = sum(a.nbytes for a in payloads[party])
            if self.windows is not None:
                self.windows.make_room(party, nbytes)
            plan = [[kind, list(params), len(arrays)] for kind, params, arrays in entries]
            self.channel.send(party, "corr", "corr", payloads[party],
                              meta={"r0": r0, "plan": plan, "end": end})
            if self.windows is not None:
                self.windows.sent[party] += nbytes

    def finish(self) -> None:
        """Wait until every party has read the whole plan (it may do so late in its online
        phase: the wait is as long as the parties' lives, like the wait for their bye)."""
        if self.windows is not None:
            self.windows.drain()


# -- party --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    """One chunk of the plan as a party reads it: requests r0, r0+1, ... each with its
    kind, params and payload arrays; `end` closes the plan; `nbytes` is its payload."""

    r0: int
    entries: list[tuple[str, Params, Sequence[np.ndarray]]]
    end: bool
    nbytes: int


class ChunkSource(Protocol):
    """Where a party's chunks come from: the dealer (`DealerChunks`), or a material file
    written ahead of the run (parties/material.py)."""

    def read_chunk(self) -> Chunk: ...


def _check_entry(entry: Any, registry: CorrelationRegistry) -> tuple[str, Params, int]:
    if not (isinstance(entry, list) and len(entry) == 3):
        raise PeerError(f"dealer sent a malformed plan entry {entry!r:.80}")
    kind, params, count = entry
    if not isinstance(kind, str) or kind not in registry:
        raise PeerError(f"dealer planned an unknown correlation kind {kind!r:.40}")
    if not isinstance(params, list) or not all(
        isinstance(p, (int, str)) and not isinstance(p, bool) for p in params
    ):
        raise PeerError(f"dealer sent malformed parameters for {kind}: {params!r:.80}")
    if not isinstance(count, int) or count < 0:
        raise PeerError(f"dealer sent a bad array count for {kind}: {count!r}")
    return kind, tuple(params), count


def split_chunk(meta: Any, arrays: Sequence[np.ndarray], registry: CorrelationRegistry,
                expected_r0: int) -> Chunk:
    """A chunk from its meta ({r0, plan, end}) and its arrays, every field checked."""
    meta = meta if isinstance(meta, dict) else {}
    entries, r0, end = meta.get("plan"), meta.get("r0"), meta.get("end")
    if not isinstance(entries, list) or r0 != expected_r0 or not isinstance(end, bool):
        raise PeerError(f"dealer sent a malformed offline chunk (r0={r0!r}, have {expected_r0})")
    out: list[tuple[str, Params, Sequence[np.ndarray]]] = []
    offset = 0
    for i, entry in enumerate(entries):
        kind, params, count = _check_entry(entry, registry)
        payload = arrays[offset:offset + count]
        if len(payload) != count:
            raise PeerError(f"dealer's chunk at request {expected_r0 + i} is missing payload arrays")
        offset += count
        out.append((kind, params, payload))
    if offset != len(arrays):
        raise PeerError("dealer's offline chunk carries more arrays than its plan lists")
    return Chunk(expected_r0, out, end, sum(a.nbytes for a in arrays))


class DealerChunks:
    """Chunks read from the dealer's channel, each acknowledged when the party's window is
    bounded (the dealer counts on acks; module docstring)."""

    def __init__(self, channel: FramedChannel, counters: Counters, registry: CorrelationRegistry,
                 dealer_id: int, limits: StreamLimits = UNLIMITED) -> None:
        self.channel, self.counters, self.registry = channel, counters, registry
        self.dealer_id, self.limits = dealer_id, limits
        self.read_bytes = 0  # payload bytes read so far (what the acks carry)
        self._planned = 0

    def read_chunk(self) -> Chunk:
        with self.counters.interlude("offline"):
            msg = self.channel.recv(self.dealer_id, "corr", "corr")
        chunk = split_chunk(msg.meta, msg.arrays, self.registry, self._planned)
        self.read_bytes += chunk.nbytes
        if chunk.nbytes and self.limits.window_bytes < UNBOUNDED:
            with self.counters.interlude("setup"):
                self.channel.send(self.dealer_id, "corr", "ack", meta={"read": self.read_bytes})
        self._planned += len(chunk.entries)
        return chunk


class StreamedCorrelations(PreparedCorrelations):
    """The dealer's material as a party receives it: chunks read from `source` when
    needed, requests expanded one by one ahead of use within `limits` (see the module
    docstring), served in plan order. Expanding per request (not per chunk) keeps the
    prepared material within `held_bytes` plus one request, whatever a chunk would expand
    to. The source is the dealer (`DealerChunks`) or a material file; expansion is the
    same either way (each kind's `expand`, with the party's seed and the request index)."""

    def __init__(self, source: ChunkSource, counters: Counters, registry: CorrelationRegistry,
                 party_id: int, n_parties: int, seed: bytes,
                 limits: StreamLimits = UNLIMITED) -> None:
        super().__init__()
        self.source, self.counters, self.registry = source, counters, registry
        self.party_id, self.n_parties, self.seed = party_id, n_parties, seed
        self.limits = limits
        self.ended = False
        self.read_bytes = 0  # payload bytes read so far
        self.held_bytes = 0  # expanded material prepared and not yet taken
        self.peak_held_bytes = 0
        self.late_chunks = 0  # chunks read during the online phase
        self.read_s = 0.0  # seconds spent reading chunks and expanding requests
        self._planned = 0  # requests listed so far, expanded or not
        # Requests read but not expanded yet: (plan index, kind, params, payload arrays).
        self._pending: deque[tuple[int, str, Params, Sequence[np.ndarray]]] = deque()

    def stats(self) -> dict[str, int | None]:
        """For the party's report: chunks read during the online phase, the most material
        prepared at once, the window granted (None: unbounded), payload bytes read."""
        window = self.limits.window_bytes
        return {"chunks_read_online": self.late_chunks, "peak_prepared_bytes": self.peak_held_bytes,
                "window_bytes": window if window < UNBOUNDED else None,
                "payload_bytes": self.read_bytes}

    def prefetch(self) -> None:
        """Expand requests (reading chunks as needed) until `held_bytes` are prepared or
        the plan has ended."""
        while self.held_bytes < self.limits.held_bytes and (self._pending or not self.ended):
            self._expand_next()

    def take(self, kind: str, params: Params) -> dict[str, torch.Tensor]:
        while self._next >= len(self._items) and (self._pending or not self.ended):
            if not self._pending:
                self.late_chunks += 1
            self._expand_next()
        material = super().take(kind, params)
        self.held_bytes -= _material_bytes(material)
        return material

    @property
    def remaining(self) -> int:
        """Planned requests not yet used; reads (without expanding) what is still unread."""
        while not self.ended:
            self._read_chunk()
        return self._planned - self._next

    def _expand_next(self) -> None:
        start = time.perf_counter()
        with self.counters.interlude("offline"):
            if not self._pending:
                self._read_chunk()
            if self._pending:
                self._expand(*self._pending.popleft())
        self.read_s += time.perf_counter() - start

    def _read_chunk(self) -> None:
        """Read the source's next chunk into the pending requests."""
        chunk = self.source.read_chunk()
        if chunk.r0 != self._planned:
            raise PeerError(f"offline chunk starts at request {chunk.r0}, expected {self._planned}")
        self.read_bytes += chunk.nbytes
        for i, (kind, params, arrays) in enumerate(chunk.entries):
            self._pending.append((chunk.r0 + i, kind, params, arrays))
        self._planned += len(chunk.entries)
        self.ended = chunk.end

    def _expand(self, r: int, kind: str, params: Params, arrays: Sequence[np.ndarray]) -> None:
        try:
            material = self.registry[kind].expand(params, self.party_id, self.n_parties,
                                                  Prg(self.seed, r), arrays)
        except (ValueError, TypeError) as exc:
            raise PeerError(f"dealer's payload for request {r} ({kind}) is invalid: {exc}") from None
        self.add(kind, params, material)
        self.held_bytes += _material_bytes(material)
        self.peak_held_bytes = max(self.peak_held_bytes, self.held_bytes)
