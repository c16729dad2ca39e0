"""Comparisons (protocols/compare.py) over the in-memory harness: exactness of DReLU, ReLU,
select and maximum on both paths, exact online rounds and wire bytes, exact dealer payload
bytes, the two-word DCF, and auto's choice under no network and under WAN."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from test_binary import adder_message_bytes, signed_inputs

from privit.parties.config import NETWORK_PRESETS, RunConfig
from privit.parties.inmemory_run import run_in_memory, run_in_memory_detailed
from privit.parties.prg import Prg, new_seed
from privit.parties.session import Session
from privit.parties.wire import Message, encode, message_nbytes
from privit.protocols import circa, compare, ring, sharing
from privit.protocols.cost_model import DEFAULT_COST_MODEL, adder_costs, fss_costs, wire_itemsize
from privit.protocols.fss_correlations import DreluFss, ReluFss
from privit.protocols.registry import CORRELATIONS
from privit.protocols.relu_fss import pair_dcf_eval, pair_dcf_keygen

F = 16
METHODS = ["fss", "adder"]


def run(job: Callable[[Session], Any], **cfg: Any) -> list[tuple[Any, dict[str, Any]]]:
    return run_in_memory(RunConfig(frac_bits=F, timeout_s=30, **cfg), job, CORRELATIONS)


def shared(sess: Session, value: torch.Tensor, owner: int = 1) -> torch.Tensor:
    return sharing.share_input(sess, owner, value if sess.party_id == owner else None, value.shape)


def opened(res: list[tuple[Any, dict[str, Any]]], index: int | None = None) -> torch.Tensor:
    return sharing.reconstruct([r[0] if index is None else r[0][index] for r in res])


def circa_run(method: str, size: int) -> list[tuple[Any, dict[str, Any]]]:
    """Circa's stochastic ReLU (default k, m) on `size` N(0, 1) values on `method`'s path:
    every output is x or 0, and faults are rare; the run, for its costs."""
    k, m_bits = circa.default_params(F)
    x = ring.encode(torch.randn(size, generator=torch.Generator().manual_seed(1),
                                dtype=torch.float64), F)
    res = run(lambda s: circa.stochastic_relu(s, shared(s, x), k=k, m=m_bits, method=method))
    relu = opened(res)
    assert torch.equal(relu, torch.where(relu == 0, torch.zeros_like(x), x))
    assert (relu != x.clamp(min=0)).double().mean() < 0.01  # faults: rare near 0 only
    return res


def gate_and_maximum(method: str) -> list[tuple[Any, dict[str, Any]]]:
    """relu_gate of x with another multiplicand y (both outputs checked), then the maximum
    of 13 scores over the last axis (checked); the maximum's run, for its costs."""
    x = signed_inputs(20, 200, 9)
    y = torch.randint(-(1 << 60), 1 << 60, (200,), generator=torch.Generator().manual_seed(2))

    def job(sess: Session) -> list[torch.Tensor]:
        xs, ys = shared(sess, x), shared(sess, y, 0)
        return list(compare.relu_gate(sess, xs, ys, bits=20, method=method))

    res = run(job)
    assert torch.equal(opened(res, 0), (x >= 0).long())
    assert torch.equal(opened(res, 1), y * (x >= 0).long())
    assert {s["name"] for s in res[0][1]["scopes"]} == {method}
    scores = ring.encode(torch.randn(3, 7, 13, generator=torch.Generator().manual_seed(3),
                                     dtype=torch.float64) * 20, F)
    res = run(lambda s: compare.maximum(s, shared(s, scores), method=method, bits=32))
    assert torch.equal(opened(res), scores.max(dim=-1).values)
    return res


def wire(src: int, seq: int, label: str, array: np.ndarray) -> int:
    return message_nbytes(encode(Message("data", src, seq, label, [array])))


