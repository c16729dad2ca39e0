"""exp, reciprocal, inverse square root and the batched products they use: accuracy
against float64 over the documented ranges, behaviour outside them, and exact rounds,
online bytes and dealer material (2 parties + dealer, in memory)."""
from __future__ import annotations

import math

import pytest
import torch
from nonlinear_helpers import (
    LSB,
    Expected,
    check_costs,
    check_offline,
    make_cfg,
    run,
    shared,
)

from privit.protocols import compare, exp, products, reciprocal, ring, rsqrt
from privit.protocols.approx_config import (
    ExpConfig,
    ReciprocalConfig,
    RsqrtConfig,
    guess_error,
    reciprocal_grid,
)

FSS = "fss"


def quantized(x: torch.Tensor) -> torch.Tensor:
    """x as the fixed-point input the parties hold."""
    return ring.decode(ring.encode(x, F_BITS), F_BITS)


# -- batched products ------------------------------------------------------------------------------
@pytest.mark.parametrize("trunc", ["local", "dealer"])
def test_mul_many_broadcast_square_and_costs(trunc: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 1, generator=gen, dtype=torch.float64)
    z = torch.randn(3, 4, generator=gen, dtype=torch.float64)

    def job(sess):  # type: ignore[no-untyped-def]
        xs, ys, zs = shared(sess, 1, x), shared(sess, 0, y), shared(sess, 0, z)
        return products.mul_many(sess, [(xs, ys), (xs, None), (ys, zs)], label="t")

    res = run(job, make_cfg(trunc))
    for got, want in zip(res.value, [x * y, x * x, y * z], strict=True):
        assert torch.allclose(got, want, atol=3 * LSB)
    shape = (3, 4)
    exp_costs = Expected().ours("t", 12 + 3 + 12 + 12 + 3, [
        ("bcast_triple", (2, 3, 4, 3, 1)), ("square", shape), ("bcast_triple", (2, 3, 4, 3, 1))])
    if trunc == "dealer":
        exp_costs.ours("truncate_many", 36, [("trunc_pair", (F_BITS, *shape))] * 3)
    check_costs(res, exp_costs)
    check_offline(res, 3 * 8 * 12 + (3 * 16 * 12 if trunc == "dealer" else 0))


F_BITS = 16


# -- exp ---------------------------------------------------------------------------------------------
def exp_expected(shape: tuple[int, ...], clamp_high: bool) -> Expected:
    n = math.prod(shape)
    stacked = (2, *shape) if clamp_high else shape
    zeros = torch.zeros(stacked, dtype=torch.int64)
    if clamp_high:
        e = Expected().compare(lambda s: compare.relu(s, zeros, method=FSS, bits=32))
    else:  # the low clamp alone: x + T without its f low bits, on 32 - 16 + 1 bits
        e = Expected().compare(lambda s: compare.relu_gate(s, zeros, zeros, method=FSS,
                                                           bits=17)[1])
    e.ours("exp_poly", n, [("square", shape)])
    e.ours("exp_poly", 3 * n, [("triple", shape), ("square", shape)])
    e.ours("exp_poly", 2 * n, [("triple", shape)])
    e.ours("exp_square", n, [("square", shape)]).ours("exp_square", n, [("square", shape)])
    return e


def test_exp_accuracy_range_and_costs() -> None:
    x = torch.cat([torch.linspace(-16, 0, 1601, dtype=torch.float64),
                   torch.tensor([-16.5, -30.0, -1e3, 0.25, 3.0, 1e3], dtype=torch.float64)])
    res = run(lambda s: exp.exp(s, shared(s, 1, x), ExpConfig(method=FSS)))
    got, inside = res.value, x[:1601]
    err = (got[:1601] - torch.exp(inside)).abs()
    assert err.max() <= 4e-4  # measured about 2e-4; worst case 2^s (D + 3) 2^-f = 6.7e-4
    assert err[inside <= -4].max() <= 4 * LSB  # tiny values: rounding only
    # below -16: clamped to e^-16; above 0: clamped to 1
    assert torch.all((got[1601:1604] - math.exp(-16)).abs() <= 2 * LSB)
    assert torch.all((got[1604:] - 1).abs() <= 4e-4)
    shape = (x.numel(),)
    exp_costs = exp_expected(shape, clamp_high=True)
    check_costs(res, exp_costs)
    check_offline(res, 6 * 8 * x.numel(), exp_costs.plan[:1])


