"""The ring Z_2^64 and fixed point: wrapping, shifts, encoding ranges, exact matmul."""
from __future__ import annotations

import random

import pytest
import torch

from privit.protocols import ring

M64 = 1 << 64


def py_signed(v: int) -> int:
    v %= M64
    return v - M64 if v >= 1 << 63 else v


def extreme_values() -> list[int]:
    worst = {-ring.to_signed(sum((1 << (b - 1)) << (b * i) for i in range(L)))
             for b, L in ((22, 3), (16, 4))}
    return [ring.INT64_MIN, ring.INT64_MAX, -1, 0, 1, ring.INT64_MIN + 1, *sorted(worst),
            ring.to_signed(-sum((1 << 21) << (22 * i) for i in range(3)))]


def random_ring(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randint(ring.INT64_MIN, ring.INT64_MAX, shape, generator=gen, dtype=torch.int64)


# -- scalars, wrapping, shifts -------------------------------------------------------------
def test_to_signed_and_pow2() -> None:
    assert ring.to_signed(1 << 63) == ring.INT64_MIN
    assert ring.to_signed(-1) == -1
    assert ring.to_signed(M64 + 5) == 5
    assert ring.pow2(63) == ring.INT64_MIN
    assert ring.pow2(62) == 1 << 62
    assert ring.pow2(64) == 0


def test_int64_arithmetic_wraps_like_the_ring() -> None:
    rnd = random.Random(1)
    vals = extreme_values() + [py_signed(rnd.getrandbits(64)) for _ in range(200)]
    a = torch.tensor(vals, dtype=torch.int64)
    b = torch.tensor(vals[::-1], dtype=torch.int64)
    for got, op in ((a + b, lambda x, y: x + y), (a - b, lambda x, y: x - y),
                    (a * b, lambda x, y: x * y)):
        assert got.tolist() == [py_signed(op(x, y)) for x, y in zip(vals, vals[::-1], strict=True)]


@pytest.mark.parametrize("s", [0, 1, 5, 16, 31, 62, 63])
def test_shifts_match_integer_definitions(s: int) -> None:
    rnd = random.Random(s)
    vals = extreme_values() + [py_signed(rnd.getrandbits(64)) for _ in range(200)]
    x = torch.tensor(vals, dtype=torch.int64)
    assert ring.arith_rshift(x, s).tolist() == [v >> s for v in vals]
    assert ring.logical_rshift(x, s).tolist() == [py_signed((v % M64) >> s) for v in vals]
    assert ring.lshift(x, s).tolist() == [py_signed(v << s) for v in vals]
    assert ring.msb(x).tolist() == [int(v < 0) for v in vals]
    assert ring.logical_rshift(x, 64).tolist() == [0] * len(vals)


# -- fixed point ---------------------------------------------------------------------------
@pytest.mark.parametrize("f", [8, 16, 24])
def test_encode_decode_roundtrip_and_rounding(f: int) -> None:
    x = torch.tensor([0.0, 1.0, -1.0, 0.5, -2.75, 3.0 * 2**-f, 1000.123], dtype=torch.float64)
    enc = ring.encode(x, f)
    assert enc.dtype == torch.int64
    assert torch.all((ring.decode(enc, f) - x).abs() <= 2.0 ** -(f + 1))
    # round to nearest: 0.6 LSB -> 1, 0.4 LSB -> 0, -0.6 LSB -> -1
    lsb = 2.0**-f
    assert ring.encode(torch.tensor([0.6 * lsb, 0.4 * lsb, -0.6 * lsb]), f).tolist() == [1, 0, -1]


@pytest.mark.parametrize("f", [8, 16, 24])
def test_encode_range(f: int) -> None:
    limit = ring.max_abs_encodable(f)
    assert limit == 2.0 ** (63 - f)
    near = torch.tensor([limit * (1 - 2**-40), -limit * (1 - 2**-40)], dtype=torch.float64)
    assert torch.equal(ring.decode(ring.encode(near, f), f), near)
    for bad in (limit, -limit, 2 * limit, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            ring.encode(torch.tensor([1.0, bad]), f)
    assert ring.max_abs_before_truncation(f) == 2.0 ** (63 - 2 * f)


def test_decode_refuses_non_ring_tensors() -> None:
    with pytest.raises(TypeError):
        ring.decode(torch.zeros(3), 16)


# -- ring matmul ---------------------------------------------------------------------------
def py_matmul(a: torch.Tensor, b: torch.Tensor) -> list[list[int]]:
    al, bl = a.tolist(), b.tolist()
    cols = list(zip(*bl, strict=True))
    return [[py_signed(sum(x * y for x, y in zip(row, col, strict=True))) for col in cols]
            for row in al]


@pytest.mark.parametrize("method", ["int64", "limbs"])
def test_ring_matmul_matches_big_integers(method: str) -> None:
    gen = torch.Generator().manual_seed(3)
    ext = torch.tensor(extreme_values(), dtype=torch.int64)
    for n, k, m in ((3, 5, 4), (7, 64, 3), (2, 300, 2)):
        a, b = random_ring((n, k), gen), random_ring((k, m), gen)
        a[0] = ext[torch.arange(k) % len(ext)]
        b[:, 0] = ext[torch.arange(k) % len(ext)].flip(0)
        assert ring.ring_matmul(a, b, method).tolist() == py_matmul(a, b)


@pytest.mark.parametrize("b_bits, n_limbs, k", [(22, 3, 2048), (16, 4, 2049), (16, 4, 5000)])
def test_limbs_exact_at_their_worst_case(b_bits: int, n_limbs: int, k: int) -> None:
    """Every digit at -2^(b-1): all K products have the largest magnitude and the same sign."""
    assert ring.limb_plan(k)[:2] == (b_bits, n_limbs)
    worst = -ring.to_signed(sum((1 << (b_bits - 1)) << (b_bits * i) for i in range(n_limbs)))
    a = torch.full((2, k), worst, dtype=torch.int64)
    b = torch.full((k, 2), worst, dtype=torch.int64)
    a[1, :] = ring.INT64_MIN
    expected = py_signed(k * worst * worst)
    got = ring.ring_matmul_limbs(a, b)
    assert got[0].tolist() == [expected, expected]
    assert torch.equal(got, torch.matmul(a, b))


def test_limb_plan_rule_is_exact_by_construction() -> None:
    for k in (1, 16, 64, 192, 256, 682, 683, 768, 2048, 2049, 1 << 20, 1 << 23):
        b, n_limbs, t = ring.limb_plan(k)
        assert b * n_limbs >= 64
        assert t * k * 2 ** (2 * b - 2) <= 2**53
    assert ring.limb_plan(ring.LIMBS_MAX_K)
    with pytest.raises(ValueError):
        ring.limb_plan(ring.LIMBS_MAX_K + 1)


VIT_SHAPES = [((65, 256), (256, 768)), ((197, 192), (192, 768)), ((4, 65, 64), (4, 64, 65)),
              ((12, 257, 16), (12, 16, 257)), ((12, 257, 257), (12, 257, 16))]


@pytest.mark.parametrize("sa, sb", VIT_SHAPES)
def test_limbs_equal_native_on_vit_shapes(sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(sum(sa) + sum(sb))
    a, b = random_ring(sa, gen), random_ring(sb, gen)
    ext = torch.tensor(extreme_values(), dtype=torch.int64)
    a.view(-1)[: len(ext)] = ext
    b.view(-1)[-len(ext):] = ext
    assert torch.equal(ring.ring_matmul(a, b, "limbs"), ring.ring_matmul(a, b, "int64"))
    assert torch.equal(ring.ring_matmul(a, b), torch.matmul(a, b))


def test_batched_broadcast_and_errors() -> None:
    gen = torch.Generator().manual_seed(5)
    a, b = random_ring((3, 4, 5), gen), random_ring((5, 6), gen)
    want = torch.stack([torch.matmul(a[i], b) for i in range(3)])
    assert torch.equal(ring.ring_matmul(a, b, "int64"), want)
    assert torch.equal(ring.ring_matmul(a, b, "limbs"), want)
    with pytest.raises(ValueError):
        ring.ring_matmul(a, random_ring((4, 6), gen))
    with pytest.raises(TypeError):
        ring.ring_matmul(a.double(), b)
    with pytest.raises(ValueError):
        ring.ring_matmul(a, b, "float32")


# -- narrow weights (one limb) ---------------------------------------------------------------
def test_narrow_plan_is_the_widest_exact_one() -> None:
    """b is the largest width with k * 2^(b-1) * 2^(w_bits-1) <= 2^53 (at most 53: a digit
    must be exact in float64), L = ceil(64 / b); ViT-Base's shapes take 3 GEMMs with 21 bits."""
    assert ring.narrow_plan(768, 21) == (24, 3)
    assert ring.narrow_plan(3072, 21) == (22, 3)
    assert ring.narrow_plan(3072, 22) == (21, 4)
    assert ring.narrow_plan(1, 1) == (53, 2)
    for k in (1, 2, 3, 767, 768, 769, 2048, 3072, 4096, 1 << 20):
        for w_bits in (1, 8, 21, 30):
            b, n_limbs = ring.narrow_plan(k, w_bits)
            assert k * 2 ** (b + w_bits - 2) <= 2**53
            assert b == 53 or k * 2 ** (b + w_bits - 1) > 2**53
            assert b * n_limbs >= 64 > b * (n_limbs - 1)
    with pytest.raises(ValueError, match="too large"):
        ring.narrow_plan(1 << 34, 21)  # b would be 0 (b = 1 at 2^33: 64 GEMMs, still exact)
    with pytest.raises(ValueError):
        ring.narrow_plan(0, 21)


@pytest.mark.parametrize("k, w_bits", [(1, 1), (7, 2), (300, 21), (768, 21), (1024, 21),
                                        (3072, 21), (4096, 22), (1 << 13, 40)])
def test_narrow_exact_at_the_plan_limits(k: int, w_bits: int) -> None:
    """Every digit of a at -2^(b-1) and every w at -+2^(w_bits-1): all K products have the
    largest magnitude and one sign, reaching exactly 2^53 when k is a power of two."""
    b, n_limbs = ring.narrow_plan(k, w_bits)
    worst = -ring.to_signed(sum((1 << (b - 1)) << (b * i) for i in range(n_limbs)))
    bound = 1 << (w_bits - 1)
    gen = torch.Generator().manual_seed(k + w_bits)
    a = random_ring((6, k), gen)
    a[0], a[1], a[2], a[3] = worst, ring.INT64_MIN, -1, ring.INT64_MAX
    w = torch.randint(-bound, bound + 1, (k, 5), generator=gen)
    w[:, 0], w[:, 1] = -bound, bound
    w[::2, 2] = bound
    w[1::2, 2] = -bound
    got = ring.ring_matmul_narrow(a, ring.narrow_weight(w, w_bits))
    assert torch.equal(got, torch.matmul(a, w))
    assert got[0, 0].item() == py_signed(k * worst * -bound)


@pytest.mark.parametrize("sa, sw", [((197, 768), (768, 2304)), ((2, 197, 3072), (3072, 64)),
                                    ((3, 4, 5), (5, 6)), ((0, 5), (5, 2)), ((2, 0), (0, 3))])
def test_narrow_equals_native(sa: tuple[int, ...], sw: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(sum(sa) + sum(sw))
    a = random_ring(sa, gen)
    ext = torch.tensor(extreme_values(), dtype=torch.int64)
    a.view(-1)[: min(len(ext), a.numel())] = ext[: a.numel()]
    w = torch.randint(-(1 << 20), (1 << 20) + 1, sw, generator=gen)
    got = ring.ring_matmul_narrow(a, ring.narrow_weight(w, 21))
    assert got.shape == torch.matmul(a, w).shape
    assert torch.equal(got, torch.matmul(a, w))


def test_narrow_refuses_what_does_not_fit() -> None:
    bound = 1 << 20
    w = torch.zeros((4, 3), dtype=torch.int64)
    for bad in (bound + 1, -bound - 1, ring.INT64_MIN, ring.INT64_MAX):
        w[2, 1] = bad
        with pytest.raises(ValueError, match="exceed"):
            ring.narrow_weight(w, 21)
    w[2, 1] = -bound
    assert ring.narrow_weight(w, 21).values is w
    with pytest.raises(ValueError):
        ring.narrow_weight(w, 54)  # a 54-bit weight is not exact in float64
    with pytest.raises(ValueError):
        ring.narrow_weight(w.reshape(1, 4, 3), 21)
    with pytest.raises(TypeError):
        ring.narrow_weight(w.double(), 21)
    with pytest.raises(ValueError, match="mismatch"):
        ring.ring_matmul_narrow(torch.zeros((2, 3), dtype=torch.int64), ring.narrow_weight(w, 21))
