"""Distributed comparison functions (DCF) and the dealer-assisted DReLU built on them.

A DCF key pair shares the function f(x) = beta * [x < alpha] on n-bit unsigned x:
dcf_eval(0, k0, x) + dcf_eval(1, k1, x) = f(x) mod 2^64, and each key alone reveals
nothing about alpha or beta. Construction: the tree DCF of Boyle, Chandran, Gilboa,
Gupta, Ishai, Kumaresan, Tang (Eurocrypt 2021, "Function Secret Sharing for Mixed-Mode
and Fixed-Point Secure Computation"), as used by Orca and SIGMA, with the PRG of
``fss_prg.py``. docs/dcf.md gives the construction in words, the proofs and the costs.

Key of one party, per element (M elements, n levels), all numpy, no pickle:

    root_seed (M, 16)    uint8   the party's own root seed
    seed_cw   (n, M, 16) uint8   per-level seed correction word; bits 0 and 1 of byte 0
                                 carry the left/right control-bit corrections
    value_cw  (n, M)     uint64  per-level output correction word
    final_cw  (M,)       uint64  last correction word

    bytes per element = 16 + 24 n + 8 = 24 n + 24   (n = 64: 1560 B, n = 16: 408 B)

The correction words are the same in both parties' keys; only root seeds differ.

DReLU(x) = [x >= 0] for n-bit two's-complement x (as in SIGMA): the dealer masks x with r,
the parties open x_hat = x + r mod 2^n (1 round, n bits each) and evaluate an (n-1)-bit
DCF locally; material per element per party = 8 (r) + 8 (MSB(r)) + DCF(n-1) = 24 n + 16 B.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .fss_prg import (
    CLEAR_TWEAK,
    U64,
    FixedKeyHash,
    RandomSource,
    as_random_source,
    prg_expand,
    prg_expand_path,
    random_u64,
)

# Elements per evaluation chunk: small enough that the working set stays in L2 cache.
EVAL_CHUNK = 8192
KEYGEN_CHUNK = 8192


def dcf_key_bytes(n_bits: int) -> int:
    """Bytes of one party's DCF key per element: 16 (root) + 24 per level + 8 (final)."""
    return 24 * n_bits + 24


def _check_u64_vector(name: str, value: np.ndarray, size: int | None = None) -> None:
    if not isinstance(value, np.ndarray) or value.dtype != U64 or value.ndim != 1:
        raise ValueError(f"{name} must be a 1-D uint64 numpy array")
    if size is not None and value.shape[0] != size:
        raise ValueError(f"{name} has {value.shape[0]} elements, expected {size}")


def _check_range(name: str, value: np.ndarray, n_bits: int) -> None:
    if n_bits < 64 and value.size and int(value.max()) >> n_bits:
        raise ValueError(f"{name} has values outside [0, 2^{n_bits})")


def check_key_arrays(owner: str, obj: object,
                     expected: Mapping[str, tuple[Any, tuple[int, ...]]]) -> None:
    """Every named array of a key dataclass has its dtype and shape and is C-contiguous
    (keys travel as raw buffers, so a wrong layout must fail here, not in evaluation)."""
    for name, (dtype, shape) in expected.items():
        array = getattr(obj, name)
        if not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != shape:
            raise ValueError(f"{owner}.{name}: expected {dtype} {shape}")
        if not array.flags.c_contiguous:
            raise ValueError(f"{owner}.{name} must be C-contiguous")


