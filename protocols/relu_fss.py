"""The one-round FSS ReLU: a DCF with a two-word payload, and the gate built on it.

`dcf.py`'s DCF shares beta * [y < alpha] with one 64-bit payload word. A value block of
the PRG has 128 bits, so a DCF with a payload pair (beta_0, beta_1) costs 8 more key
bytes per level and no more AES. With beta_0 = 1 - 2 MSB(r) and beta_1 = R (1 - 2 MSB(r))
one evaluation gives shares of d = DReLU(x) and of R d; with X_hat = x + R public,
x d = X_hat d - R d. That is ReLU in ONE round (the masked opening) instead of two
(DReLU, then a product), as recommended in docs/dcf.md ("Why the output is in Z_2^64").
Proofs in docs/comparison.md; the DCF is the tree DCF of Boyle et al. (Eurocrypt 2021)
exactly as in dcf.py (same correction-word algebra), with its own PRG:

    y_d = s with bits 0, 1 replaced by d       (d = 0 left, 1 right; seeds: bits 2..127)
    child_d = Hc(y_d), value_d = Hv(y_d),  H_K(y) = AES_K(y) xor y, two fixed public keys

Child d's control bit is bit d of its word 0; value_d's two words are the two payload
values. Versus dcf.py's one-key tweak scheme, both hashes read the same input block, so
evaluation needs no strided rebuild of a second input block (17 % faster, measured).
Leaf conversion: conv(s) = Hv(s with tweak 2), two uniform words (one per payload word).

Key layout (one party, M elements, n levels):

    root_seed (M, 16)    uint8   the party's root seed (derived from its PRG, never sent)
    seed_cw   (n, M, 16) uint8   seed correction words, control-bit CWs in bits 0 and 1
    value_cw  (n, M, 2)  uint64  value correction words (word w for payload word w)
    final_cw  (M, 2)     uint64  leaf correction words

    correction words per element: 32 n + 16 bytes, identical for both parties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dcf import check_key_arrays, dcf_levels
from .fss_prg import CLEAR_TWEAK, U64, FixedKeyHash

EVAL_CHUNK = 8192
KEYGEN_CHUNK = 8192
WORDS = 2
# Public, fixed, distinct from fss_prg.FIXED_KEY; any 16 bytes will do.
CHILD_KEY = b"privit/relu-ch/1"
VALUE_KEY = b"privit/relu-vl/1"
_LEAF_TWEAK = np.uint64(2)


def pair_dcf_cw_bytes(n_bits: int) -> int:
    """Correction-word bytes per element (both parties hold the same): 32 n + 16."""
    return 32 * n_bits + 16


@dataclass(frozen=True)
class PairDcfCorrections:
    """The correction words of a two-word DCF (the same in both parties' keys)."""

    seed_cw: np.ndarray
    value_cw: np.ndarray
    final_cw: np.ndarray

    def __post_init__(self) -> None:
        n = self.seed_cw.shape[0] if self.seed_cw.ndim == 3 else -1
        m = self.seed_cw.shape[1] if self.seed_cw.ndim == 3 else -1
        expected = {"seed_cw": (np.dtype(np.uint8), (n, m, 16)),
                    "value_cw": (U64, (n, m, WORDS)), "final_cw": (U64, (m, WORDS))}
        check_key_arrays("PairDcfCorrections", self, expected)
        if not 0 <= n <= 63:
            raise ValueError("PairDcfCorrections: n_bits must be in [0, 63]")

    @property
    def n_bits(self) -> int:
        return int(self.seed_cw.shape[0])

    @property
    def size(self) -> int:
        return int(self.seed_cw.shape[1])

    def to_buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self.seed_cw, self.value_cw, self.final_cw)


class _PairPrg:
    """The two hashes of the pair DCF's PRG (one OpenSSL context each, per call)."""

    def __init__(self) -> None:
        self.child = FixedKeyHash(CHILD_KEY)
        self.value = FixedKeyHash(VALUE_KEY)

    def expand(self, seeds: np.ndarray) -> np.ndarray:
        """Both children and both values of every seed: (M, 4, 2) = [child L, child R,
        value L, value R] (keygen only)."""
        inp = np.empty((seeds.shape[0], 2, 2), dtype=U64)
        base = np.bitwise_and(seeds[:, 0], CLEAR_TWEAK)
        for d in (0, 1):
            np.bitwise_or(base, np.uint64(d), out=inp[:, d, 0])
            inp[:, d, 1] = seeds[:, 1]
        out = np.empty((seeds.shape[0], 4, 2), dtype=U64)
        out[:, 0:2] = self.child(inp)
        out[:, 2:4] = self.value(inp)
        return out

    def leaf(self, seeds: np.ndarray) -> np.ndarray:
        """conv(s) = Hv(s with tweak 2): (M, 2) uint64."""
        blocks = np.empty_like(seeds)
        np.bitwise_and(seeds[:, 0], CLEAR_TWEAK, out=blocks[:, 0])
        blocks[:, 0] |= _LEAF_TWEAK
        blocks[:, 1] = seeds[:, 1]
        return self.value(blocks, out=blocks)