def fss_message_bytes(src: int, m: int, bits: int, product: bool, shared_mask: bool) -> int:
    """Wire bytes of the FSS path's one opening from `src`."""
    if not product:
        dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.int64}[wire_itemsize(bits)]
        return wire(src, 0, "drelu_fss", np.zeros(m, dtype))
    if shared_mask:
        return wire(src, 0, "relu_fss", np.zeros(m, np.int64))
    return wire(src, 0, "relu_fss", np.zeros(m * (wire_itemsize(bits) + 8), np.uint8))


# -- the two-word DCF ---------------------------------------------------------------------------
@pytest.mark.parametrize("n_bits", [0, 1, 5, 63])
def test_pair_dcf_shares_both_payload_words(n_bits: int) -> None:
    rng = np.random.default_rng(n_bits)
    m = 600
    alpha = rng.integers(0, 2**n_bits, m, dtype=np.uint64)
    beta = rng.integers(0, 2**64 - 1, (2, m), dtype=np.uint64, endpoint=True)
    roots = tuple(rng.integers(0, 2**64 - 1, (m, 2), dtype=np.uint64, endpoint=True)
                  for _ in range(2))
    cws = pair_dcf_keygen(alpha, n_bits, beta, roots)
    y = rng.integers(0, 2**n_bits, m, dtype=np.uint64)
    y[:200] = alpha[:200]  # the leaf alpha itself is not below alpha
    y[200:300] = np.maximum(alpha[200:300], np.uint64(1)) - np.uint64(1)
    seeds = [np.ascontiguousarray(r).view(np.uint8).reshape(m, 16) for r in roots]
    total = pair_dcf_eval(0, seeds[0], cws, y, chunk=128) + pair_dcf_eval(1, seeds[1], cws, y)
    assert np.array_equal(total, (beta * (y < alpha).astype(np.uint64)).T)
    assert sum(a.nbytes for a in cws.to_buffers()) == m * (32 * n_bits + 16)


# -- dealer payloads ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind, params, product, shared_mask", [
    (DreluFss(), (50, 64), False, True), (DreluFss(), (50, 9), False, True),
    (ReluFss(), (50, 64, 1), True, True), (ReluFss(), (50, 14, 0), True, False),
    (ReluFss(), (50, 64, 0), True, False)])
def test_fss_payload_bytes(kind: Any, params: tuple[int, ...], product: bool,
                           shared_mask: bool) -> None:
    seeds = [new_seed(), new_seed()]
    dealt = kind.deal(params, [Prg(s, 3) for s in seeds])
    total = sum(a.nbytes for arrays in dealt for a in arrays)
    assert total == fss_costs(params[0], params[1], product, shared_mask).offline_bytes
    n = params[1]
    cws = (24 * (n - 1) + 8) if not product else (32 * (n - 1) + 16)
    assert sum(a.nbytes for a in dealt[0]) == params[0] * cws  # party 0: the CWs only
    for party in (0, 1):  # expansion accepts exactly what was dealt
        kind.expand(params, party, 2, Prg(seeds[party], 3), dealt[party])
    with pytest.raises(ValueError):
        kind.expand(params, 1, 2, Prg(seeds[1], 3), dealt[1][:-1])


def test_relu_fss_rejects_shared_mask_below_64_bits_and_three_parties() -> None:
    with pytest.raises(ValueError):
        ReluFss().deal((10, 32, 1), [Prg(new_seed()), Prg(new_seed())])
    with pytest.raises(NotImplementedError):
        DreluFss().deal((10, 64), [Prg(new_seed()) for _ in range(3)])
    tracer = Session.tracing(RunConfig(n_parties=3, truncation="dealer"), 0, CORRELATIONS)
    with pytest.raises(NotImplementedError):
        compare.relu(tracer, torch.zeros(4, dtype=torch.int64), method="fss")


