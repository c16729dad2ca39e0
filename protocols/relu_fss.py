"""The one-round FSS ReLU: a DCF with a two-word payload, and the gate built on it.

`dcf.py`'s DCF shares beta * [y < alpha] with one 64-bit payload word. Its PRG already
yields a second word per level for free (the high word of the value block), so a DCF
with a payload pair (beta_0, beta_1) costs 8 more key bytes per level and no more AES.
With beta_0 = 1 - 2 MSB(r) and beta_1 = R * (1 - 2 MSB(r)) one evaluation gives shares
of DReLU(x) and of R * DReLU(x); with X_hat = x + R public, x * DReLU(x) = X_hat * d - R * d.
That is ReLU in ONE round (the masked opening) instead of two (DReLU, then a product),
as recommended in docs/dcf.md ("Why the output is in Z_2^64"). Proofs in
docs/comparison.md; the DCF itself is the tree DCF of Boyle et al. (Eurocrypt 2021).

Key layout (one party, M elements, n levels):

    root_seed (M, 16)    uint8   the party's root seed (derived from its PRG, never sent)
    seed_cw   (n, M, 16) uint8   seed correction words, control-bit CWs in bits 0 and 1
    value_cw  (2, n, M)  uint64  value correction words, one row per payload word
    final_cw  (2, M)     uint64  leaf correction words

    correction words per element: 32 n + 16 bytes, identical for both parties.

Leaf conversion: the two parties' leaf seeds s are converted by one more hash,
conv(s) = H(s with tweak 0) (two words), so that both payload words get an independent
uniform leaf value (dcf.py uses the seed's high word, which serves one word only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fss_prg import CLEAR_TWEAK, U64, FixedKeyHash, prg_expand, prg_expand_path

EVAL_CHUNK = 8192
KEYGEN_CHUNK = 8192
WORDS = 2


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
                    "value_cw": (U64, (WORDS, n, m)), "final_cw": (U64, (WORDS, m))}
        for name, (dtype, shape) in expected.items():
            array = getattr(self, name)
            if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != shape:
                raise ValueError(f"PairDcfCorrections.{name}: expected {dtype} {shape}")
            if not array.flags.c_contiguous:
                raise ValueError(f"PairDcfCorrections.{name} must be C-contiguous")
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


def _select(mask: np.ndarray, if_one: np.ndarray, if_zero: np.ndarray) -> np.ndarray:
    return if_zero ^ ((if_one ^ if_zero) & mask)


def _leaf_convert(hash_: FixedKeyHash, seeds: np.ndarray) -> np.ndarray:
    """conv(s) = H(s with tweak 0): (M, 2) uint64, one uniform word per payload word."""
    blocks = np.empty_like(seeds)
    np.bitwise_and(seeds[:, 0], CLEAR_TWEAK, out=blocks[:, 0])
    blocks[:, 1] = seeds[:, 1]
    return hash_(blocks, out=blocks)


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
    if n_bits < 64 and m and int(alpha.max()) >> n_bits:
        raise ValueError(f"alpha has values outside [0, 2^{n_bits})")
    hash_ = FixedKeyHash()
    seed_cw = np.empty((n_bits, m, 2), dtype=U64)
    value_cw = np.empty((WORDS, n_bits, m), dtype=U64)
    final_cw = np.empty((WORDS, m), dtype=U64)
    for lo in range(0, m, KEYGEN_CHUNK):
        hi = min(m, lo + KEYGEN_CHUNK)
        final_cw[:, lo:hi] = _keygen_chunk(
            hash_, alpha[lo:hi], beta[:, lo:hi], [r[lo:hi] & _TWEAK_MASK for r in roots],
            n_bits, seed_cw[:, lo:hi], value_cw[:, :, lo:hi])
    return PairDcfCorrections(seed_cw.view(np.uint8).reshape(n_bits, m, 16), value_cw, final_cw)


_TWEAK_MASK = np.array([CLEAR_TWEAK, np.uint64(0xFFFF_FFFF_FFFF_FFFF)], dtype=U64)


def _keygen_chunk(hash_: FixedKeyHash, alpha: np.ndarray, beta: np.ndarray,
                  roots: list[np.ndarray], n_bits: int, seed_cw: np.ndarray,
                  value_cw: np.ndarray) -> np.ndarray:
    one = np.uint64(1)
    size = alpha.shape[0]
    seeds = [np.ascontiguousarray(root) for root in roots]
    controls = [np.zeros(size, dtype=U64), np.ones(size, dtype=U64)]
    path_sum = np.zeros((WORDS, size), dtype=U64)
    for level in range(n_bits):
        bit = (alpha >> np.uint64(n_bits - 1 - level)) & one
        lose_is_left = -bit
        expanded = [prg_expand(hash_, seed) for seed in seeds]
        keep = [np.empty_like(seed) for seed in seeds]
        cw = seed_cw[level]
        for word in (0, 1):
            lose = []
            for party, blocks in enumerate(expanded):
                left, right = blocks[:, 0, word], blocks[:, 1, word]
                lose.append(_select(lose_is_left, left, right))
                keep[party][:, word] = _select(lose_is_left, right, left)
            np.bitwise_xor(lose[0], lose[1], out=cw[:, word])
        t_left = (expanded[0][:, 0, 0] ^ expanded[1][:, 0, 0]) & one
        t_right = ((expanded[0][:, 1, 0] ^ expanded[1][:, 1, 0]) >> one) & one
        cw[:, 0] &= CLEAR_TWEAK
        cw[:, 0] |= (t_left ^ bit ^ one) | ((t_right ^ bit) << one)

        sign = 1 - 2 * controls[1]  # (-1)^t1 in Z_2^64
        for word in range(WORDS):
            v_lose = [_select(lose_is_left, g[:, 2, word], g[:, 3, word]) for g in expanded]
            v_keep = [_select(lose_is_left, g[:, 3, word], g[:, 2, word]) for g in expanded]
            value_cw[word, level] = sign * (v_lose[1] - v_lose[0] - path_sum[word]
                                            + bit * beta[word])
            path_sum[word] += v_keep[0] - v_keep[1] + sign * value_cw[word, level]

        for party in (0, 1):
            t_mask = -controls[party]
            for word in (0, 1):
                keep[party][:, word] ^= cw[:, word] & t_mask
            controls[party] = (keep[party][:, 0] >> bit) & one
            seeds[party] = keep[party]
    conv = [_leaf_convert(hash_, seed) for seed in seeds]
    sign = 1 - 2 * controls[1]
    return np.stack([sign * (conv[1][:, w] - conv[0][:, w] - path_sum[w]) for w in range(WORDS)])


def pair_dcf_eval(party: int, root_seed: np.ndarray, cws: PairDcfCorrections, y: np.ndarray,
                  chunk: int = EVAL_CHUNK) -> np.ndarray:
    """This party's shares (uint64 (2, M)) of (beta_0, beta_1) * [y < alpha].

    Walks y's path exactly as dcf.dcf_eval, accumulating both value words (word 1 is
    the high word of the value block: no extra AES), then adds the leaf conversion and
    the leaf CW; party 1 negates. Cost: 2 AES blocks per element per level + 1 at the leaf.
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
    hash_ = FixedKeyHash()
    one = np.uint64(1)
    shifts = [np.uint64(n_bits - 1 - level) for level in range(n_bits)]

    out = np.empty((WORDS, m), dtype=U64)
    width = max(1, min(chunk, m))
    work_all = np.empty((width, 2, 2), dtype=U64)
    scratch = np.empty((6, width), dtype=U64)
    for lo in range(0, m, width):
        hi = min(m, lo + width)
        size = hi - lo
        work = work_all[:size]
        direction, t, t_mask, acc0, acc1, tmp = (row[:size] for row in scratch)
        ys = y[lo:hi]
        work[:, 0, 0] = root[lo:hi, 0]
        work[:, 0, 1] = root[lo:hi, 1]
        t.fill(party)
        acc0.fill(0)
        acc1.fill(0)
        for level in range(n_bits):
            np.right_shift(ys, shifts[level], out=direction)
            direction &= one
            blocks = prg_expand_path(hash_, work, direction)
            np.negative(t, out=t_mask)
            for word in (0, 1):  # 1-D passes: numpy is slow on inner axes of length 2
                np.bitwise_and(seed_cw[level, lo:hi, word], t_mask, out=tmp)
                blocks[:, 0, word] ^= tmp
            acc0 += blocks[:, 1, 0]
            acc1 += blocks[:, 1, 1]
            np.bitwise_and(value_cw[0, level, lo:hi], t_mask, out=tmp)
            acc0 += tmp
            np.bitwise_and(value_cw[1, level, lo:hi], t_mask, out=tmp)
            acc1 += tmp
            np.right_shift(blocks[:, 0, 0], direction, out=t)
            t &= one
        conv = _leaf_convert(hash_, np.ascontiguousarray(work[:, 0]))
        np.negative(t, out=t_mask)
        for word, acc in enumerate((acc0, acc1)):
            acc += conv[:, word]
            np.bitwise_and(final_cw[word, lo:hi], t_mask, out=tmp)
            acc += tmp
            if party == 1:
                np.negative(acc, out=acc)
            out[word, lo:hi] = acc
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
    if not 2 <= n_bits <= 64:
        raise ValueError("n_bits must be in [2, 64]")
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
    z = words[0]
    z += msb_share
    rz = words[1]
    rz += r_msb_share
    hat_msb = (a_hat >> np.uint64(n_bits - 1)).astype(bool)
    d = np.where(hat_msb, z, np.uint64(1 - party) - z)
    d_r = np.where(hat_msb, rz, big_r_share - rz)
    product = d * x_hat
    product -= d_r
    return d, product
