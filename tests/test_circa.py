"""Circa's stochastic ReLU (protocols/circa.py): measured fault rates against the formulas
(per value, and on a Gaussian), fault direction by mode, exactness elsewhere, costs.

Fault counts are sums of independent Bernoulli variables, so each check allows 5 standard
deviations: a correct protocol fails with probability below 1e-6 per check, while a wrong
formula (e.g. x/2^k instead of (x+1)/2^k, or one bit fewer) is off by far more."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from privit.parties.config import RunConfig
from privit.parties.inmemory_run import run_in_memory
from privit.parties.session import Session
from privit.protocols import circa, compare, ring, sharing
from privit.protocols.cost_model import adder_costs, fss_costs
from privit.protocols.registry import CORRELATIONS

F = 16
METHODS = ["fss", "adder", "adder_compact"]


def run(job: Any) -> list[tuple[Any, dict[str, Any]]]:
    return run_in_memory(RunConfig(frac_bits=F, timeout_s=60), job, CORRELATIONS)


def shared(sess: Session, value: torch.Tensor) -> torch.Tensor:
    return sharing.share_input(sess, 1, value if sess.party_id == 1 else None, value.shape)


def within_5_sigma(count: float, p: torch.Tensor) -> bool:
    """|count - sum p| <= 5 sqrt(sum p (1 - p)) (+ 1 for the discreteness of tiny sums)."""
    mean = float(p.sum())
    sd = float((p * (1 - p)).sum().sqrt())
    return abs(count - mean) <= 5 * sd + 1


def test_parameters() -> None:
    assert circa.compared_bits(10, 22) == 14
    assert circa.default_params(16) == (10, 22)
    with pytest.raises(ValueError):
        circa.compared_bits(5, 63)  # m + 2 > 64
    with pytest.raises(ValueError):
        circa.compared_bits(10, 7)  # j < 1
    assert circa.gaussian_fault_rate(1.0, 16, 10) == pytest.approx(0.0031168, rel=1e-4)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["floor", "ceil"])
def test_fault_rate_per_value_and_direction(method: str, mode: str) -> None:
    k, m, reps = 4, 8, 6000  # 32 values in (-2^k, 2^k), 6000 samples each
    window = torch.arange(-(1 << k), 1 << k).repeat(reps)
    outside = torch.tensor([1 << k, (1 << k) + 1, -(1 << k), (1 << m) - 1, -(1 << m) + 1,
                            -(1 << m) + (1 << k), 200, -200])
    x = torch.cat([window, outside.repeat(50)])

    def job(sess: Session) -> list[torch.Tensor]:
        xs = shared(sess, x)
        return [circa.stochastic_drelu(sess, xs, k=k, m=m, mode=mode, method=method),
                circa.stochastic_relu(sess, xs, k=k, m=m, mode=mode, method=method)]

    res = run(job)
    d = sharing.reconstruct([r[0][0] for r in res])
    relu = sharing.reconstruct([r[0][1] for r in res])
    exact = (x >= 0).long()
    wrong = d != exact
    p = circa.fault_probability(x, k, mode)
    assert not wrong[p == 0].any()  # exact outside the window (incl. -2^m + 2^k: the extra bit)
    if mode == "floor":
        assert not (wrong & (x < 0)).any()  # PosZero only
    else:
        assert not (wrong & (x >= 0)).any()  # NegPass only
    for value in range(-(1 << k), 1 << k):
        sel = x == value
        assert within_5_sigma(float(wrong[sel].sum()), p[sel]), (value, float(wrong[sel].mean()))
    assert within_5_sigma(float(wrong.sum()), p)
    # stochastic_relu: its own randomness, the same law; its output is 0 or exactly x
    assert torch.equal(relu, torch.where(relu == 0, torch.zeros_like(x), x))
    relu_faults = (relu != x.clamp(min=0)) & (x != 0)  # at x = 0 both outputs are 0
    assert within_5_sigma(float(relu_faults.sum()), p * (x != 0))


@pytest.mark.parametrize("method", METHODS)
def test_gaussian_fault_rate_matches_formula(method: str) -> None:
    n, sigma = 200_000, 1.0
    k, m = circa.default_params(F)
    real = torch.randn(n, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * sigma
    x = ring.encode(real, F)

    def job(sess: Session) -> torch.Tensor:
        return circa.stochastic_drelu(sess, shared(sess, x), k=k, m=m, method=method)

    d = sharing.reconstruct([r[0] for r in run(job)])
    faults = float((d != (x >= 0).long()).sum())
    rate = circa.gaussian_fault_rate(sigma, F, k)
    assert within_5_sigma(faults, torch.full((n,), rate, dtype=torch.float64)), faults / n
    assert faults > 0


@pytest.mark.parametrize("method", METHODS)
def test_costs_and_savings_against_exact_relu(method: str) -> None:
    k, m = circa.default_params(F)
    j = circa.compared_bits(k, m)
    size = 500
    x = ring.encode(torch.randn(size, generator=torch.Generator().manual_seed(1),
                                dtype=torch.float64), F)

    res = run(lambda s: circa.stochastic_relu(s, shared(s, x), k=k, m=m, method=method))
    relu = sharing.reconstruct([r[0] for r in res])
    assert torch.equal(relu, torch.where(relu == 0, torch.zeros_like(x), x))
    plan = compare.plan_comparison(Session.tracing(RunConfig(frac_bits=F), 0, CORRELATIONS),
                                   method, [size], circa.compared_bits(k, m), True, False)
    cost = circa.circa_costs(method, size, k, m, plan.leaf)
    exact = (fss_costs(size, 64, True) if method == "fss"
             else adder_costs(size, 64, True, 2, compact=method == "adder_compact"))
    for _, report in res:
        assert report["phases"]["online"]["rounds"] == cost.rounds
        assert report["phases"]["online"]["messages"] == cost.messages
    if method == "fss":
        assert cost.rounds == exact.rounds == 1
        assert cost.offline_bytes == size * (64 * j - 16)
        assert exact.offline_bytes / cost.offline_bytes >= 2  # 4080 / 880 = 4.6x
    elif method == "adder":
        assert (cost.rounds, exact.rounds) == (5 - plan.leaf // 2, 6)
        assert cost.online_bytes < exact.online_bytes and cost.offline_bytes < exact.offline_bytes
    else:  # the XOR ending + bit_select: one round more than "adder", no truth tables
        assert (cost.rounds, exact.rounds) == (6 - plan.leaf // 2, 7)
        tree = {2: 3.5, 4: 1.5}[plan.leaf]  # the packed products of the 14-bit tree
        assert cost.offline_bytes == size * (tree + 16) + -(-size // 8)
        assert exact.offline_bytes == size * (15.5 + 16) + -(-size // 8)