# -- correctness and exact costs ----------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bits", [1, 2, 8, 9, 16, 17, 33, 64])
def test_drelu_exact_with_rounds_and_bytes(method: str, bits: int) -> None:
    m = 300
    x = signed_inputs(bits, m, 100 + bits)
    run_ = run_in_memory_detailed(RunConfig(frac_bits=F, timeout_s=30),
                                  lambda s: compare.drelu(s, shared(s, x), method=method, bits=bits),
                                  CORRELATIONS)
    assert torch.equal(sharing.reconstruct(run_.results), (x >= 0).long())
    leaf = compare.plan_comparison(Session.tracing(RunConfig(), 0, CORRELATIONS), method, [m],
                                   bits, False).leaf
    cost = (fss_costs(m, bits, False) if method == "fss" else adder_costs(m, bits, False, leaf))
    for party, report in enumerate(run_.reports):
        online = report["phases"]["online"]
        assert online["rounds"] == cost.rounds and online["messages"] == cost.messages
        want = (fss_message_bytes(party, m, bits, False, True) if method == "fss"
                else adder_message_bytes(party, m, bits, False, leaf))
        assert report["bytes_to"] == {str(1 - party): want}
        assert report["phases"]["offline"]["bytes"] == 0
    assert [k for k, _ in run_.plan] == ["drelu_fss" if method == "fss" else "adder_gate"]
    scopes = {s["name"] for s in run_.reports[0]["scopes"]}
    assert scopes == {method}  # the sub-scope names the method


@pytest.mark.parametrize("method", METHODS)
def test_relu_and_drelu_exact_with_rounds_and_bytes(method: str) -> None:
    gen = torch.Generator().manual_seed(7)
    real = torch.randn(24, 25, generator=gen, dtype=torch.float64) * 50
    x = ring.encode(real, F)
    x[0, :4] = torch.tensor([0, -1, (1 << 63) - 1, -(1 << 63)])

    res = run(lambda s: compare.relu_and_drelu(s, shared(s, x), method=method))
    relu, d = opened(res, 0), opened(res, 1)
    assert torch.equal(d, (x >= 0).long())
    assert torch.equal(relu, x.clamp(min=0))  # exact: no error at all (<= 1 LSB required)
    error = ring.decode(relu, F)[1:] - real[1:].clamp(min=0)  # row 0 holds the extremes
    assert error.abs().max() <= 2.0 ** -(F + 1)
    m = x.numel()
    leaf = compare.plan_comparison(Session.tracing(RunConfig(), 0, CORRELATIONS), method, [m],
                                   64, True).leaf
    cost = fss_costs(m, 64, True) if method == "fss" else adder_costs(m, 64, True, leaf)
    assert cost.rounds == (1 if method == "fss" else 7 - leaf // 2)
    for party, (_, report) in enumerate(res):
        assert report["phases"]["online"]["rounds"] == cost.rounds
        want = (fss_message_bytes(party, m, 64, True, True) if method == "fss"
                else adder_message_bytes(party, m, 64, True, leaf))
        assert report["bytes_to"] == {str(1 - party): want}


@pytest.mark.parametrize("method", METHODS)
def test_relu_bounded_bits_and_relu_gate_with_other_multiplicand(method: str) -> None:
    x = signed_inputs(20, 200, 9)
    y = torch.randint(-(1 << 60), 1 << 60, (200,), generator=torch.Generator().manual_seed(2))

    def job(sess: Session) -> list[torch.Tensor]:
        xs, ys = shared(sess, x), shared(sess, y, 0)
        return [compare.relu(sess, xs, method=method, bits=20),
                *compare.relu_gate(sess, xs, ys, bits=20, method=method)]

    res = run(job)
    assert torch.equal(opened(res, 0), x.clamp(min=0))
    assert torch.equal(opened(res, 1), (x >= 0).long())
    assert torch.equal(opened(res, 2), y * (x >= 0).long())
    if method == "fss":  # separate masks: 20-bit + 64-bit opening in one message each
        first = wire(0, 0, "relu_fss", np.zeros(200 * 12, np.uint8))
        assert res[0][1]["bytes_to"]["1"] == first + wire(0, 1, "relu_fss",
                                                           np.zeros(200 * 12, np.uint8))


def test_select_is_one_beaver_product() -> None:
    a = ring.encode(torch.linspace(-3, 3, 30, dtype=torch.float64), F)
    b = ring.encode(torch.linspace(5, -1, 30, dtype=torch.float64), F)
    bit = (torch.arange(30) % 3 == 0).long()

    res = run(lambda s: compare.select(s, shared(s, bit, 0), shared(s, a), shared(s, b, 0)))
    assert torch.equal(opened(res), torch.where(bit.bool(), a, b))
    for party, (_, report) in enumerate(res):
        assert report["phases"]["online"]["rounds"] == 1
        assert report["bytes_to"] == {str(1 - party): wire(party, 0, "beaver_mul",
                                                           np.zeros(60, np.int64))}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape, dim", [((3, 7, 13), -1), ((3, 7, 13), 0), ((2, 6), 1),
                                        ((5,), 0), ((4, 1), 1)])
