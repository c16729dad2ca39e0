"""Additive secret sharing over Z_2^64: inputs, openings, and local linear operations.

A secret x is held as shares x_0, ..., x_{n-1} (int64 tensors) with x = sum_i x_i mod 2^64.
Linear operations are local (no communication); a public constant is added by party 0
only. Openings send each party's share in one message per peer (STYLE rule 4: several
tensors opened in one step travel together, see `open_many`).

Wire cost of one message carrying e int64 elements: H + 8e bytes, where H is the msgpack
header (about 46-63 bytes, depending on label, shape and sequence number; parties/wire.py).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from privit.parties.session import Session
from privit.protocols import ring


def _shape(shape: Sequence[int] | torch.Size) -> tuple[int, ...]:
    out = tuple(int(d) for d in shape)
    if any(d < 0 for d in out):
        raise ValueError(f"bad shape {out}")
    return out


def share_input(
    sess: Session, owner: int, value: torch.Tensor | None, shape: Sequence[int] | torch.Size
) -> torch.Tensor:
    """Secret-share `value` (an int64 ring tensor known to `owner`) with zero communication.

    Steps:
    1. Every non-owner p draws its share r_p from the PRG it shares with the owner
       (`sess.pair_prg(owner)`, a fresh stream per call).
    2. The owner draws the same r_p for every p from `sess.pair_prg(p)` and keeps
       x_owner = value - sum_p r_p.

    ROUNDS 0, BYTES 0 (online and offline).

    Security (semi-honest, as with any PRG-derived mask): a non-owner's share is the
    output of a PRG keyed by a seed known only to it and the owner, on a stream used for
    this input only, so it is pseudo-random and independent of `value`; the owner's share
    never leaves the owner. So any set of parties not containing the owner (even all
    non-owners together) sees only pseudo-random values. The owner knows every share of
    its own input, which reveals nothing it did not know; protocols built on these shares
    never open an individual share, only values masked by fresh dealer randomness.
    """
    shape = _shape(shape)
    if not 0 <= owner < sess.n:
        raise ValueError(f"input owner {owner} is not a party (n = {sess.n})")
    if sess.party_id != owner:
        return sess.pair_prg(owner).ring(shape)
    if value is None:
        if not sess.is_tracing:
            raise ValueError(f"party {owner} owns this input but passed no value")
        value = torch.zeros(shape, dtype=torch.int64)
    value = ring.as_ring(value)
    if tuple(value.shape) != shape:
        raise ValueError(f"input has shape {tuple(value.shape)}, declared {shape}")
    share = value.clone()
    for p in sess.others:
        share -= sess.pair_prg(p).ring(shape)
    return share


def open_many(sess: Session, xs: Sequence[torch.Tensor], label: str = "open") -> list[torch.Tensor]:
    """Open several shared tensors in ONE message per peer.

    Steps: 1. flatten and concatenate the shares; 2. send them to every other party and
    receive theirs (`sess.exchange`); 3. sum and split.
    ROUNDS 1. BYTES per party: (n-1) messages of H + 8 * sum(numel) bytes, one per peer.
    """
    if not xs:
        return []
    flat = torch.cat([ring.as_ring(x).reshape(-1) for x in xs])
    total = ring.ring_sum(sess.exchange(flat, label))
    out, offset = [], 0
    for x in xs:
        out.append(total[offset:offset + x.numel()].reshape(x.shape))
        offset += x.numel()
    return out


def open_all(sess: Session, x: torch.Tensor, label: str = "open") -> torch.Tensor:
    """Open x to every party.

    Steps: 1. send our share to every other party and receive theirs; 2. sum.
    ROUNDS 1. BYTES per party (n-1) * (H + 8 numel). No dealer material.
    """
    x = ring.as_ring(x)
    return ring.ring_sum(sess.exchange(x.contiguous(), label))


def open_to(
    sess: Session, x: torch.Tensor, receiver: int, label: str = "open_to"
) -> torch.Tensor | None:
    """Open x to `receiver` only; the others get None.

    Steps: 1. every other party sends its share to the receiver; 2. the receiver sums.
    ROUNDS: one message latency on the receiver's path; by the counters' definition the
    receiver counts it as a round only if it has sent since its last wait, the senders
    never (they do not wait). BYTES: each non-receiver sends H + 8 numel to the receiver.
    """
    x = ring.as_ring(x)
    if not 0 <= receiver < sess.n:
        raise ValueError(f"receiver {receiver} is not a party (n = {sess.n})")
    if sess.party_id != receiver:
        sess.send(receiver, x.contiguous(), label)
        return None
    total = x.clone()
    for p in sess.others:
        total += sess.recv(p, label, x.shape)
    return total


# -- local operations (ROUNDS 0, BYTES 0) -----------------------------------------------
def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Shares of x + y (broadcasting)."""
    return ring.as_ring(x) + ring.as_ring(y)


def sub(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Shares of x - y (broadcasting)."""
    return ring.as_ring(x) - ring.as_ring(y)


def neg(x: torch.Tensor) -> torch.Tensor:
    return -ring.as_ring(x)


def add_public(sess: Session, x: torch.Tensor, c: torch.Tensor | int) -> torch.Tensor:
    """Shares of x + c for a public ring value c: party 0 adds it, the others keep theirs
    (broadcast to the common shape on every party so that shapes agree)."""
    x, public = ring.as_ring(x), ring.as_ring(c)
    if sess.party_id == 0:
        return x + public
    return x.expand(ring.broadcast_shape(x.shape, public.shape)).clone()


def mul_public(x: torch.Tensor, c: torch.Tensor | int) -> torch.Tensor:
    """Shares of x * c mod 2^64 for a public integer (or int64 tensor) c; no truncation.
    For a fixed-point c use `truncation.mul_public_float`."""
    return ring.as_ring(x) * ring.as_ring(c)


def encode_public(sess: Session, value: torch.Tensor | float) -> torch.Tensor:
    """A public real value (or tensor) in the session's fixed point."""
    return ring.encode(value, sess.frac_bits)


def share_public(sess: Session, value: torch.Tensor | int) -> torch.Tensor:
    """A sharing of a public ring value: party 0 holds it, the others hold 0."""
    public = ring.as_ring(value)
    return public.clone() if sess.party_id == 0 else torch.zeros_like(public)


def reconstruct(shares: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum every party's share (for tests and reports outside the protocol)."""
    return ring.ring_sum(list(shares))
