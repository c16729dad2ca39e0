"""The compact DCF: one output bit, early-terminated tree, and the bit DReLU built on it.

`dcf.py`'s DCF outputs additive shares in Z_2^64: every level carries a 64-bit value
correction word (VCW) beside its 128-bit seed CW, 24 B per level. This DCF outputs XOR
shares of one bit (as SIGMA's DReLU, Gupta et al., PETS 2024, and the DCF of Boyle et al.,
Eurocrypt 2021, with output group Z_2), so:

* the VCW of a level is 1 bit (packed, 8 levels per byte);
* the value bits cost no AES: child block d of G(s) = H(s with tweak d) holds the child
  seed in bits 2..127, its control bit in bit d and its value bit in bit 1 - d
  (dcf.py needs a second block per level for a 64-bit value);
* the tree stops nu = min(7, n) levels early: the leaf conv(s) = H(s with tweak 2)
  is a 128-bit table, one bit per suffix u in [0, 2^nu), and one leaf CW of 2^nu bits
  replaces nu levels (Boyle et al.'s early termination).

Key of one party, per element, n-bit input, L = n - nu tree levels:

    root_seed (M, 16)        uint8  the party's root seed (derived from its PRG, never sent)
    seed_cw   (L, M, 16)     uint8  seed CWs; control-bit CWs in bits 0 and 1 (as dcf.py)
    value_cw  (M, ceil(L/8)) uint8  VCW bits, level i = bit i % 8 of byte i // 8
    leaf_cw   (M, max(1, 2^nu / 8)) uint8  leaf table CW, suffix u = bit u % 8 of byte u // 8

    correction-word bytes per element = 16 L + ceil(L / 8) + max(1, 2^nu / 8)
    n = 19: 12 levels, 210 B; n = 23: 16 levels, 274 B; n = 31: 24 levels, 403 B
    (dcf.py: 24 n + 8 B of CWs; n = 23: 560 B, n = 31: 752 B).

Its output is a bit in XOR shares, so a consumer that needs Z_2^64 pays a conversion
(SIGMA folds it into the next product's opening: the select); docs/dcf.md, "The compact
bit DCF", gives the trade and the proofs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .dcf import check_key_arrays
from .fss_prg import CLEAR_TWEAK, U64, FixedKeyHash, RandomSource, as_random_source, random_u64

EVAL_CHUNK = 8192
KEYGEN_CHUNK = 8192
MAX_LEAF_BITS = 7  # a leaf table of 2^7 = 128 bits is one AES block
_LEAF_TWEAK = np.uint64(2)
_ONE = np.uint64(1)


def leaf_bits(n_bits: int) -> int:
    """nu: the levels the leaf table replaces, min(7, n)."""
    return min(MAX_LEAF_BITS, n_bits)


def _leaf_bytes(nu: int) -> int:
    return max(1, (1 << nu) // 8)


def bit_dcf_cw_bytes(n_bits: int) -> int:
    """Correction-word bytes per element (the same in both keys; what the dealer sends):
    16 L + ceil(L / 8) + max(1, 2^nu / 8), L = n - nu."""
    nu = leaf_bits(n_bits)
    levels = n_bits - nu
    return 16 * levels + -(-levels // 8) + _leaf_bytes(nu)


def bit_dcf_key_bytes(n_bits: int) -> int:
    """Bytes of one party's whole key per element: the root seed (16) and the CWs."""
    return 16 + bit_dcf_cw_bytes(n_bits)