def test_maximum_exact_with_rounds(method: str, shape: tuple[int, ...], dim: int) -> None:
    gen = torch.Generator().manual_seed(len(shape) + dim)
    x = ring.encode(torch.randn(shape, generator=gen, dtype=torch.float64) * 20, F)
    res = run(lambda s: compare.maximum(s, shared(s, x), dim=dim, method=method))
    assert torch.equal(opened(res), x.max(dim=dim).values)
    levels = int(np.ceil(np.log2(shape[dim]))) if shape[dim] > 1 else 0
    plan = compare.plan_comparison(Session.tracing(RunConfig(), 0, CORRELATIONS), method,
                                   [x.numel()], 64, True)
    per_level = 1 if method == "fss" else 7 - plan.leaf // 2
    assert res[0][1]["phases"]["online"]["rounds"] == levels * per_level


def test_maximum_of_a_softmax_row_width_has_8_levels_on_fss() -> None:
    x = ring.encode(torch.randn(2, 197, generator=torch.Generator().manual_seed(0),
                                dtype=torch.float64), F)
    res = run(lambda s: compare.maximum(s, shared(s, x), method="fss"))
    assert torch.equal(opened(res), x.max(dim=-1).values)
    assert res[0][1]["phases"]["online"]["rounds"] == 8


