"""Truncation of shared fixed-point values: x -> x / 2^s (s = f after a product).

`truncate` picks the method from the run config: "exact" (2 parties: the local shift plus
its wrap bit, 1 round of 1 bit per element), "local" (2 parties, 0 rounds, rare failures)
or "dealer" (any n, 1 round of 8 bytes per element). All return floor(x / 2^s) + delta with
delta in {0, 1} and P[delta = 1] = frac(x / 2^s) over the randomness of the shares (an
unbiased stochastic rounding, error < 1 LSB), except for the local method's wrap failures
described below (docs/arithmetic.md section 5).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from privit.parties.prg import Prg
from privit.parties.session import Params, Session
from privit.protocols import ring
from privit.protocols.correlations import owned_tensor
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
    """Shares of x / 2^bits (default bits = f) by cfg.truncation: "exact" (2 parties,
    `truncate_exact_many`, ROUNDS 1), "local" (2 parties, ROUNDS 0) or "dealer" (ROUNDS 1)."""
    bits = sess.frac_bits if bits is None else bits
    if sess.n == 2 and sess.cfg.truncation == "exact":
        return truncate_exact_many(sess, [x], [bits], label="truncate")[0]
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


# -- exact two-party truncation: the local shift plus its wrap, from the shares' MSBs ------

TRUNC_WRAP = "trunc_wrap"


def _wrap_params(params: Params) -> tuple[int, int]:
    if (len(params) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) for p in params)
            or not 1 <= params[0] <= DEALER_OFFSET_BITS or params[1] < 0):
        raise ValueError(f"{TRUNC_WRAP}: params are (bits in [1, {DEALER_OFFSET_BITS}], "
                         f"N >= 0), got {params!r}")
    return int(params[0]), int(params[1])


def wrap_share_dtype(bits: int) -> np.dtype:
    """The smallest unsigned container of a share mod 2^bits (what party 1 receives)."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if bits <= 8 * np.dtype(dtype).itemsize:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