def test_exp_without_high_clamp_costs() -> None:
    x = -torch.rand(2, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 10
    cfg = ExpConfig(method=FSS, clamp_high=False)
    res = run(lambda s: exp.exp(s, shared(s, 1, x), cfg))
    assert (res.value - torch.exp(x)).abs().max() <= 4e-4
    costs = exp_expected((2, 7), clamp_high=False)
    check_costs(res, costs)
    check_offline(res, 6 * 8 * x.numel(), costs.plan[:1])
    assert costs.plan[0] == ("relu_fss", (14, 17, 0))


def test_exp_low_clamp_on_dropped_bits_near_the_clip() -> None:
    # x + T within one unit above 0: the truncated sign may clamp it to 0 (e^-16 instead
    # of e^x, x < -15): the error stays below e^-15 - e^-16 + rounding
    x = torch.cat([torch.linspace(-16.5, -14.5, 401, dtype=torch.float64),
                   torch.tensor([-1e3, -40.0, -0.0, -1e-4], dtype=torch.float64)])
    res = run(lambda s: exp.exp(s, shared(s, 1, x), ExpConfig(method=FSS, clamp_high=False)))
    ref = torch.exp(x.clamp(min=-16.0))
    assert (res.value - ref)[:403].abs().max() <= math.exp(-15) - math.exp(-16) + 4 * LSB
    assert (res.value[-2:] - 1).abs().max() <= 4e-4
    exact = run(lambda s: exp.exp(s, shared(s, 1, x),
                                  ExpConfig(method=FSS, clamp_high=False, clamp_drop_bits=0)))
    assert (exact.value - ref)[:403].abs().max() <= 4 * LSB
    assert exact.plan[0] == ("relu_fss", (x.numel(), 32, 0))  # the exact comparison
    with pytest.raises(ValueError, match="clamp_drop_bits"):
        ExpConfig(clamp_drop_bits=25)


def test_exp_config_validation() -> None:
    with pytest.raises(ValueError, match="power of two"):
        ExpConfig(clip=12.0)
    with pytest.raises(ValueError, match="method"):
        ExpConfig(method="magic")
    coefs = ExpConfig().coefficients()
    v = torch.linspace(-1, 1, 101, dtype=torch.float64)
    poly = sum(c * v**k for k, c in enumerate(coefs))
    assert (poly - torch.exp(2 * (v - 1))).abs().max() < 2e-6


# -- reciprocal -------------------------------------------------------------------------------------
def recip_expected(shape: tuple[int, ...], cfg: ReciprocalConfig) -> Expected:
    n = math.prod(shape)
    k = len(cfg.grid().thresholds)
    e = Expected().compare(lambda s: compare.drelu(s, torch.zeros((k, *shape), dtype=torch.int64),
                                                   method=FSS, bits=64))
    e.ours("reciprocal", 2 * n, [("triple", shape)])
    for _ in range(cfg.factors - 1):
        e.ours("reciprocal", 3 * n, [("square", shape), ("triple", shape)])
    return e.ours("reciprocal", 2 * n, [("triple", shape)])


def test_reciprocal_accuracy_range_and_costs() -> None:
    cfg = ReciprocalConfig(method=FSS)
    inside = torch.exp2(torch.linspace(0, 7.99, 300, dtype=torch.float64))
    outside = torch.tensor([0.05, 0.3, 0.7, 256.0, 300.0, 1e4], dtype=torch.float64)
    x = torch.cat([inside, outside])
    res = run(lambda s: reciprocal.reciprocal(s, shared(s, 1, x), cfg))
    got = res.value
    # inside: relative error e0^4 <= 5.6e-5 plus a few LSB of the output
    assert torch.all((got[:300] - 1 / inside).abs() <= 1 / inside * 1e-4 + 3 * LSB)
    assert cfg.relative_error() < 6e-5
    # below 2^lo: a positive underestimate, bounded by 2^k y_0; from 2^hi on: 0
    y0 = reciprocal_grid(0.0, 8.0, 4).guesses[0]
    below = got[300:303]
    assert torch.all(below > 0) and torch.all(below <= 1 / outside[:3]) and torch.all(below <= 4 * y0)
    assert torch.all(got[303:].abs() <= LSB)
    exp_costs = recip_expected((x.numel(),), cfg)
    check_costs(res, exp_costs)
    check_offline(res, 4 * 8 * x.numel(), exp_costs.plan[:1])


def test_reciprocal_wide_range_scale_bits() -> None:
    cfg = ReciprocalConfig(lo_log2=-10, hi_log2=14, scale_bits=4, factors=3, method=FSS)
    x = torch.exp2(torch.linspace(-10, 13.9, 97, dtype=torch.float64))
    res = run(lambda s: reciprocal.reciprocal(s, shared(s, 1, x), cfg))
    xq = quantized(x)  # the input's own rounding dominates at 2^-10 (64 steps)
    assert torch.all((res.value - 1 / xq).abs() <= 1 / xq * 1e-4 + 3 * LSB)
    check_costs(res, recip_expected((97,), cfg))


def test_reciprocal_dealer_truncation_adds_a_round_per_product_step() -> None:
    cfg = ReciprocalConfig(method=FSS)
    x = torch.tensor([1.5, 3.0, 100.0], dtype=torch.float64)
    res = run(lambda s: reciprocal.reciprocal(s, shared(s, 1, x), cfg), make_cfg("dealer"))
    assert torch.all((res.value - 1 / x).abs() <= 1 / x * 1e-4 + 3 * LSB)
    # comparison 1, then 3 product rounds, each followed by its truncation round
    base = recip_expected((3,), cfg).rounds
    assert res.reports[0]["phases"]["online"]["rounds"] == base + 3


# -- inverse square root ------------------------------------------------------------------------------
def test_rsqrt_accuracy_range_and_costs() -> None:
    cfg = RsqrtConfig(method=FSS)
    inside = torch.exp2(torch.linspace(-8, 11.99, 200, dtype=torch.float64))
    outside = torch.tensor([2.0**-12, 2.0**-10, 2.0**12.5, 2.0**14], dtype=torch.float64)
    x = torch.cat([inside, outside])
    res = run(lambda s: rsqrt.rsqrt(s, shared(s, 1, x), cfg))
    got = res.value
    ref = quantized(inside).rsqrt()
    # P's error 1e-4 relative, u = x y0 ~ sqrt(x) rounded to 2^-f, and output rounding
    bound = ref * (1.5e-4 + 2 * LSB * ref) + 3 * LSB
    assert torch.all((got[:200] - ref).abs() <= bound)
    # outside: below 2^lo an underestimate (never a sign error), above a smooth error
    assert torch.all(got[200:202] > 0) and torch.all(got[200:202] < outside[:2].rsqrt())
    ratio = got[202:] / outside[2:].rsqrt()
    assert abs(ratio[0] - 1) < 0.05 and 1 < ratio[1] < 5  # documented: +24% at 2^(hi+1)
    shape = (x.numel(),)
    k = len(cfg.grid().thresholds)
    n = x.numel()
    e = Expected().compare(lambda s: compare.drelu(s, torch.zeros((k, *shape), dtype=torch.int64),
                                                   method=FSS, bits=64))
    for label, numel, kind in (("rsqrt", 2 * n, "triple"), ("rsqrt", 2 * n, "triple"),
                               ("rsqrt", n, "square"), ("rsqrt", 2 * n, "triple")):
        e.ours(label, numel, [(kind, shape)])
    check_costs(res, e)
    assert e.rounds == rsqrt.rsqrt_rounds(cfg) == 5
    check_offline(res, 4 * 8 * n, e.plan[:1])
    assert guess_error(4) < 0.0865
