"""The compact FSS ReLU gate (compare._gate_fss_compact, method "fss_compact"): drelu_xor's
bit DCF, then bit_select's conversion with the product: exact results, exact rounds, wire
bytes and dealer bytes over the in-memory harness; the three-way choice of the cost model
and its dealer term (the busier link, the compact tree's levels)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_binary import signed_inputs
from test_compare import F, circa_run, gate_and_maximum, opened, run, shared, wire

from privit.parties.config import NETWORK_PRESETS, RunConfig
from privit.parties.inmemory_run import run_in_memory_detailed
from privit.parties.session import Session
from privit.protocols import circa, compare
from privit.protocols.cost_model import (
    DEFAULT_COST_MODEL,
    adder_costs,
    fss_costs,
    fss_key_levels,
    wire_itemsize,
)
from privit.protocols.dcf_bit import bit_dcf_cw_bytes
from privit.protocols.registry import CORRELATIONS


def compact_message_bytes(src: int, m: int, bits: int) -> int:
    """Wire bytes from `src`: drelu_xor's opening, then bit_products' (packed bits + x + R)."""
    dtype = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.int64}[wire_itemsize(bits)]
    return (wire(src, 0, "drelu_bit_fss", np.zeros(m, dtype))
            + wire(src, 1, "relu_bit", np.zeros(-(-m // 8) + 8 * m, np.uint8)))


@pytest.mark.parametrize("bits", [2, 9, 20, 24, 33, 64])
def test_relu_and_drelu_exact_with_rounds_online_and_dealer_bytes(bits: int) -> None:
    m = 300
    x = signed_inputs(bits, m, 40 + bits)
    run_ = run_in_memory_detailed(
        RunConfig(frac_bits=F, timeout_s=30),
        lambda s: compare.relu_and_drelu(s, shared(s, x), method="fss_compact", bits=bits),
        CORRELATIONS)
    relu = sharing_open(run_.results, 0)
    assert torch.equal(relu, x.clamp(min=0))
    assert torch.equal(sharing_open(run_.results, 1), (x >= 0).long())
    cost = fss_costs(m, bits, True, shared_mask=False, compact=True)
    assert (cost.rounds, cost.messages) == (2, 2)
    for party, report in enumerate(run_.reports):
        online = report["phases"]["online"]
        assert online["rounds"] == 2 and online["messages"] == 2
        assert report["bytes_to"] == {str(1 - party): compact_message_bytes(party, m, bits)}
        assert {s["name"] for s in report["scopes"]} == {"fss_compact"}
    assert run_.plan == [("drelu_bit_fss", (m, bits)), ("bit_select", (1, m, 0))]
    # dealer payloads: the bit DCF's CWs to each party, party 1 also the MSB(r) bits and
    # its select material (rho, rho R: 16 B per element); two messages per party
    c = bit_dcf_cw_bytes(bits - 1)
    payload = [m * c, m * c + -(-m // 8) + 16 * m]
    assert payload[0] + payload[1] == cost.offline_bytes and payload[1] == cost.offline_link_bytes
    sent = run_.dealer_report["bytes_to"]
    for party in (0, 1):
        assert 0 < sent[str(party)] - payload[party] < 400  # + the message headers


def sharing_open(results: list, index: int) -> torch.Tensor:
    return opened([(r, {}) for r in results], index)


def test_relu_gate_with_other_multiplicand_and_maximum_rounds() -> None:
    res = gate_and_maximum("fss_compact")
    assert res[0][1]["phases"]["online"]["rounds"] == 2 * 4  # ceil(log2 13) levels


def test_circa_on_the_compact_keys_against_exact_relu() -> None:
    k, m_bits = circa.default_params(F)
    j = circa.compared_bits(k, m_bits)
    size = 500
    res = circa_run("fss_compact", size)
    cost = circa.circa_costs("fss_compact", size, k, m_bits)
    for _, report in res:
        assert report["phases"]["online"]["rounds"] == cost.rounds == 2
    assert j == 14 and cost.offline_bytes == size * (2 * 113 + 16) + -(-size // 8)
    exact = fss_costs(size, 64, True, compact=True)
    assert exact.offline_bytes / cost.offline_bytes >= 2  # 1854.125 / 242.125 = 7.7x


def test_compact_key_is_under_300_bytes_per_element_per_party_up_to_24_bits() -> None:
    for bits in (14, 17, 20, 24, 25, 32):
        cost = fss_costs(8000, bits, True, shared_mask=False, compact=True)
        per_party1 = cost.offline_link_bytes / 8000
        assert per_party1 == bit_dcf_cw_bytes(bits - 1) + 16.125
        assert (per_party1 <= 300) == (bits <= 24)


def test_dealer_term_charges_the_busier_link_and_the_compact_tree() -> None:
    net = NETWORK_PRESETS["wan"]
    _, bandwidth = DEFAULT_COST_MODEL.network_terms(net)
    m = 10_000
    adder = adder_costs(m, 64, True)
    assert adder.offline_link_bytes == adder.offline_bytes  # all of it to party 1
    assert DEFAULT_COST_MODEL.dealer_s("adder", m, 64, adder, bandwidth) == pytest.approx(
        adder.offline_bytes / bandwidth)
    wide = fss_costs(m, 64, True)
    assert wide.offline_link_bytes == m * 2048  # party 1: CWs + MSB(r), R MSB(r)
    keygen = DEFAULT_COST_MODEL.fss_keygen_per_elem_level_s * m
    assert DEFAULT_COST_MODEL.dealer_s("fss", m, 64, wide, bandwidth) == pytest.approx(
        keygen * 63 + m * 2048 / bandwidth)
    compact = fss_costs(m, 64, True, compact=True)
    assert fss_key_levels(64, True) == 56 and fss_key_levels(64, False) == 63
    assert DEFAULT_COST_MODEL.dealer_s("fss_compact", m, 64, compact, bandwidth) == pytest.approx(
        DEFAULT_COST_MODEL.fss_bit_keygen_per_elem_level_s * m * 56 + (919 + 16) * m / bandwidth
        + -(-m // 8) / bandwidth)
    online = replace(DEFAULT_COST_MODEL, objective="online")
    assert online.dealer_s("fss_compact", m, 64, compact, bandwidth) == 0.0


def test_auto_weighs_three_paths_and_reports_the_one_that_ran() -> None:
    net = NETWORK_PRESETS["wan"]
    model = DEFAULT_COST_MODEL
    # whole run under WAN, 4,096 elements at 24 bits: the wide keys' bytes cost more than
    # the compact key's extra round, and the adder's 5 rounds more than both
    est = {p: model.estimate_s(p, [4096], 24, True, net, shared_mask=False)
           for p in ("fss", "fss_compact", "adder")}
    assert est["fss_compact"] < est["fss"] and est["fss_compact"] < est["adder"]
    assert model.choose([4096], 24, True, net, shared_mask=False) == "fss_compact"
    # online only: one round beats two; a DReLU has no compact arithmetic variant
    online = replace(model, objective="online")
    assert online.choose([4096], 24, True, net, shared_mask=False) == "fss"
    assert model.choose([4096], 24, False, net) in ("fss", "adder")
    x = signed_inputs(24, 4096, 5)
    res = run(lambda s: compare.relu(s, shared(s, x), bits=24), network=net)
    assert torch.equal(opened(res), x.clamp(min=0))
    report = res[0][1]
    assert {s["name"] for s in report["scopes"]} == {"fss_compact"}
    assert report["phases"]["online"]["rounds"] == 2
    sess = Session.tracing(RunConfig(network=net), 0, CORRELATIONS)
    assert compare.choose_method(sess, "auto", [4096], 24, product=True) == "fss_compact"
    assert compare.choose_method(sess, "fss_compact", [4096], 24, product=True) == "fss_compact"
    assert compare.choose_method(sess, "fss", [4096], 24, product=True) == "fss"
    # an explicit fss_compact DReLU runs the wide DReLU key
    assert compare.choose_method(sess, "fss_compact", [4096], 24, product=False) == "fss"
