"""The ring Z_2^64 as torch.int64, fixed-point encoding, and exact ring matmul.

Every share and every public ring value is an int64 tensor; torch's int64 add, sub, mul
and left shift wrap modulo 2^64 (two's complement), which is exactly ring arithmetic.

Fixed point (f = frac_bits fractional bits): a real x is stored as round(x * 2^f).
- storage: |x| < 2^(63-f) (the encoding must fit a signed 64-bit integer);
- a product of two encoded values carries 2f fractional bits, so before its truncation
  |x*y| < 2^(63-2f) (f = 16: 2^31), and |x*y| < 2^(62-2f) for the exact and the dealer
  truncations, which add 2^62 (see truncation.py);
- resolution 2^-f; `encode` rounds to nearest (ties to even) and rejects values out of
  range or not finite instead of wrapping them silently.

Ring matmul: torch computes int64 matmul on CPU with its own (non-BLAS) kernel, which
wraps correctly but runs on one core. The alternative splits both operands into L
balanced b-bit limbs so that float64 BLAS computes exact partial products: a limb is
in [-2^(b-1), 2^(b-1)), a sum of t products over K terms is at most t*K*2^(2b-2) in
magnitude, so it is exact in float64 whenever t*K*2^(2b-2) <= 2^53; only limb pairs
whose shift b*(i+j) is below 64 matter mod 2^64 (6 GEMMs for L = 3, b = 22). Which one is
faster depends on the CPU (docs/arithmetic.md, section 6: int64 wins most ViT shapes on an
AVX-512 Intel VM, limbs win them 5-15x on an AVX2 AMD one), so `auto` asks a cost model
per kernel that protocols/matmul_calibration.py fits on this machine, cached per CPU,
torch version and thread count. PRIVIT_MATMUL=int64|limbs forces a kernel.
`ring_matmul_narrow` serves a right operand known to be narrow (|w| <= 2^(w_bits-1): the
model owner's plaintext weights, protocols/owner_matmul.py): a's limbs against w as ONE
limb, L = ceil(64 / b) GEMMs (`narrow_plan`; 3 at ViT-Base's shapes instead of 6 and 10).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from privit.protocols.matmul_calibration import Calibration, MatmulCalibrator, MatmulDims

RING_BITS = 64
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
FLOAT64_EXACT_BITS = 53
MATMUL_METHODS = ("auto", "int64", "limbs")
MATMUL_ENV = "PRIVIT_MATMUL"
"""Environment variable forcing `auto`'s choice: int64, limbs, or auto (the default)."""
SMALL_MATMUL_MACS = 1 << 16
"""Below this many multiply-adds `auto` takes int64 without calibrating: the limb kernel's
fixed cost (limb extraction, six GEMM calls, conversions) is larger than the whole product."""
LIMBS_MAX_K = 1 << 23
"""The longest inner dimension the limb kernel keeps exact (`limb_plan`)."""


# -- scalars and wrapping ------------------------------------------------------------
def to_signed(v: int) -> int:
    """The Python int `v` reduced mod 2^64 into the int64 range [-2^63, 2^63)."""
    v &= (1 << RING_BITS) - 1
    return v - (1 << RING_BITS) if v >= 1 << (RING_BITS - 1) else v


def pow2(s: int) -> int:
    """2^s as a ring element (int64), e.g. pow2(63) = -2^63; pow2(s >= 64) = 0."""
    if s < 0:
        raise ValueError(f"negative power {s}")
    return to_signed(1 << s) if s < RING_BITS else 0


def as_ring(x: torch.Tensor | int) -> torch.Tensor:
    """`x` as an int64 tensor; refuses other dtypes rather than converting floats."""
    if isinstance(x, int):
        return torch.tensor(to_signed(x), dtype=torch.int64)
    if x.dtype != torch.int64:
        raise TypeError(f"ring values are int64 tensors, got {x.dtype}")
    return x


# -- fixed point -----------------------------------------------------------------------
def max_abs_encodable(frac_bits: int) -> float:
    """Values must satisfy |x| < 2^(63-f) to be stored."""
    return float(2 ** (RING_BITS - 1 - frac_bits))


def max_abs_before_truncation(frac_bits: int) -> float:
    """A product (2f fractional bits) must satisfy |x*y| < 2^(63-2f) before truncation."""
    return float(2 ** (RING_BITS - 1 - 2 * frac_bits))