def pair_dcf_keygen(alpha: np.ndarray, n_bits: int, beta: np.ndarray,
                    roots: tuple[np.ndarray, np.ndarray]) -> PairDcfCorrections:
    """Correction words sharing (beta_0, beta_1) * [y < alpha] on n-bit y.

    alpha: uint64 (M,) in [0, 2^n); beta: uint64 (2, M); roots: each party's root seeds,
    uint64 (M, 2) (tweak bits are ignored). The parties' keys are (root_b, corrections).
    Steps per level as dcf.dcf_keygen, with the value-CW step done for both words
    (word w of the value block carries payload word w); then the leaf CW per word,
    (-1)^t1 (conv_w(s_1) - conv_w(s_0) - V_w). Cost: 8 AES blocks per element per level.
    """
    if not 0 <= n_bits <= 63:
        raise ValueError("n_bits must be in [0, 63]")
    m = alpha.shape[0]
    if alpha.dtype != U64 or beta.dtype != U64 or beta.shape != (WORDS, m):
        raise ValueError("alpha must be uint64 (M,), beta uint64 (2, M)")
    if m and int(alpha.max()) >> n_bits:
        raise ValueError(f"alpha has values outside [0, 2^{n_bits})")
    prg = _PairPrg()
    seed_cw = np.empty((n_bits, m, 2), dtype=U64)
    value_cw = np.empty((n_bits, m, WORDS), dtype=U64)
    final_cw = np.empty((m, WORDS), dtype=U64)
    for lo in range(0, m, KEYGEN_CHUNK):
        hi = min(m, lo + KEYGEN_CHUNK)
        final_cw[lo:hi] = _keygen_chunk(
            prg, alpha[lo:hi], beta[:, lo:hi], [np.ascontiguousarray(r[lo:hi]) for r in roots],
            n_bits, seed_cw[:, lo:hi], value_cw[:, lo:hi])
    return PairDcfCorrections(seed_cw.view(np.uint8).reshape(n_bits, m, 16), value_cw, final_cw)


def _keygen_chunk(prg: _PairPrg, alpha: np.ndarray, beta: np.ndarray, roots: list[np.ndarray],
                  n_bits: int, seed_cw: np.ndarray, value_cw: np.ndarray) -> np.ndarray:
    """dcf.dcf_levels with this DCF's PRG, then the leaf CW per payload word,
    (-1)^t1 (conv_w(s_1) - conv_w(s_0) - V_w)."""
    seeds, controls, path_sum = dcf_levels(prg.expand, alpha, beta, roots, n_bits, seed_cw,
                                           value_cw)
    conv = [prg.leaf(seed) for seed in seeds]
    sign = 1 - 2 * controls[1]
    return np.stack([sign * (conv[1][:, w] - conv[0][:, w] - path_sum[w]) for w in range(WORDS)],
                    axis=1)