@dataclass(frozen=True)
class BitDcfKeys:
    """One party's key of the bit DCF (numpy arrays, see the module docstring)."""

    root_seed: np.ndarray
    seed_cw: np.ndarray
    value_cw: np.ndarray
    leaf_cw: np.ndarray
    n_bits: int

    def __post_init__(self) -> None:
        if not 0 <= self.n_bits <= 64:
            raise ValueError("BitDcfKeys: n_bits must be in [0, 64]")
        m = self.root_seed.shape[0] if self.root_seed.ndim == 2 else -1
        nu = leaf_bits(self.n_bits)
        levels = self.n_bits - nu
        u8 = np.dtype(np.uint8)
        expected = {"root_seed": (u8, (m, 16)), "seed_cw": (u8, (levels, m, 16)),
                    "value_cw": (u8, (m, -(-levels // 8))), "leaf_cw": (u8, (m, _leaf_bytes(nu)))}
        check_key_arrays("BitDcfKeys", self, expected)

    @property
    def size(self) -> int:
        """Number of elements M."""
        return int(self.root_seed.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the raw buffers: exactly ``size * bit_dcf_key_bytes(n_bits)``."""
        return sum(buffer.nbytes for buffer in self.to_buffers())

    def corrections(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The CWs (identical in both keys): what the dealer sends to each party."""
        return (self.seed_cw, self.value_cw, self.leaf_cw)

    def to_buffers(self) -> tuple[np.ndarray, ...]:
        return (self.root_seed, *self.corrections())

    @classmethod
    def from_buffers(cls, n_bits: int, buffers: Sequence[np.ndarray]) -> BitDcfKeys:
        """Rebuild from ``to_buffers()`` output; validates every dtype and shape."""
        if len(buffers) != 4:
            raise ValueError(f"BitDcfKeys.from_buffers: expected 4 buffers, got {len(buffers)}")
        root_seed, seed_cw, value_cw, leaf_cw = (np.ascontiguousarray(b) for b in buffers)
        return cls(root_seed, seed_cw, value_cw, leaf_cw, n_bits)


def _children(hash_: FixedKeyHash, seeds: np.ndarray) -> np.ndarray:
    """Raw child blocks of every seed: (M, 2, 2) uint64 = [H(s|0), H(s|1)]."""
    inp = np.empty((seeds.shape[0], 2, 2), dtype=U64)
    base = np.bitwise_and(seeds[:, 0], CLEAR_TWEAK)
    for d in (0, 1):
        np.bitwise_or(base, np.uint64(d), out=inp[:, d, 0])
        inp[:, d, 1] = seeds[:, 1]
    return hash_(inp, out=inp)


def _conv(hash_: FixedKeyHash, seeds: np.ndarray, nbytes: int) -> np.ndarray:
    """The leaf table of every seed: the first nbytes of H(s|2), (M, nbytes) uint8."""
    block = np.empty_like(seeds)
    np.bitwise_and(seeds[:, 0], CLEAR_TWEAK, out=block[:, 0])
    block[:, 0] |= _LEAF_TWEAK
    block[:, 1] = seeds[:, 1]
    return np.ascontiguousarray(hash_(block, out=block).view(np.uint8)[:, :nbytes])


def _below_table(alpha_low: np.ndarray, nu: int) -> np.ndarray:
    """T_u = [u < alpha_low] for u in [0, 2^nu), packed like the leaf CW: (M, bytes) uint8."""
    nbytes = _leaf_bytes(nu)
    ones = np.clip(alpha_low.astype(np.int64)[:, None] - 8 * np.arange(nbytes), 0, 8)
    return ((1 << ones) - 1).astype(np.uint8)


def _valid_leaf_mask(nu: int) -> np.uint8:
    return np.uint8((1 << (1 << nu)) - 1) if nu < 3 else np.uint8(0xFF)


def bit_dcf_keygen(alpha: np.ndarray, n_bits: int, rng: bytes | RandomSource | None = None,
                   roots: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> tuple[BitDcfKeys, BitDcfKeys]:
    """Keys sharing [x < alpha] (XOR shares of one bit) on n-bit unsigned x.

    alpha: uint64 (M,) in [0, 2^n); roots: each party's root seeds, uint64 (M, 2) (drawn
    from rng when None). L = n - nu levels, per level i (a = alpha_i, MSB first):
      1. expand both parties' seeds: raw child blocks c^L, c^R; t^L = bit 0 of c^L,
         t^R = bit 1 of c^R, value bits v^L = bit 1 of c^L, v^R = bit 0 of c^R;
      2. keep = the child on alpha's path, lose = the other; seed CW = lose_0 xor lose_1
         with control-bit CWs t^L_0^t^L_1^a^1 (bit 0) and t^R_0^t^R_1^a (bit 1);
      3. VCW = v^lose_0 ^ v^lose_1 ^ V ^ a: a path leaving alpha's here collects a in total;
      4. V ^= v^keep_0 ^ v^keep_1 ^ VCW;  5. s_b, t_b = keep_b corrected by t_b * CW.
    Leaf: CW = conv(s_0) ^ conv(s_1) ^ T ^ V, T_u = [u < alpha mod 2^nu].
    Cost: 4 AES blocks per element per level (two parties x two children) + 2 at the leaf.
    """
    if alpha.dtype != U64 or alpha.ndim != 1:
        raise ValueError("alpha must be a 1-D uint64 numpy array")
    if not 0 <= n_bits <= 64:
        raise ValueError("n_bits must be in [0, 64]")
    if n_bits < 64 and alpha.size and int(alpha.max()) >> n_bits:
        raise ValueError(f"alpha has values outside [0, 2^{n_bits})")
    m = alpha.shape[0]
    if roots is None:
        source = as_random_source(rng)
        roots = (random_u64(source, (m, 2)), random_u64(source, (m, 2)))
    roots = tuple(np.ascontiguousarray(root) for root in roots)  # type: ignore[assignment]
    for root in roots:
        if root.dtype != U64 or root.shape != (m, 2):
            raise ValueError("roots must be uint64 (M, 2)")
    nu = leaf_bits(n_bits)
    levels = n_bits - nu
    hash_ = FixedKeyHash()
    seed_cw = np.empty((levels, m, 2), dtype=U64)
    value_bits = np.empty((m, levels), dtype=np.uint8)
    leaf_cw = np.empty((m, _leaf_bytes(nu)), dtype=np.uint8)
    for lo in range(0, m, KEYGEN_CHUNK):
        hi = min(m, lo + KEYGEN_CHUNK)
        leaf_cw[lo:hi] = _keygen_chunk(hash_, alpha[lo:hi], [r[lo:hi] for r in roots], n_bits,
                                       seed_cw[:, lo:hi], value_bits[lo:hi])
    value_cw = np.packbits(value_bits, axis=1, bitorder="little")
    seed_bytes = seed_cw.view(np.uint8).reshape(levels, m, 16)
    keys = tuple(BitDcfKeys(root.view(np.uint8).reshape(m, 16), seed_bytes, value_cw, leaf_cw,
                            n_bits) for root in roots)
    return keys[0], keys[1]


def _keygen_chunk(hash_: FixedKeyHash, alpha: np.ndarray, roots: list[np.ndarray], n_bits: int,
                  seed_cw: np.ndarray, value_bits: np.ndarray) -> np.ndarray:
    """bit_dcf_keygen on one chunk; fills seed_cw (L, m, 2) and value_bits (m, L) (0/1).
    Returns the leaf CW (m, leaf bytes)."""
    nu = leaf_bits(n_bits)
    levels = n_bits - nu
    seeds = [root.copy() for root in roots]
    controls = [np.zeros(alpha.shape[0], dtype=U64), np.ones(alpha.shape[0], dtype=U64)]
    path = np.zeros(alpha.shape[0], dtype=U64)
    for level in range(levels):
        bit = (alpha >> np.uint64(n_bits - 1 - level)) & _ONE
        lose_is_left = -bit
        kids = [_children(hash_, seed) for seed in seeds]
        cw = seed_cw[level]
        keep = [np.empty_like(seed) for seed in seeds]
        for word in (0, 1):
            lose = []
            for party, blocks in enumerate(kids):
                left, right = blocks[:, 0, word], blocks[:, 1, word]
                lose.append(right ^ ((left ^ right) & lose_is_left))
                keep[party][:, word] = left ^ ((left ^ right) & lose_is_left)
            np.bitwise_xor(lose[0], lose[1], out=cw[:, word])
        t_left = (kids[0][:, 0, 0] ^ kids[1][:, 0, 0]) & _ONE
        t_right = ((kids[0][:, 1, 0] ^ kids[1][:, 1, 0]) >> _ONE) & _ONE
        cw[:, 0] &= CLEAR_TWEAK
        cw[:, 0] |= (t_left ^ bit ^ _ONE) | ((t_right ^ bit) << _ONE)
        # value bit of child L is its bit 1, of child R its bit 0 (raw blocks)
        v_left = [(k[:, 0, 0] >> _ONE) & _ONE for k in kids]
        v_right = [k[:, 1, 0] & _ONE for k in kids]
        v_lose = [r ^ ((lf ^ r) & lose_is_left) for lf, r in zip(v_left, v_right, strict=True)]
        v_keep = [lf ^ ((lf ^ r) & lose_is_left) for lf, r in zip(v_left, v_right, strict=True)]
        vcw = v_lose[0] ^ v_lose[1] ^ path ^ bit
        value_bits[:, level] = vcw
        path ^= v_keep[0] ^ v_keep[1] ^ vcw
        for party in (0, 1):
            t_mask = -controls[party]
            for word in (0, 1):
                keep[party][:, word] ^= cw[:, word] & t_mask
            controls[party] = (keep[party][:, 0] >> bit) & _ONE
        seeds = keep
    nbytes = _leaf_bytes(nu)
    low = alpha & np.uint64((1 << nu) - 1)
    table = _below_table(low, nu)
    conv = [_conv(hash_, seed, nbytes) for seed in seeds]
    leaf = conv[0] ^ conv[1] ^ table ^ (path.astype(np.uint8) * np.uint8(0xFF))[:, None]
    leaf &= _valid_leaf_mask(nu)
    return leaf


def bit_dcf_eval(party: int, keys: BitDcfKeys, x: np.ndarray, chunk: int = EVAL_CHUNK
                 ) -> np.ndarray:
    """This party's XOR share (uint8 (M,), 0/1) of [x < alpha].

    Steps per chunk of elements (cache-sized), per level i (d = x_i, MSB first):
      1. child = H(seed with tweak d) (1 AES block); v = bit 1 - d of it (raw);
      2. out ^= v ^ (t & VCW_i); if t = 1: child ^= seed CW; t = bit d of the child;
    then, u = x mod 2^nu: out ^= bit u of conv(seed) ^ (t & bit u of the leaf CW).
    Cost: L + 1 AES blocks per element, no communication.
    """
    if party not in (0, 1):
        raise ValueError("party must be 0 or 1")
    if x.dtype != U64 or x.shape != (keys.size,):
        raise ValueError(f"x must be uint64 ({keys.size},)")
    n_bits, m = keys.n_bits, keys.size
    if n_bits < 64 and m and int(x.max()) >> n_bits:
        raise ValueError(f"x has values outside [0, 2^{n_bits})")
    nu = leaf_bits(n_bits)
    levels = n_bits - nu
    nbytes = _leaf_bytes(nu)
    root = keys.root_seed.view(U64)
    seed_cw = keys.seed_cw.view(U64)
    hash_ = FixedKeyHash()
    out = np.empty(m, dtype=np.uint8)
    width = max(1, min(chunk, m))
    for lo in range(0, m, width):
        hi = min(m, lo + width)
        xs = x[lo:hi]
        vcw = np.unpackbits(keys.value_cw[lo:hi], axis=1, count=levels, bitorder="little")
        seed = root[lo:hi].copy()
        t = np.full(hi - lo, party, dtype=U64)
        acc = np.zeros(hi - lo, dtype=U64)
        for level in range(levels):
            d = (xs >> np.uint64(n_bits - 1 - level)) & _ONE
            seed[:, 0] &= CLEAR_TWEAK
            seed[:, 0] |= d
            child = hash_(seed)
            acc ^= (child[:, 0] >> (_ONE ^ d)) & _ONE
            acc ^= t & vcw[:, level]
            t_mask = -t
            child[:, 0] ^= seed_cw[level, lo:hi, 0] & t_mask
            child[:, 1] ^= seed_cw[level, lo:hi, 1] & t_mask
            t = (child[:, 0] >> d) & _ONE
            seed = child
        u = (xs & np.uint64((1 << nu) - 1)).astype(np.int64)
        rows = np.arange(hi - lo)
        table = _conv(hash_, seed, nbytes) ^ (keys.leaf_cw[lo:hi] & (-t.astype(np.uint8))[:, None])
        acc ^= ((table[rows, u >> 3] >> (u & 7).astype(np.uint8)) & 1).astype(U64)
        out[lo:hi] = acc.astype(np.uint8)
    return out


# --- DReLU in XOR shares (as SIGMA's DReLU; proof of the identity in docs/dcf.md) -------


@dataclass(frozen=True)
class BitDreluMaterial:
    """One party's material for DReLU(x) = [x >= 0] on n-bit two's-complement x, XOR shares.

    r_share: uint64 (M,), additive share of the mask r mod 2^n; msb_share: uint8 (M,), XOR
    share of MSB(r); dcf: (n-1)-bit bit-DCF keys at alpha = r mod 2^(n-1).
    """

    r_share: np.ndarray
    msb_share: np.ndarray
    dcf: BitDcfKeys

    @property
    def n_bits(self) -> int:
        return self.dcf.n_bits + 1


def bit_drelu_keygen(m: int, n_bits: int, rng: bytes | RandomSource | None = None,
                     mask: np.ndarray | None = None) -> tuple[BitDreluMaterial, BitDreluMaterial]:
    """Dealer: r uniform in [0, 2^n) (or ``mask``), its additive shares, XOR shares of
    MSB(r), and the (n-1)-bit bit-DCF at r mod 2^(n-1). Material per element per party:
    8 (r) + 1 (MSB bit, one byte here; a bit packed on the wire) + bit_dcf_key_bytes(n - 1)."""
    if not 1 <= n_bits <= 64:
        raise ValueError("n_bits must be in [1, 64]")
    source = as_random_source(rng)
    low = np.uint64((1 << n_bits) - 1) if n_bits < 64 else np.uint64(2**64 - 1)
    r = random_u64(source, (m,)) & low if mask is None else mask
    msb = (r >> np.uint64(n_bits - 1)).astype(np.uint8)
    r0 = random_u64(source, (m,))
    msb0 = (random_u64(source, (m,)) & _ONE).astype(np.uint8)
    alpha = r & np.uint64((1 << (n_bits - 1)) - 1)
    dcf0, dcf1 = bit_dcf_keygen(alpha, n_bits - 1, source)
    return (BitDreluMaterial(r0, msb0, dcf0), BitDreluMaterial(r - r0, msb ^ msb0, dcf1))


def bit_drelu_eval(party: int, material: BitDreluMaterial, x_hat: np.ndarray) -> np.ndarray:
    """XOR share (uint8 0/1) of DReLU(x) from x_hat = x + r mod 2^n (public).

    DReLU = 1 ^ MSB(x_hat) ^ MSB(r) ^ [x_hat mod 2^(n-1) < r mod 2^(n-1)]; party 0 also
    XORs the public part 1 ^ MSB(x_hat). Local, no communication.
    """
    n_bits = material.n_bits
    low = x_hat & np.uint64((1 << (n_bits - 1)) - 1)
    share = bit_dcf_eval(party, material.dcf, low) ^ material.msb_share
    if party == 0:
        share ^= (_ONE ^ (x_hat >> np.uint64(n_bits - 1))).astype(np.uint8)
    return share