def encode(x: torch.Tensor | float | Sequence[float], frac_bits: int) -> torch.Tensor:
    """Fixed-point encoding: round(x * 2^f) as int64, for finite |x| < 2^(63-f)."""
    t = torch.as_tensor(x, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("cannot encode NaN or infinite values")
    limit = max_abs_encodable(frac_bits)
    if t.numel() and float(t.abs().max()) >= limit:
        raise ValueError(
            f"value {float(t.abs().max()):.6g} is out of the fixed-point range "
            f"|x| < 2^{63 - frac_bits} (f = {frac_bits})"
        )
    return torch.round(t * float(2**frac_bits)).to(torch.int64)


def decode(x: torch.Tensor, frac_bits: int) -> torch.Tensor:
    """The real value of a fixed-point ring element, as float64 (two's complement)."""
    return as_ring(x).to(torch.float64) / float(2**frac_bits)


# -- shifts ----------------------------------------------------------------------------
def arith_rshift(x: torch.Tensor, s: int) -> torch.Tensor:
    """Arithmetic (sign-extending) right shift: floor(x / 2^s) for signed x."""
    if not 0 <= s:
        raise ValueError(f"bad shift {s}")
    return x >> min(s, RING_BITS - 1)


def logical_rshift(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift: floor(x / 2^s) with x read as unsigned in [0, 2^64)."""
    if not 0 <= s:
        raise ValueError(f"bad shift {s}")
    if s == 0:
        return x.clone()
    if s >= RING_BITS:
        return torch.zeros_like(x)
    return (x >> s) & ((1 << (RING_BITS - s)) - 1)


def lshift(x: torch.Tensor, s: int) -> torch.Tensor:
    """x * 2^s mod 2^64."""
    if not 0 <= s:
        raise ValueError(f"bad shift {s}")
    if s >= RING_BITS:
        return torch.zeros_like(x)
    return torch.bitwise_left_shift(x, s)


def msb(x: torch.Tensor) -> torch.Tensor:
    """The top bit of each element (1 for negative int64), as int64 {0, 1}."""
    return (x < 0).to(torch.int64)


def ring_sum(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Wrapping sum of several ring tensors (e.g. every party's share)."""
    if not xs:
        raise ValueError("nothing to sum")
    out = xs[0] + xs[1] if len(xs) > 1 else xs[0].clone()  # one pass for the first two
    for x in xs[2:]:
        out += x
    return out


def broadcast_shape(*shapes: Sequence[int]) -> tuple[int, ...]:
    """numpy's broadcasting rule. (torch.broadcast_shapes imports sympy on first use,
    which costs about a second inside the online phase.)"""
    return tuple(int(d) for d in np.broadcast_shapes(*(tuple(s) for s in shapes)))


# -- matmul ----------------------------------------------------------------------------
def limb_plan(k: int) -> tuple[int, int, int]:
    """(b, L, t) for a product with inner dimension k: limb width b, limb count L, and how
    many limb products t may share one float64 accumulator while staying exact.

    Rule: L = 3 limbs of b = 22 bits when k * 2^42 <= 2^53 (k <= 2048), else L = 4 limbs
    of 16 bits (k <= 2^23); t = floor(2^53 / (k * 2^(2b-2))) >= 1.
    """
    for b, n_limbs in ((22, 3), (16, 4)):
        per_product = k * 2 ** (2 * b - 2)
        if per_product <= 2**FLOAT64_EXACT_BITS:
            return b, n_limbs, max(1, 2**FLOAT64_EXACT_BITS // max(per_product, 1))
    raise ValueError(f"inner dimension {k} is too large for exact limb matmul")


def _limb_pairs(bits: int, n_limbs: int) -> list[list[tuple[int, int]]]:
    """Per shift s (the product's weight 2^(bits*s)), the limb pairs (i, s - i); shifts of
    64 bits or more vanish mod 2^64. Their total is the GEMM count (6 for 3 limbs, 10 for 4)."""
    return [[(i, shift - i) for i in range(shift + 1)]
            for shift in range(n_limbs) if bits * shift < RING_BITS]


def _balanced_limbs(x: torch.Tensor, b: int, n_limbs: int) -> torch.Tensor:
    """float64 (L, *x.shape): digits d_i in [-2^(b-1), 2^(b-1)) with x = sum d_i 2^(b i)
    mod 2^64. Adding H = sum_i 2^(b-1) 2^(b i) turns them into unsigned digits u_i = d_i +
    2^(b-1) of x + H, which are plain shifts and masks."""
    offset = to_signed(sum((1 << (b - 1)) << (b * i) for i in range(n_limbs)))
    y = x + offset
    out = torch.empty((n_limbs, *x.shape), dtype=torch.float64)
    tmp = torch.empty_like(y)
    for i in range(n_limbs):
        width = min(b, RING_BITS - b * i)
        torch.bitwise_right_shift(y, b * i, out=tmp)
        tmp.bitwise_and_((1 << width) - 1)
        out[i].copy_(tmp)
    out.sub_(float(1 << (b - 1)))
    return out


def _as_batched(
    a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Broadcast batch dims and flatten them: (B, n, k), (B, k, m) and the batch shape."""
    batch = broadcast_shape(a.shape[:-2], b.shape[:-2])
    a3 = a.expand(*batch, *a.shape[-2:]).reshape(-1, *a.shape[-2:])
    b3 = b.expand(*batch, *b.shape[-2:]).reshape(-1, *b.shape[-2:])
    return a3, b3, tuple(batch)


def ring_matmul_limbs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact a @ b mod 2^64 through float64 BLAS on balanced limbs (see `limb_plan`)."""
    k = a.shape[-1]
    bits, n_limbs, per_acc = limb_plan(k)
    two_d = a.dim() == 2 and b.dim() == 2
    batch: tuple[int, ...] = ()
    if two_d:
        a3, b3 = a.unsqueeze(0), b.unsqueeze(0)
    else:
        a3, b3, batch = _as_batched(a, b)
    da, db = _balanced_limbs(a3, bits, n_limbs), _balanced_limbs(b3, bits, n_limbs)
    shape = (a3.shape[0], a3.shape[1], b3.shape[2])
    out = torch.zeros(shape, dtype=torch.int64)
    acc = torch.empty(shape, dtype=torch.float64)
    part = torch.empty(shape, dtype=torch.int64)
    for shift, pairs in enumerate(_limb_pairs(bits, n_limbs)):
        for g in range(0, len(pairs), per_acc):
            for j, (p, q) in enumerate(pairs[g:g + per_acc]):
                if two_d:
                    if j == 0:
                        torch.mm(da[p, 0], db[q, 0], out=acc[0])
                    else:
                        acc[0].addmm_(da[p, 0], db[q, 0])
                elif j == 0:
                    torch.bmm(da[p], db[q], out=acc)
                else:
                    acc.baddbmm_(da[p], db[q])
            part.copy_(acc)  # exact: |acc| <= 2^53
            if shift:
                part.bitwise_left_shift_(bits * shift)
            out += part
    return out[0] if two_d else out.reshape(*batch, shape[1], shape[2])


def narrow_plan(k: int, w_bits: int) -> tuple[int, int]:
    """(b, L) for a @ w with inner dimension k and |w| <= 2^(w_bits-1): the widest limbs of
    a, b bits, whose products stay exact in float64 (k * 2^(b-1) * 2^(w_bits-1) <= 2^53),
    and L = ceil(64 / b) of them, one GEMM each (w is one limb). E.g. w_bits 21: b 24, L 3
    at k = 768; b 22, L 3 at k = 3072 (where `limb_plan` needs 6 and 10 GEMMs)."""
    if k < 1 or not 1 <= w_bits <= FLOAT64_EXACT_BITS:
        raise ValueError(f"no narrow plan for k = {k}, w_bits = {w_bits}")
    # the largest b with k * 2^(b + w_bits - 2) <= 2^53; (k - 1).bit_length() = ceil(log2 k)
    b = FLOAT64_EXACT_BITS + 2 - w_bits - (k - 1).bit_length()
    if b < 1:
        raise ValueError(f"inner dimension {k} is too large for an exact product with "
                         f"{w_bits}-bit weights")
    b = min(b, FLOAT64_EXACT_BITS)  # a limb's unsigned digit (< 2^b) must be exact in float64
    return b, -(-RING_BITS // b)


@dataclass(frozen=True)
class NarrowWeight:
    """A ring matrix w (k, m), int64, checked by `narrow_weight` to satisfy |w| <=
    2^(bits-1): the one-limb operand of `ring_matmul_narrow`. It holds w itself, not a
    float64 copy: the copy of ViT-Base's weights raised party 0's peak from 1,756 to
    2,307 MiB, while converting per product costs one pass over k m (BENCHMARKS.md)."""

    values: torch.Tensor
    bits: int


def within_bits(w: torch.Tensor, bits: int) -> bool:
    """Every entry of the ring tensor w within +-2^(bits-1) (min and max in one pass, not
    abs: abs(-2^63) wraps to -2^63); True for an empty w."""
    if not w.numel():
        return True
    low, high = torch.aminmax(w)
    return -(1 << (bits - 1)) <= int(low) and int(high) <= 1 << (bits - 1)


def narrow_weight(w: torch.Tensor, bits: int) -> NarrowWeight:
    """`w` (int64, 2-D) for `ring_matmul_narrow`; ValueError unless every |w| <= 2^(bits-1)
    (never a silently wrong product)."""
    w = as_ring(w)
    if w.dim() != 2:
        raise ValueError(f"a narrow weight is a matrix, got shape {tuple(w.shape)}")
    if not 1 <= bits <= FLOAT64_EXACT_BITS:
        raise ValueError(f"narrow weights have 1..{FLOAT64_EXACT_BITS} bits, got {bits}")
    if not within_bits(w, bits):
        raise ValueError(f"weight entries in [{int(w.min())}, {int(w.max())}] exceed "
                         f"+-2^{bits - 1} ({bits} bits)")
    return NarrowWeight(w, bits)


def ring_matmul_narrow(a: torch.Tensor, w: NarrowWeight) -> torch.Tensor:
    """Exact a @ w mod 2^64 for any int64 a (..., n, k) and a narrow w (k, m): a's L
    balanced limbs (`narrow_plan`) stacked into ONE float64 GEMM (L*rows, k) @ (k, m)
    with w in float64 (exact: |w| <= 2^52), each limb's exact product converted to int64
    and summed with its shift 2^(b i) (Horner)."""
    a = as_ring(a)
    k, m = w.values.shape
    if a.dim() < 2 or a.shape[-1] != k:
        raise ValueError(f"ring_matmul_narrow shape mismatch {tuple(a.shape)} @ {(k, m)}")
    if k == 0:
        return torch.zeros((*a.shape[:-1], m), dtype=torch.int64)
    bits, n_limbs = narrow_plan(k, w.bits)
    rows = a.reshape(-1, k)
    limbs = _balanced_limbs(rows, bits, n_limbs).reshape(-1, k)
    parts = torch.mm(limbs, w.values.to(torch.float64)).reshape(n_limbs, rows.shape[0], m)
    out = parts[n_limbs - 1].to(torch.int64)
    for i in range(n_limbs - 2, -1, -1):
        out.bitwise_left_shift_(bits)
        out += parts[i].to(torch.int64)  # exact: |parts| <= 2^53
    return out.reshape(*a.shape[:-1], m)


def matmul_dims(a_shape: Sequence[int], b_shape: Sequence[int]) -> MatmulDims:
    """(batch, n, k, m) of (..., n, k) @ (..., k, m), batch = the broadcast batch's size."""
    batch = math.prod(broadcast_shape(a_shape[:-2], b_shape[:-2]))
    return MatmulDims(int(batch), int(a_shape[-2]), int(a_shape[-1]), int(b_shape[-1]))


def matmul_features(method: str, dims: MatmulDims) -> tuple[float, ...]:
    """The cost model's features of a kernel (protocols/matmul_calibration.py).

    int64: (1, MACs). limbs: (1, GEMMs x MACs, element passes outside BLAS), the passes
    being L limbs of each operand (batch broadcast materialised) plus, on the output, one
    int64 conversion per accumulator group and the zeroed result.
    """
    batch, n, k, m = dims
    if method == "int64":
        return (1.0, float(dims.macs))
    if method == "limbs":
        bits, n_limbs, per_acc = limb_plan(k)
        pairs = _limb_pairs(bits, n_limbs)
        gemms = sum(len(p) for p in pairs)
        groups = sum(-(-len(p) // per_acc) for p in pairs)
        passes = n_limbs * batch * (n * k + k * m) + (groups + 1) * batch * n * m
        return (1.0, float(gemms * dims.macs), float(passes))
    raise ValueError(f"no cost features for matmul method {method!r}")


def narrow_features(dims: MatmulDims, w_bits: int) -> tuple[float, ...]:
    """`ring_matmul_narrow`'s cost in the limbs' model (same features, same coefficients):
    L GEMMs (`narrow_plan`), and as element passes L limbs of a, w's float64 conversion,
    and L int64 conversions (and shifted sums) of the output."""
    batch, n, k, m = dims
    n_limbs = narrow_plan(k, w_bits)[1]
    return (1.0, float(n_limbs * dims.macs), float(n_limbs * batch * n * (k + m) + k * m))


MATMUL_FEATURE_NAMES = {"int64": ("call", "MAC"), "limbs": ("call", "GEMM MAC", "element pass")}
"""What each of `matmul_features`' entries counts, for showing a calibration."""

MATMUL_CALIBRATOR = MatmulCalibrator({"int64": torch.matmul, "limbs": ring_matmul_limbs},
                                     matmul_features)
"""This process's calibrations (measured or read from the cache on first need, not at import)."""


def forced_matmul_method() -> str | None:
    """The kernel PRIVIT_MATMUL forces, or None for `auto` (unset, empty or "auto")."""
    value = os.environ.get(MATMUL_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in MATMUL_METHODS:
        raise ValueError(f"{MATMUL_ENV}={value!r}: choose from {MATMUL_METHODS}")
    return value


def _has_narrow_plan(k: int, w_bits: int) -> bool:
    try:
        narrow_plan(k, w_bits)
    except ValueError:
        return False
    return True


def choose_matmul_method(a_shape: Sequence[int], b_shape: Sequence[int], threads: int,
                         calibration: Calibration | None = None,
                         w_bits: int | None = None) -> str:
    """The exact kernel to use for these shapes: PRIVIT_MATMUL if it forces one; int64 for
    products below SMALL_MATMUL_MACS or with k beyond the limbs' reach; otherwise the one
    `calibration` (default: this machine's for `threads`, see MATMUL_CALIBRATOR) predicts
    faster, int64 on a tie.

    w_bits: b is known to fit `w_bits` bits (a `NarrowWeight`), so "narrow"
    (`ring_matmul_narrow`) is a candidate too, predicted with the limbs' coefficients
    (`narrow_features`); PRIVIT_MATMUL=limbs then forces "narrow" (it is the limb kernel
    with W in one limb) when `narrow_plan` has a plan for k.
    """
    dims = matmul_dims(a_shape, b_shape)
    narrow_bits = w_bits if w_bits is not None and _has_narrow_plan(dims.k, w_bits) else None
    forced = forced_matmul_method()
    if forced is not None:
        return "narrow" if forced == "limbs" and narrow_bits is not None else forced
    if dims.macs < SMALL_MATMUL_MACS or dims.k > LIMBS_MAX_K:
        return "int64"
    cal = calibration if calibration is not None else MATMUL_CALIBRATOR.calibration(threads)
    costs = {"int64": cal.predict("int64", matmul_features("int64", dims)),
             "limbs": cal.predict("limbs", matmul_features("limbs", dims))}
    if narrow_bits is not None:
        costs["narrow"] = cal.predict("limbs", narrow_features(dims, narrow_bits))
    return min(costs, key=costs.__getitem__)  # the first of equals: int64 on a tie


def ring_matmul(a: torch.Tensor, b: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Exact a @ b mod 2^64 for int64 (..., n, k) @ (..., k, m), batch dims broadcast.

    method: "int64" (torch's native kernel), "limbs" (float64 BLAS on limbs) or "auto"
    (`choose_matmul_method` with torch's thread count). All are exact: the choice changes
    the time only.
    """
    a, b = as_ring(a), as_ring(b)
    if a.dim() < 2 or b.dim() < 2:
        raise ValueError(f"ring_matmul needs matrices, got {tuple(a.shape)} @ {tuple(b.shape)}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"ring_matmul shape mismatch {tuple(a.shape)} @ {tuple(b.shape)}")
    if method not in MATMUL_METHODS:
        raise ValueError(f"unknown matmul method {method!r}; choose from {MATMUL_METHODS}")
    if method == "auto":
        method = choose_matmul_method(a.shape, b.shape, torch.get_num_threads())
    if method == "limbs" and a.shape[-1] > 0 and a.numel() and b.numel():
        return ring_matmul_limbs(a, b)
    return torch.matmul(a, b)
