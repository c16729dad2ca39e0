"""The offline phase: the dealer sends each party its correction payloads for the whole plan.

Steps:
1. The dealer traces the job (`Session.tracing`) and gets the plan: the ordered list of
   (kind, params) correlation requests, identical for every party.
2. For request r it seeds one `Prg(seed_i, stream=r)` per party i and calls
   `kind.deal(params, prgs)`, which returns the arrays each party must receive.
3. Requests are packed into chunks (a few hundred requests or ~8 MB of arrays); each chunk
   is one 'corr' message per party whose meta lists [kind, params, number of arrays]
   for every request in it, so a party learns the plan with its payloads. A final chunk
   with an empty list and `end: true` closes the phase.
4. Each party expands every request with its own PRG (the same streams) and its payload,
   before the online phase starts: the online phase only reads prepared tensors.
All of this is counted in the 'offline' phase.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from privit.parties.channel import FramedChannel, PeerError
from privit.parties.prg import Prg
from privit.parties.session import CorrelationRegistry, Params, PreparedCorrelations
from privit.parties.wire import MAX_ARRAYS

CHUNK_REQUESTS = 256
CHUNK_BYTES = 8 << 20


def dealer_send_plan(
    channel: FramedChannel,
    registry: CorrelationRegistry,
    plan: Sequence[tuple[str, Params]],
    seeds: Sequence[bytes],
) -> list[int]:
    """Deal every request of `plan` to the parties whose seeds are `seeds` (steps 2-3).

    Returns the payload bytes of each request (all parties together), so that a report
    can attribute offline traffic to the scope that asked for it.
    """
    n = len(seeds)
    request_bytes: list[int] = []
    r0 = 0
    per_party: list[list[Any]] = [[] for _ in range(n)]
    payloads: list[list[np.ndarray]] = [[] for _ in range(n)]
    size = 0
    for r, (kind, params) in enumerate(plan):
        prgs = [Prg(seed, r) for seed in seeds]
        dealt = registry[kind].deal(params, prgs)
        if len(dealt) != n:
            raise ValueError(f"{kind}.deal returned payloads for {len(dealt)} parties, expected {n}")
        request_bytes.append(sum(a.nbytes for arrays in dealt for a in arrays))
        # Close the chunk before this request if it is full, or if this request's arrays
        # would take a message past the wire's MAX_ARRAYS.
        full = (len(per_party[0]) >= CHUNK_REQUESTS or size >= CHUNK_BYTES
                or any(len(payloads[p]) + len(dealt[p]) > MAX_ARRAYS for p in range(n)))
        if per_party[0] and full:
            _send_chunk(channel, n, r0, per_party, payloads, end=False)
            r0 = r
            per_party = [[] for _ in range(n)]
            payloads = [[] for _ in range(n)]
            size = 0
        for party in range(n):
            per_party[party].append((kind, params, dealt[party]))
            payloads[party].extend(dealt[party])
            size += sum(a.nbytes for a in dealt[party])
    _send_chunk(channel, n, r0, per_party, payloads, end=True)
    return request_bytes


def _send_chunk(channel: FramedChannel, n: int, r0: int, per_party: list[list[Any]],
                payloads: list[list[np.ndarray]], end: bool) -> None:
    for party in range(n):
        entries = [[kind, list(params), len(arrays)] for kind, params, arrays in per_party[party]]
        channel.send(party, "corr", "corr", payloads[party],
                     meta={"r0": r0, "plan": entries, "end": end})


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


def party_receive_plan(
    channel: FramedChannel,
    registry: CorrelationRegistry,
    dealer_id: int,
    party_id: int,
    n_parties: int,
    seed: bytes,
) -> PreparedCorrelations:
    """Receive every chunk from the dealer and expand it (step 4)."""
    prepared = PreparedCorrelations()
    while True:
        msg = channel.recv(dealer_id, "corr", "corr")
        meta = msg.meta or {}
        entries, r0, end = meta.get("plan"), meta.get("r0"), meta.get("end")
        if not isinstance(entries, list) or r0 != len(prepared) or not isinstance(end, bool):
            raise PeerError(f"dealer sent a malformed offline chunk (r0={r0!r}, have {len(prepared)})")
        offset = 0
        for i, entry in enumerate(entries):
            kind, params, count = _check_entry(entry, registry)
            arrays = msg.arrays[offset:offset + count]
            if len(arrays) != count:
                raise PeerError(f"dealer's chunk at request {r0 + i} is missing payload arrays")
            offset += count
            try:
                material = registry[kind].expand(params, party_id, n_parties, Prg(seed, r0 + i), arrays)
            except (ValueError, TypeError) as exc:
                raise PeerError(f"dealer's payload for request {r0 + i} ({kind}) is invalid: {exc}") from None
            prepared.add(kind, params, material)
        if offset != len(msg.arrays):
            raise PeerError("dealer's offline chunk carries more arrays than its plan lists")
        if end:
            return prepared