# -- auto -------------------------------------------------------------------------------------------
def test_auto_picks_adder_without_network_and_fss_under_wan() -> None:
    none = Session.tracing(RunConfig(), 0, CORRELATIONS)
    wan = Session.tracing(RunConfig(network=NETWORK_PRESETS["wan"]), 0, CORRELATIONS)
    wan_online = Session.tracing(RunConfig(network=NETWORK_PRESETS["wan"],
                                           auto_objective="online"), 0, CORRELATIONS)
    m = 197 * 768
    none_online = Session.tracing(RunConfig(auto_objective="online"), 0, CORRELATIONS)
    # the whole run: the adder's XOR ending + bit_select (one round more, 31.6 B of dealer
    # material per element instead of 127.5); the online phase alone: the table ending
    assert compare.choose_method(none, "auto", [m], 64, product=True) == "adder_compact"
    assert compare.choose_method(none_online, "auto", [m], 64, product=True) == "adder"
    # the online phase alone: FSS's one round beats the adder's six at 40 ms RTT ...
    assert compare.choose_method(wan_online, "auto", [m], 64, product=True) == "fss"
    # ... but its 4 KB of keys per element over the dealer's 400 Mbit/s link cost more
    assert compare.choose_method(wan, "auto", [m], 64, product=True) == "adder_compact"
    assert compare.choose_method(wan, "auto", [64], 64, product=True) == "fss"
    assert compare.choose_method(wan, "adder", [m], 64, product=True) == "adder"
    assert compare.choose_method(wan, "adder_compact", [m], 64, product=True) == "adder_compact"
    # the estimates behind the choices are ordered the same way
    net = NETWORK_PRESETS["wan"]
    online = replace(DEFAULT_COST_MODEL, objective="online")
    assert (online.estimate_s("fss", [m], 64, True, net)
            < online.estimate_s("adder", [m], 64, True, net)
            < online.estimate_s("adder_compact", [m], 64, True, net))
    assert (DEFAULT_COST_MODEL.estimate_s("fss", [m], 64, True, net)
            > DEFAULT_COST_MODEL.estimate_s("adder", [m], 64, True, net)
            > DEFAULT_COST_MODEL.estimate_s("adder_compact", [m], 64, True, net))
    with pytest.raises(ValueError, match="objective"):
        replace(DEFAULT_COST_MODEL, objective="fastest")
    # the report shows the choice as a sub-scope (small inputs: per-round costs dominate)
    x = signed_inputs(64, 64, 0)
    small = {name: compare.choose_method(sess, "auto", [64], 64, product=True)
             for name, sess in (("none", none), ("wan", wan))}
    assert small["wan"] == "fss"
    for network, chosen in small.items():
        def job(sess: Session) -> torch.Tensor:
            with sess.scope("relu"):
                return compare.relu(sess, shared(sess, x))
        res = run(job, network=NETWORK_PRESETS[network])
        assert torch.equal(opened(res), x.clamp(min=0))
        names = {s["name"] for s in res[0][1]["scopes"]}
        assert names == {"relu", f"relu/{chosen}"}


def test_comparison_config_validates_and_overrides_the_cost_model() -> None:
    with pytest.raises(ValueError):
        compare.ComparisonConfig("fast")
    sess = Session.tracing(RunConfig(), 0, CORRELATIONS)
    slow_adder = compare.ComparisonConfig(cost_model=DEFAULT_COST_MODEL.__class__(
        adder=DEFAULT_COST_MODEL.adder.__class__(10.0, 0.0, 0.0, 0.0)))
    assert compare.choose_method(sess, slow_adder, [100], 64, product=True) == "fss"
    with pytest.raises(ValueError):
        compare.drelu(sess, torch.zeros(3, dtype=torch.int64), bits=65)


@pytest.mark.parametrize("kind", ["drelu_fss", "drelu_bit_fss"])
def test_fss_drelu_keys_come_in_pieces(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """A comparison larger than FSS_REQUEST_ELEMENTS takes its keys as several plan requests
    (none outgrows a streaming window: the teacher's erf GeLU under --compare fss was one
    90 MB request per party), with one opening and the same results."""
    monkeypatch.setattr(compare, "FSS_REQUEST_ELEMENTS", 100)
    bits, m = 32, 250
    x = torch.randint(-2**20, 2**20, (m,), generator=torch.Generator().manual_seed(5))
    x[:3] = torch.tensor([0, -1, 1])

    def job(s: Session) -> torch.Tensor:
        if kind == "drelu_fss":
            return compare.drelu(s, shared(s, x), method="fss", bits=bits)
        plan = compare.plan_comparison(s, "fss", [m], bits, product=False, compact=True)
        return compare.drelu_xor(s, shared(s, x), bits=bits, plan=plan)

    run_ = run_in_memory_detailed(RunConfig(frac_bits=F, timeout_s=30), job, CORRELATIONS)
    got = (run_.results[0] ^ run_.results[1] if kind == "drelu_bit_fss"
           else sharing.reconstruct(run_.results))
    assert torch.equal(got.long(), (x >= 0).long())
    assert [params[0] for name, params in run_.plan if name == kind] == [100, 100, 50]
    for report in run_.reports:
        assert report["phases"]["online"]["rounds"] == 1