def pair_dcf_eval(party: int, root_seed: np.ndarray, cws: PairDcfCorrections, y: np.ndarray,
                  chunk: int = EVAL_CHUNK) -> np.ndarray:
    """This party's shares (uint64 (M, 2)) of (beta_0, beta_1) * [y < alpha].

    Steps per chunk of elements (cache-sized), per level i (bit d = y_i, MSB first):
    1. tweak the seed with d; child = Hc(seed), value = Hv(seed) (2 AES blocks);
    2. if t = 1 (mask tm, all ones or zero, on both words): child ^= seed CW, and
       acc += value + (value CW & tm) on both words at once;
    3. t = bit d of the child's word 0; the child is the next seed.
    Then acc += conv(seed) + (final CW & tm); party 1 negates. Every pass but two runs
    on contiguous (chunk, 2) buffers. Cost: 2 AES blocks per element per level + 1.
    """
    if party not in (0, 1):
        raise ValueError("party must be 0 or 1")
    n_bits, m = cws.n_bits, cws.size
    if root_seed.dtype != np.uint8 or root_seed.shape != (m, 16):
        raise ValueError("root_seed must be uint8 (M, 16)")
    if y.dtype != U64 or y.shape != (m,):
        raise ValueError("y must be uint64 (M,)")
    root = root_seed.view(U64)
    seed_cw = cws.seed_cw.view(U64)
    value_cw, final_cw = cws.value_cw, cws.final_cw
    prg = _PairPrg()
    one = np.uint64(1)
    shifts = np.arange(n_bits - 1, -1, -1, dtype=U64)[:, None]

    out = np.empty((m, WORDS), dtype=U64)
    width = max(1, min(chunk, m))
    buffers = np.empty((6, width, 2), dtype=U64)
    t_all = np.empty(width, dtype=U64)
    directions_all = np.empty((n_bits, width), dtype=U64)
    for lo in range(0, m, width):
        hi = min(m, lo + width)
        size = hi - lo
        seed, child, value, t_mask, tmp, acc = (b[:size] for b in buffers)
        t = t_all[:size]
        directions = directions_all[:, :size]
        np.right_shift(y[lo:hi][None, :], shifts, out=directions)
        directions &= one
        seed[:] = root[lo:hi]
        t.fill(party)
        acc.fill(0)
        for level in range(n_bits):
            d = directions[level]
            word0 = seed[:, 0]
            np.bitwise_and(word0, CLEAR_TWEAK, out=word0)
            np.bitwise_or(word0, d, out=word0)
            prg.child(seed, out=child)
            prg.value(seed, out=value)
            np.negative(t, out=t_mask[:, 0])
            t_mask[:, 1] = t_mask[:, 0]
            np.bitwise_and(seed_cw[level, lo:hi], t_mask, out=tmp)
            child ^= tmp
            acc += value
            np.bitwise_and(value_cw[level, lo:hi], t_mask, out=tmp)
            acc += tmp
            np.right_shift(child[:, 0], d, out=t)
            t &= one
            seed, child = child, seed
        acc += prg.leaf(seed)
        np.negative(t, out=t_mask[:, 0])
        t_mask[:, 1] = t_mask[:, 0]
        np.bitwise_and(final_cw[lo:hi], t_mask, out=tmp)
        acc += tmp
        if party == 1:
            np.negative(acc, out=acc)
        out[lo:hi] = acc
    return out


# --- the gate: shares of d = DReLU(a) and of d * x from one opening ---------------------


def _low_mask(n_bits: int) -> np.uint64:
    return np.uint64((1 << n_bits) - 1)


@dataclass(frozen=True)
class ReluGateValues:
    """What the dealer computes for one gate (the values, before sharing).

    corrections: the DCF's CWs (to both parties); msb = MSB_n(r); r_msb = R * MSB_n(r).
    """

    corrections: PairDcfCorrections
    msb: np.ndarray
    r_msb: np.ndarray


def relu_gate_keygen(n_bits: int, r: np.ndarray, big_r: np.ndarray,
                     roots: tuple[np.ndarray, np.ndarray]) -> ReluGateValues:
    """Dealer: the gate for comparison masks r (n-bit) and multiplicand masks R (64-bit).

    An (n-1)-bit two-word DCF at alpha = r mod 2^(n-1) with payload
    (1 - 2 MSB(r), R (1 - 2 MSB(r))), plus the values MSB(r) and R MSB(r) to be shared.
    With n = 64 and R = r a single opening serves comparison and product.
    """
    if not 1 <= n_bits <= 64:
        raise ValueError("n_bits must be in [1, 64]")
    msb = r >> np.uint64(n_bits - 1)
    beta0 = np.uint64(1) - np.uint64(2) * msb
    beta = np.stack([beta0, big_r * beta0])
    corrections = pair_dcf_keygen(r & _low_mask(n_bits - 1), n_bits - 1, beta, roots)
    return ReluGateValues(corrections, msb, big_r * msb)


def relu_gate_eval(party: int, n_bits: int, root_seed: np.ndarray, cws: PairDcfCorrections,
                   msb_share: np.ndarray, r_msb_share: np.ndarray, big_r_share: np.ndarray,
                   a_hat: np.ndarray, x_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """This party's shares (uint64) of d = DReLU(a) and of d * x.

    a_hat = a + r mod 2^n and x_hat = x + R mod 2^64 are public. Steps:
    1. (w0, w1) = DCF(a_hat mod 2^(n-1)); z = MSB(r)_i + w0 and rz = (R MSB(r))_i + w1 are
       shares of z = MSB(r) xor c and of R z, c = [a_hat mod 2^(n-1) < r mod 2^(n-1)];
    2. d = z, dR = rz where MSB(a_hat) = 1, else d = [i = 0] - z, dR = R_i - rz;
    3. d * x = x_hat * d - dR. Local: no communication.
    """
    y = a_hat & _low_mask(n_bits - 1)
    words = pair_dcf_eval(party, root_seed, cws, y)
    z = words[:, 0] + msb_share
    rz = words[:, 1] + r_msb_share
    hat_msb = (a_hat >> np.uint64(n_bits - 1)).astype(bool)
    d = np.where(hat_msb, z, np.uint64(1 - party) - z)
    d_r = np.where(hat_msb, rz, big_r_share - rz)
    product = d * x_hat
    product -= d_r
    return d, product