@dataclass(frozen=True)
class DcfKeys:
    """One party's DCF keys for M elements (see the module docstring for the layout)."""

    root_seed: np.ndarray
    seed_cw: np.ndarray
    value_cw: np.ndarray
    final_cw: np.ndarray

    def __post_init__(self) -> None:
        m = self.root_seed.shape[0] if self.root_seed.ndim == 2 else -1
        n = self.seed_cw.shape[0] if self.seed_cw.ndim == 3 else -1
        u8 = np.dtype(np.uint8)
        expected: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
            "root_seed": (u8, (m, 16)),
            "seed_cw": (u8, (n, m, 16)),
            "value_cw": (U64, (n, m)),
            "final_cw": (U64, (m,)),
        }
        check_key_arrays("DcfKeys", self, expected)
        if not 0 <= n <= 64:
            raise ValueError("DcfKeys: n_bits must be in [0, 64]")

    @property
    def n_bits(self) -> int:
        return int(self.seed_cw.shape[0])

    @property
    def size(self) -> int:
        """Number of elements M."""
        return int(self.root_seed.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of the raw buffers: exactly ``size * dcf_key_bytes(n_bits)``."""
        return sum(buffer.nbytes for buffer in self.to_buffers())

    def to_buffers(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The arrays to send, in a fixed order; the receiver rebuilds with from_buffers."""
        return (self.root_seed, self.seed_cw, self.value_cw, self.final_cw)

    @classmethod
    def from_buffers(cls, buffers: Sequence[np.ndarray]) -> DcfKeys:
        """Rebuild from ``to_buffers()`` output; validates every dtype and shape."""
        if len(buffers) != 4:
            raise ValueError(f"DcfKeys.from_buffers: expected 4 buffers, got {len(buffers)}")
        return cls(*(np.ascontiguousarray(buffer) for buffer in buffers))


def dcf_keygen(
    alpha: np.ndarray,
    n_bits: int,
    rng: bytes | RandomSource | None = None,
    beta: np.ndarray | None = None,
) -> tuple[DcfKeys, DcfKeys]:
    """Keys sharing beta * [x < alpha] on n-bit x, output additive in Z_2^64 (as in BCG+21).

    alpha: uint64 (M,) in [0, 2^n_bits); beta: uint64 (M,), default 1;
    rng: 16-byte seed (AES-CTR stream), a callable(nbytes) -> bytes, or None (os.urandom).

    Steps, vectorised over M, one loop over the levels i = 0..n-1 (bit a = alpha_i, MSB first):
      1. each party b expands its seed: G(s_b) = child L, child R, value L, value R;
      2. keep = the child on alpha's path, lose = the other; the seed CW is
         lose_0 xor lose_1, with control-bit CWs t^L_0^t^L_1^a^1 and t^R_0^t^R_1^a;
      3. value CW = (-1)^t1 (v^lose_1 - v^lose_0 - V + a*beta): it makes the two
         shares of a path that leaves alpha's path here sum to beta*[x_i < a_i];
      4. V += v^keep_0 - v^keep_1 + (-1)^t1 * value CW (the path sum so far);
      5. s_b, t_b = keep_b corrected by t_b * CW.
    Final CW = (-1)^t1 (s_1 - s_0 - V), on word 1 of the seeds.
    Cost: 8 AES blocks per element per level (two parties x four blocks).
    """
    _check_u64_vector("alpha", alpha)
    if not 0 <= n_bits <= 64:
        raise ValueError("n_bits must be in [0, 64]")
    _check_range("alpha", alpha, n_bits)
    m = alpha.shape[0]
    if beta is None:
        beta = np.ones(m, dtype=U64)
    _check_u64_vector("beta", beta, m)
    source = as_random_source(rng)
    hash_ = FixedKeyHash()

    roots = [random_u64(source, (m, 2)) for _ in range(2)]
    for root in roots:
        root[:, 0] &= CLEAR_TWEAK  # canonical form: the tweak bits of a seed are ignored
    seed_cw = np.empty((n_bits, m, 2), dtype=U64)
    value_cw = np.empty((n_bits, m), dtype=U64)
    final_cw = np.empty(m, dtype=U64)
    for lo in range(0, m, KEYGEN_CHUNK):
        hi = min(m, lo + KEYGEN_CHUNK)
        final_cw[lo:hi] = _keygen_chunk(
            hash_,
            alpha[lo:hi],
            beta[lo:hi],
            [root[lo:hi] for root in roots],
            n_bits,
            seed_cw[:, lo:hi],
            value_cw[:, lo:hi],
        )
    seed_cw_bytes = seed_cw.view(np.uint8).reshape(n_bits, m, 16)
    keys = tuple(
        DcfKeys(root.view(np.uint8).reshape(m, 16), seed_cw_bytes, value_cw, final_cw)
        for root in roots
    )
    return keys[0], keys[1]


def _select(mask: np.ndarray, if_one: np.ndarray, if_zero: np.ndarray) -> np.ndarray:
    """Per element: if_one where mask is all ones, if_zero where mask is 0 (1-D arrays)."""
    return if_zero ^ ((if_one ^ if_zero) & mask)


def _keygen_chunk(
    hash_: FixedKeyHash,
    alpha: np.ndarray,
    beta: np.ndarray,
    roots: list[np.ndarray],
    n_bits: int,
    seed_cw: np.ndarray,
    value_cw: np.ndarray,
) -> np.ndarray:
    """dcf_keygen on one chunk; fills seed_cw (n, m, 2), value_cw (n, m). Returns the
    final CW (m,): (-1)^t1 (s_1 - s_0 - V) on word 1 of the seeds."""
    seeds, controls, path_sum = dcf_levels(
        lambda seed: prg_expand(hash_, seed), alpha, beta[None, :], roots, n_bits, seed_cw,
        value_cw[:, :, None])
    return (1 - 2 * controls[1]) * (seeds[1][:, 1] - seeds[0][:, 1] - path_sum[0])


def dcf_levels(
    expand: Callable[[np.ndarray], np.ndarray],
    alpha: np.ndarray,
    beta: np.ndarray,
    roots: list[np.ndarray],
    n_bits: int,
    seed_cw: np.ndarray,
    value_cw: np.ndarray,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """The level loop of every DCF keygen here (steps 1-5 of dcf_keygen), for W payload
    words: this one and relu_fss.py's two-word DCF differ only in their PRG and leaf.

    expand(seeds (M, 2)) -> (M, 4, 2) blocks [child L, child R, value L, value R], word w
    of a value block being payload word w's value; beta (W, M); fills seed_cw (n, M, 2)
    and value_cw (n, M, W). Returns each party's last seeds and control bits and the path
    sums V (W, M), from which the caller makes its leaf CW. All elementwise passes run on
    1-D word views (numpy is slow on inner axes of length 2).
    """
    one = np.uint64(1)
    words = beta.shape[0]
    seeds = [root.copy() for root in roots]
    controls = [np.zeros(alpha.shape[0], dtype=U64), np.ones(alpha.shape[0], dtype=U64)]
    path_sum = np.zeros((words, alpha.shape[0]), dtype=U64)
    for level in range(n_bits):
        bit = (alpha >> np.uint64(n_bits - 1 - level)) & one
        lose_is_left = -bit  # all ones where alpha_i = 1: the left child leaves alpha's path
        expanded = [expand(seed) for seed in seeds]
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
        for word in range(words):
            v_lose = [_select(lose_is_left, g[:, 2, word], g[:, 3, word]) for g in expanded]
            v_keep = [_select(lose_is_left, g[:, 3, word], g[:, 2, word]) for g in expanded]
            value_cw[level, :, word] = sign * (v_lose[1] - v_lose[0] - path_sum[word]
                                               + bit * beta[word])
            path_sum[word] += v_keep[0] - v_keep[1] + sign * value_cw[level, :, word]

        for party in (0, 1):
            t_mask = -controls[party]
            for word in (0, 1):
                keep[party][:, word] ^= cw[:, word] & t_mask
            controls[party] = (keep[party][:, 0] >> bit) & one
        seeds = keep
    return seeds, controls, path_sum


def dcf_eval(party: int, keys: DcfKeys, x: np.ndarray, chunk: int = EVAL_CHUNK) -> np.ndarray:
    """This party's additive share (uint64 (M,), mod 2^64) of beta * [x < alpha].

    Steps per chunk of elements (cache-sized), per level i (bit d = x_i, MSB first):
      1. expand along the path: child block d and value block d of G(s) (2 AES blocks);
      2. if t = 1: xor the seed CW (and with it the control-bit CW) into the child;
      3. t = bit d of the child's word 0; acc += v_d + t * value CW_i;
    then acc += word 1 of the final seed + t * final CW; party 1 negates.
    Cost: n * M * 2 AES blocks, ~12 elementwise passes per level, no communication.
    """
    if party not in (0, 1):
        raise ValueError("party must be 0 or 1")
    _check_u64_vector("x", x, keys.size)
    n_bits, m = keys.n_bits, keys.size
    _check_range("x", x, n_bits)
    root = keys.root_seed.view(U64)
    seed_cw = keys.seed_cw.view(U64)
    value_cw, final_cw = keys.value_cw, keys.final_cw
    hash_ = FixedKeyHash()
    one = np.uint64(1)
    shifts = [np.uint64(n_bits - 1 - level) for level in range(n_bits)]

    out = np.empty(m, dtype=U64)
    width = max(1, min(chunk, m))
    work_all = np.empty((width, 2, 2), dtype=U64)
    scratch = np.empty((5, width), dtype=U64)
    for lo in range(0, m, width):
        hi = min(m, lo + width)
        size = hi - lo
        work = work_all[:size]
        direction, t, t_mask, acc, cw_tmp = (row[:size] for row in scratch)
        xs = x[lo:hi]
        work[:, 0, 0] = root[lo:hi, 0]
        work[:, 0, 1] = root[lo:hi, 1]
        t.fill(party)
        acc.fill(0)
        for level in range(n_bits):
            np.right_shift(xs, shifts[level], out=direction)
            direction &= one
            blocks = prg_expand_path(hash_, work, direction)
            np.negative(t, out=t_mask)
            for word in (0, 1):  # 1-D passes; see prg_expand_path
                np.bitwise_and(seed_cw[level, lo:hi, word], t_mask, out=cw_tmp)
                blocks[:, 0, word] ^= cw_tmp
            acc += blocks[:, 1, 0]
            np.bitwise_and(value_cw[level, lo:hi], t_mask, out=t_mask)
            acc += t_mask
            np.right_shift(blocks[:, 0, 0], direction, out=t)
            t &= one
        np.negative(t, out=t_mask)
        t_mask &= final_cw[lo:hi]
        acc += work[:, 0, 1]
        acc += t_mask
        if party == 1:
            np.negative(acc, out=acc)
        out[lo:hi] = acc
    return out


# --- DReLU / sign from one masked opening (as in SIGMA's DReLU; proof in docs/dcf.md) ---


def drelu_key_bytes(n_bits: int) -> int:
    """Bytes of one party's DReLU material per element: r share, MSB(r) share, (n-1)-bit DCF."""
    return 16 + dcf_key_bytes(n_bits - 1)


@dataclass(frozen=True)
class DreluMaterial:
    """One party's dealer material for DReLU on n-bit two's-complement inputs.

    r_share:   uint64 (M,), additive share of the input mask r (r_0 + r_1 = r mod 2^n)
    msb_share: uint64 (M,), additive share in Z_2^64 of MSB(r)
    dcf:       (n-1)-bit DCF keys of beta * [y < r mod 2^(n-1)] with beta = 1 - 2 MSB(r)
    """

    r_share: np.ndarray
    msb_share: np.ndarray
    dcf: DcfKeys

    def __post_init__(self) -> None:
        _check_u64_vector("DreluMaterial.r_share", self.r_share, self.dcf.size)
        _check_u64_vector("DreluMaterial.msb_share", self.msb_share, self.dcf.size)
        if self.dcf.n_bits > 63:
            raise ValueError("DreluMaterial: n_bits must be in [1, 64]")

    @property
    def n_bits(self) -> int:
        return self.dcf.n_bits + 1

    @property
    def size(self) -> int:
        return self.dcf.size

    @property
    def nbytes(self) -> int:
        """Bytes of the raw buffers: exactly ``size * drelu_key_bytes(n_bits)``."""
        return sum(buffer.nbytes for buffer in self.to_buffers())

    def to_buffers(self) -> tuple[np.ndarray, ...]:
        """The arrays to send, in a fixed order (r, MSB(r), then the DCF's four)."""
        return (self.r_share, self.msb_share, *self.dcf.to_buffers())

    @classmethod
    def from_buffers(cls, buffers: Sequence[np.ndarray]) -> DreluMaterial:
        """Rebuild from ``to_buffers()`` output; validates every dtype and shape."""
        if len(buffers) != 6:
            raise ValueError(f"DreluMaterial.from_buffers: expected 6 buffers, got {len(buffers)}")
        r_share, msb_share = (np.ascontiguousarray(buffer) for buffer in buffers[:2])
        return cls(r_share, msb_share, DcfKeys.from_buffers(buffers[2:]))


def _low_mask(n_bits: int) -> np.uint64:
    return np.uint64((1 << n_bits) - 1)


def drelu_keygen(
    m: int,
    n_bits: int,
    rng: bytes | RandomSource | None = None,
    mask: np.ndarray | None = None,
) -> tuple[DreluMaterial, DreluMaterial]:
    """Dealer: material for DReLU(x) = [x >= 0] on n-bit two's-complement x, M elements.

    Steps: 1. draw r uniform in [0, 2^n) (or take ``mask``, for tests) and share it in
    Z_2^64; 2. share MSB(r) in Z_2^64; 3. DCF keys on n-1 bits for alpha = r mod 2^(n-1),
    beta = 1 - 2 MSB(r), so that the DCF output plus the MSB(r) share is a share of
    MSB(r) xor [x_hat mod 2^(n-1) < r mod 2^(n-1)].
    Sizes: ``drelu_key_bytes(n_bits)`` bytes per element per party (24 n + 16).
    """
    if not 1 <= n_bits <= 64:
        raise ValueError("n_bits must be in [1, 64]")
    source = as_random_source(rng)
    if mask is None:
        r = random_u64(source, (m,)) & _low_mask(n_bits)
    else:
        _check_u64_vector("mask", mask, m)
        _check_range("mask", mask, n_bits)
        r = mask
    msb = r >> np.uint64(n_bits - 1)
    r_share0, msb_share0 = random_u64(source, (m,)), random_u64(source, (m,))
    dcf0, dcf1 = dcf_keygen(r & _low_mask(n_bits - 1), n_bits - 1, source, beta=1 - 2 * msb)
    return (
        DreluMaterial(r_share0, msb_share0, dcf0),
        DreluMaterial(r - r_share0, msb - msb_share0, dcf1),
    )


def drelu_mask_share(party: int, material: DreluMaterial, x_share: np.ndarray) -> np.ndarray:
    """What party ``party`` sends in the opening: (x_i + r_i) mod 2^n, n bits per element.

    ``x_share`` is an additive share of x in Z_2^64 (or in Z_2^n); only its low n bits count.
    """
    if party not in (0, 1):
        raise ValueError("party must be 0 or 1")
    _check_u64_vector("x_share", x_share, material.size)
    return (x_share + material.r_share) & _low_mask(material.n_bits)


def open_masked(masked0: np.ndarray, masked1: np.ndarray, n_bits: int) -> np.ndarray:
    """x_hat = x + r mod 2^n from the two parties' ``drelu_mask_share`` messages."""
    return (masked0 + masked1) & _low_mask(n_bits)


def drelu_eval(party: int, material: DreluMaterial, x_hat: np.ndarray) -> np.ndarray:
    """This party's additive share in Z_2^64 of DReLU(x) = 1 - MSB(x), from x_hat = x + r mod 2^n.

    Steps: 1. y = x_hat mod 2^(n-1); z_i = DCF_i(y) + MSB(r)_i, a share of
    z = MSB(r) xor [y < r mod 2^(n-1)]; 2. DReLU = (1 xor MSB(x_hat)) xor z, i.e. z_i where
    MSB(x_hat) = 1 and [i = 0] - z_i where it is 0. Local: no communication.
    Cost: one (n-1)-level DCF evaluation, 2 AES blocks per level per element.
    """
    if party not in (0, 1):
        raise ValueError("party must be 0 or 1")
    n_bits = material.n_bits
    _check_u64_vector("x_hat", x_hat, material.size)
    _check_range("x_hat", x_hat, n_bits)
    low_bits = x_hat & _low_mask(n_bits - 1)
    z_share = dcf_eval(party, material.dcf, low_bits) + material.msb_share
    hat_msb = x_hat >> np.uint64(n_bits - 1)
    # where MSB(x_hat) = 0 the result is 1 - z: party 0 holds the constant
    negated = np.uint64(1 - party) - z_share
    return np.where(hat_msb.astype(bool), z_share, negated)