class TruncWrap:
    """`trunc_wrap`: the material of `truncate_exact_many`, 2 parties.

    A random bit alpha known to party 0, a random bit beta known to party 1, and additive
    shares mod 2^bits of alpha * beta. Draw order: party 0 alpha (N bytes, low bit), then
    its share g0 (N containers of `wrap_share_dtype(bits)`, low bits); party 1 beta (N bytes,
    low bit). Party 1 receives g1 = alpha beta - g0 mod 2^bits: OFFLINE N * itemsize bytes
    (2 B per element at bits 9..16), to party 1 only. Material: "flip" (N,) uint8 and
    "g" (N,) in that container (a party holds 3 B per element at bits 9..16).
    """

    name = TRUNC_WRAP

    @staticmethod
    def _draw(prg: Prg, party: int, bits: int, n: int) -> dict[str, np.ndarray]:
        out = {"flip": prg.bytes(n) & np.uint8(1)}
        if party == 0:
            dtype = wrap_share_dtype(bits)
            out["g"] = prg.bytes(n * dtype.itemsize).view(dtype) & dtype.type((1 << bits) - 1)
        return out

    def deal(self, params: Params, prgs: Sequence[Prg]) -> list[list[np.ndarray]]:
        bits, n = _wrap_params(params)
        if len(prgs) != 2:
            raise NotImplementedError(f"{TRUNC_WRAP}: 2 parties only")
        p0, p1 = (self._draw(prg, party, bits, n) for party, prg in enumerate(prgs))
        dtype = wrap_share_dtype(bits)
        g1 = (p0["flip"] & p1["flip"]).astype(dtype) - p0["g"]
        return [[], [g1 & dtype.type((1 << bits) - 1)]]

    def expand(self, params: Params, party: int, n_parties: int, prg: Prg,
               payload: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        bits, n = _wrap_params(params)
        if n_parties != 2:
            raise NotImplementedError(f"{TRUNC_WRAP}: 2 parties only")
        drawn = self._draw(prg, party, bits, n)
        dtype = wrap_share_dtype(bits)
        if party == 1:
            if len(payload) != 1 or payload[0].dtype != dtype or payload[0].shape != (n,):
                got = [f"{a.dtype}{list(a.shape)}" for a in payload]
                raise ValueError(f"{TRUNC_WRAP}: party 1's payload is {got}, "
                                 f"expected [{dtype}[{n}]]")
            drawn["g"] = payload[0]
        elif payload:
            raise ValueError(f"{TRUNC_WRAP}: party 0 gets no payload, got {len(payload)} arrays")
        return {name: owned_tensor(value) for name, value in drawn.items()}

    def zeros(self, params: Params) -> dict[str, torch.Tensor]:
        _wrap_params(params)
        return {}


def truncate_exact_many(sess: Session, xs: Sequence[torch.Tensor], widths: Sequence[int],
                        label: str = "truncate_exact") -> list[torch.Tensor]:
    """Shares of x_i / 2^s_i for every x_i (|x_i| < 2^62, s_i in [1, 62]), 2 parties, with
    no failure: the local shift of `truncate_local` plus the wrap it misses, in ONE round.

    Steps (party i; u_0 = x_0 + 2^62, u_1 = x_1, read in [0, 2^64)):
    1. m_i = MSB(u_i); send m_i xor flip_i (one bit per element, packed, every x_i in ONE
       message), so e = m_0 xor alpha and d = m_1 xor beta are public;
    2. shares of m_0 m_1 mod 2^s from the `trunc_wrap` material: party 0
       t_0 = e d + d alpha (1 - 2e) + g_0 (1 - 2e)(1 - 2d), party 1
       t_1 = e beta (1 - 2d) + g_1 (1 - 2e)(1 - 2d)  (m_0 = e + alpha (1 - 2e), likewise m_1);
    3. party i outputs (u_i >>_arith s) + t_i 2^(64-s); party 0 adds -2^(62-s), party 1
       adds [u_1 mod 2^s != 0] (the ceiling of `truncate_local`'s party 1).
    ROUNDS 1, BYTES per party H + ceil(sum N_i / 8), OFFLINE N_i * itemsize to party 1
    (`TruncWrap`: 1 B per element at s <= 8, 2 B at s <= 16, 4 B at s <= 32, else 8).

    Proof. u = x + 2^62 lies in [0, 2^63). As integers u_0 + u_1 = u + w 2^64 with
    w = m_0 OR m_1: both MSBs 0 gives a sum below 2^64; both 1 a sum of at least 2^64; one of
    them 1 a sum in [2^63, 2^64 + 2^63) whose residue u is below 2^63, so the sum is at least
    2^64. Hence w = m_0 + m_1 - m_0 m_1. With c the carry out of the low s bits of u_0 + u_1,
    floor(u_0/2^s) + floor(u_1/2^s) = floor(u/2^s) + w 2^(64-s) - c, and the arithmetic
    shift is floor(u_i/2^s) - m_i 2^(64-s). So the outputs sum to floor(u/2^s) - 2^(62-s)
    + delta = floor(x/2^s) + delta with delta = [u_1 mod 2^s != 0] - c. Over the uniform
    low bits l_0 of u_0 (l_1 = (l - l_0) mod 2^s, l = u mod 2^s): c = [l_0 > l] and
    [l_1 != 0] = [l_0 != l], so delta is 1 exactly when l_0 < l, else 0: P[delta = 1] =
    l / 2^s, the unbiased stochastic rounding of the other methods. Every step is an
    identity mod 2^64: no failure probability.
    Security: e and d are MSBs masked by bits the other party never sees. As with local
    truncation (and unlike the dealer pair, whose delta depends on the dealer's r), the
    rounding delta = [x_0 mod 2^s < x mod 2^s] is a function of party 0's share: were a
    truncated value ever opened to party 0 unmasked, it would learn one bit about the low
    bits dropped. privit opens to party 0 only masked values (Beaver, comparisons), and the
    result to party 1, which does not know x_0.
    """
    if sess.n != 2:
        raise ValueError("exact truncation (trunc_wrap) is for 2 parties; use the dealer pair")
    if len(xs) != len(widths):
        raise ValueError(f"{len(widths)} truncation widths for {len(xs)} tensors")
    widths = [int(w) for w in widths]
    for w in widths:
        _check_bits(w)
    if not xs:
        return []
    xs = [ring.as_ring(x) for x in xs]
    mats = [sess.correlation(TRUNC_WRAP, (w, x.numel())) for x, w in zip(xs, widths, strict=True)]
    me = sess.party_id
    us = [x + ring.pow2(DEALER_OFFSET_BITS) if me == 0 else x for x in xs]
    if sess.is_tracing:
        return [ring.arith_rshift(u, w) for u, w in zip(us, widths, strict=True)]
    flat = [u.reshape(-1).numpy().view(np.uint64) for u in us]
    masked = np.concatenate([(f >> np.uint64(63)).astype(np.uint8) ^ mat["flip"].numpy()
                             for f, mat in zip(flat, mats, strict=True)])
    packed = np.packbits(masked, bitorder="little")
    sess.send(1 - me, packed, label)
    theirs = sess.recv(1 - me, label, packed.shape, torch.uint8).numpy()
    other = np.unpackbits(theirs, count=masked.size, bitorder="little")
    out, offset = [], 0
    for u, f, w, mat in zip(us, flat, widths, mats, strict=True):
        n = f.size
        mine_e, their_e = masked[offset:offset + n], other[offset:offset + n]
        offset += n
        t = _wrap_share(me, mine_e, their_e, mat["flip"].numpy(), mat["g"].numpy())
        t = t.astype(np.uint64) << np.uint64(ring.RING_BITS - w)
        shifted = ring.arith_rshift(u, w).reshape(-1).numpy().view(np.uint64)
        t += shifted
        if me == 0:
            t -= np.uint64(1 << (DEALER_OFFSET_BITS - w))
        else:
            t += (f & np.uint64((1 << w) - 1)) != 0
        out.append(torch.from_numpy(t.view(np.int64)).reshape(u.shape))
    return out


def _wrap_share(me: int, mine: np.ndarray, theirs: np.ndarray, flip: np.ndarray,
                g: np.ndarray) -> np.ndarray:
    """Step 2 of `truncate_exact_many`: this party's share t_i of m_0 m_1 mod 2^s (a fresh
    array in g's container; only its low s bits matter). mine / theirs: the opened bits this
    party sent / received (uint8 0/1), flip: its own mask bits, g: its share of alpha beta."""
    e, d = (mine, theirs) if me == 0 else (theirs, mine)
    t = g.copy()
    np.negative(t, out=t, where=(e ^ d).view(np.bool_))  # g (1 - 2e)(1 - 2d)
    # party 0: e d + d alpha (1 - 2e); party 1: e beta (1 - 2d): a term in {-1, 0, 1}
    if me == 0:
        t += e & d
        hit, sign_bit = d & flip, e
    else:
        hit, sign_bit = e & flip, d
    t += hit
    t -= (hit & sign_bit).astype(t.dtype) << t.dtype.type(1)
    return t
