"""Truncation of shared fixed-point values: x -> x / 2^s (s = f after a product).

`truncate` picks the method from the run config: "local" (2 parties only) or "dealer".
Both return floor(x / 2^s) + delta with delta in {0, 1} and P[delta = 1] = frac(x / 2^s)
over the randomness of the shares (an unbiased stochastic rounding, error < 1 LSB), except
for the local method's rare wrap failures described below.
"""
from __future__ import annotations

import torch

from privit.parties.session import Session
from privit.protocols import ring
from privit.protocols.sharing import open_all

DEALER_OFFSET_BITS = 62


def truncate_local(sess: Session, x: torch.Tensor, bits: int) -> torch.Tensor:
    """SecureML local truncation (Mohassel & Zhang, S&P 2017, Thm. 1), 2 parties only.

    Steps: 1. party 0: x_0 >> s (arithmetic); 2. party 1: -((-x_1) >> s).
    ROUNDS 0, BYTES 0, no dealer material.

    Analysis (x_0 uniform, x_1 = x - x_0, both read as signed 64-bit): if x_0 + x_1 = x
    holds over the integers (no wrap), floor(x_0 / 2^s) + ceil(x_1 / 2^s) = floor(x / 2^s)
    + delta, delta in {0, 1}: at most one LSB off. The integer sum wraps (x_0 + x_1 =
    x -+ 2^64) exactly when x_0 falls in an interval of |x| values, i.e. with probability
    |x| / 2^64 per element (SecureML bounds it by 2^(l_x + 1 - 64) for |x| < 2^l_x); the
    result is then off by 2^(64-s), a failure. For f = 16 and a product of two values
    below 2^10 in real units, |x| < 2^52 and P[failure] < 2^-12 per element.
    """
    if sess.n != 2:
        raise ValueError("local truncation is only correct for 2 parties")
    _check_bits(bits)
    x = ring.as_ring(x)
    if sess.party_id == 0:
        return ring.arith_rshift(x, bits)
    return -ring.arith_rshift(-x, bits)


def truncate_dealer(sess: Session, x: torch.Tensor, bits: int) -> torch.Tensor:
    """Dealer truncation pair without wrap failure, any number of parties, |x| < 2^62.

    The positive offset follows Catrina & de Hoogh (FC 2010); the wrap correction from
    MSB(r) and MSB(c) follows Escudero et al. (CRYPTO 2020), here with a dealer:

    1. Dealer (`trunc_pair`): shares of r uniform in Z_2^64, of r >> s (logical) and
       of MSB(r).
    2. Open c = x + 2^62 + r (party 0 adds 2^62).
    3. Party i outputs -(r >> s)_i + (1 - MSB(c)) * MSB(r)_i * 2^(64-s); party 0 adds
       (c >>_logical s) - 2^(62-s).

    ROUNDS 1. BYTES per party: (n-1) * (H + 8 numel) online; OFFLINE 16 numel bytes to
    party n-1 (r >> s and MSB(r) corrections), 0 to the others.

    Proof. Let u = x + 2^62, an integer in [0, 2^63) because |x| < 2^62; read r and c as
    integers in [0, 2^64). Then c = u + r - w 2^64 with a wrap bit w. If MSB(r) = 0,
    u + r < 2^64 and w = 0. If MSB(r) = 1, u + r >= 2^63: w = 0 gives c = u + r >= 2^63,
    so MSB(c) = 1, and w = 1 gives c = u + r - 2^64 < 2^63, so MSB(c) = 0. Hence
    w = MSB(r) (1 - MSB(c)), linear in the shared MSB(r) because c is public. Next,
    floor(c / 2^s) - floor(r / 2^s) = floor((u - w 2^64) / 2^s) + delta where delta = 1
    iff the low s bits of u + r carry (P = (u mod 2^s) / 2^s over r), so
    (c >> s) - (r >> s) + w 2^(64-s) = floor(u / 2^s) + delta, and subtracting 2^(62-s)
    (2^s divides 2^62) leaves floor(x / 2^s) + delta. Every step is an identity mod 2^64,
    so there is no failure probability: the result is exact up to one LSB, and unbiased.
    Security: c is x + 2^62 masked by a uniform r; the outputs are fresh shares.
    """
    _check_bits(bits)
    x = ring.as_ring(x)
    mat = sess.correlation("trunc_pair", (bits, *x.shape))
    masked = x + mat["r"]
    if sess.party_id == 0:
        masked = masked + ring.pow2(DEALER_OFFSET_BITS)
    c = open_all(sess, masked, label="truncate")
    keep = 1 - ring.msb(c)
    out = mat["r_msb"] * keep * ring.pow2(ring.RING_BITS - bits) - mat["r_shift"]
    if sess.party_id == 0:
        out += ring.logical_rshift(c, bits) - ring.pow2(DEALER_OFFSET_BITS - bits)
    return out


def truncate(sess: Session, x: torch.Tensor, bits: int | None = None) -> torch.Tensor:
    """Shares of x / 2^bits (default bits = f): local with 2 parties and
    cfg.truncation == "local" (ROUNDS 0), else the dealer pair (ROUNDS 1)."""
    bits = sess.frac_bits if bits is None else bits
    if sess.n == 2 and sess.cfg.truncation == "local":
        return truncate_local(sess, x, bits)
    return truncate_dealer(sess, x, bits)


def mul_public_float(sess: Session, x: torch.Tensor, c: float) -> torch.Tensor:
    """Shares of x * c for a public real c: multiply by encode(c), then `truncate`.
    ROUNDS and BYTES as `truncate`."""
    return truncate(sess, ring.as_ring(x) * ring.encode(c, sess.frac_bits))


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= DEALER_OFFSET_BITS:
        raise ValueError(f"truncation bits must be in [1, {DEALER_OFFSET_BITS}], got {bits}")
