"""The adder path ending in XOR shares (binary.adder_drelu_xor) and the ReLU gate on it
(compare._gate_adder_compact, method "adder_compact": the XOR bit converts with the product
in ONE bit_select opening): dealer material, exact results, exact rounds, wire bytes and
dealer bytes over the in-memory harness, Circa on it, and auto's choice."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from test_binary import BITS, adder_payloads, signed_inputs
from test_compare import F, circa_run, gate_and_maximum, opened, run, shared, wire

from privit.parties.config import NETWORK_PRESETS, RunConfig
from privit.parties.inmemory_run import run_in_memory, run_in_memory_detailed
from privit.parties.prg import Prg, new_seed
from privit.parties.session import Session
from privit.protocols import binary, binary_layout, circa, compare, sharing
from privit.protocols.bit_select import BitSelect
from privit.protocols.cost_model import adder_costs
from privit.protocols.registry import CORRELATIONS


def xor_payloads(m: int, bits: int, leaf: int) -> list[tuple[str, int]]:
    """(label, payload bytes) of adder_drelu_xor's messages: the table-ending DReLU's, with
    2 bits per element in the final round instead of 3."""
    payloads = adder_payloads(m, bits, False, leaf)
    return payloads[:-1] + [("adder_final", binary_layout.packed_nbytes(2 * m, 1))]


def xor_message_bytes(src: int, m: int, bits: int, leaf: int) -> int:
    return sum(wire(src, i, label, np.zeros(n, np.uint8))
               for i, (label, n) in enumerate(xor_payloads(m, bits, leaf)))


def gate_message_bytes(src: int, m: int, bits: int, leaf: int) -> int:
    """adder_drelu_xor's messages, then bit_select's (packed bits + x + R)."""
    seq = len(xor_payloads(m, bits, leaf))
    return (xor_message_bytes(src, m, bits, leaf)
            + wire(src, seq, "relu_bit", np.zeros(-(-m // 8) + 8 * m, np.uint8)))


@pytest.mark.parametrize("bits, leaf", [(64, 2), (64, 4), (14, 2), (14, 4), (3, 2), (1, 2)])
def test_xor_material_relations_and_offline_bytes(bits: int, leaf: int) -> None:
    m = 300
    kind = binary.AdderGate()
    seeds = [new_seed(), new_seed()]
    params = (m, bits, binary.OUT_XOR, leaf)
    dealt = kind.deal(params, [Prg(s, 5) for s in seeds])
    mats = [{k: v.numpy() for k, v in kind.expand(params, i, 2, Prg(seeds[i], 5), dealt[i]).items()}
            for i in range(2)]
    assert dealt[0] == [] and len(dealt[1]) == 1  # one packed bit string, no tables
    assert dealt[1][0].nbytes == adder_costs(m, bits, False, leaf, compact=True).offline_bytes
    final = mats[0]["final_mask"] ^ mats[1]["final_mask"]
    assert final.shape == (2, m)
    assert np.array_equal(mats[0]["final_c"] ^ mats[1]["final_c"], (final[0] & final[1])[None])
    for k, _ in enumerate(binary_layout.level_widths(bits, leaf)):
        mask = mats[0][f"mask{k}"] ^ mats[1][f"mask{k}"]
        c = mats[0][f"c{k}"] ^ mats[1][f"c{k}"]
        assert np.array_equal(c, np.stack([mask[0] & mask[1], mask[0] & mask[2]]))
    assert "table" not in mats[0] and "big_r" not in mats[1]
    with pytest.raises(ValueError):
        kind.expand(params, 1, 2, Prg(seeds[1], 5), [dealt[1][0], dealt[1][0]])
    with pytest.raises(ValueError):
        binary.AdderGate().deal((m, bits, 3, leaf), [Prg(s, 5) for s in seeds])


@pytest.mark.parametrize("leaf", binary_layout.LEAF_WIDTHS)
@pytest.mark.parametrize("bits", BITS)
def test_adder_drelu_xor_exact_with_rounds_and_bytes(bits: int, leaf: int) -> None:
    if leaf not in binary_layout.leaf_widths(bits):
        pytest.skip("4-bit leaves need P >= 8")
    m = 400
    x = signed_inputs(bits, m, bits).reshape(20, 20)

    def job(sess: Session) -> torch.Tensor:
        xs = sharing.share_input(sess, 1, x if sess.party_id == 1 else None, x.shape)
        return binary.adder_drelu_xor(sess, xs, bits, leaf=leaf)

    res = run_in_memory(RunConfig(timeout_s=30), job, CORRELATIONS)
    d0, d1 = res[0][0], res[1][0]
    assert d0.dtype == torch.uint8 and d0.shape == x.shape
    assert torch.equal((d0 ^ d1).long(), (x >= 0).long())
    cost = adder_costs(m, bits, product=False, leaf=leaf, compact=True)
    assert cost.rounds == adder_costs(m, bits, False, leaf).rounds  # the same rounds
    for party, (_, report) in enumerate(res):
        online = report["phases"]["online"]
        assert online["rounds"] == cost.rounds and online["messages"] == cost.messages
        assert report["bytes_to"] == {str(1 - party): xor_message_bytes(party, m, bits, leaf)}
    assert sum(n for _, n in xor_payloads(m, bits, leaf)) == cost.online_bytes


@pytest.mark.parametrize("bits, leaf", [(2, 2), (9, 2), (14, 2), (14, 4), (24, 4), (33, 2),
                                        (64, 2), (64, 4)])
def test_relu_gate_exact_with_rounds_online_and_dealer_bytes(bits: int, leaf: int) -> None:
    m = 300
    x = signed_inputs(bits, m, 40 + bits)
    plan = compare.Plan("adder", leaf, compact=True)
    assert plan.name == "adder_compact"
    run_ = run_in_memory_detailed(  # the gate with this leaf width (auto picks its own)
        RunConfig(frac_bits=F, timeout_s=30),
        lambda s: compare._gate(s, shared(s, x), bits, None, plan)[::-1], CORRELATIONS)
    relu = sharing.reconstruct([r[0] for r in run_.results])
    assert torch.equal(relu, x.clamp(min=0))
    assert torch.equal(sharing.reconstruct([r[1] for r in run_.results]), (x >= 0).long())
    cost = adder_costs(m, bits, True, leaf, compact=True)
    table = adder_costs(m, bits, True, leaf)
    # one round more than the table ending, the same online bytes (the multiplicand moves
    # from the leaf round to bit_select's opening, the final round sends 2 bits, not 3)
    assert cost.rounds == table.rounds + 1 and cost.messages == cost.rounds
    assert cost.online_bytes - table.online_bytes == -(-m // 8) - (
        binary_layout.packed_nbytes(3 * m, 1) - binary_layout.packed_nbytes(2 * m, 1))
    for party, report in enumerate(run_.reports):
        online = report["phases"]["online"]
        assert online["rounds"] == cost.rounds and online["messages"] == cost.messages
        assert report["bytes_to"] == {str(1 - party): gate_message_bytes(party, m, bits, leaf)}
    assert run_.plan == [("adder_gate", (m, bits, binary.OUT_XOR, leaf)),
                         ("bit_select", (1, m, 0))]
    # dealer: everything to party 1 (the tree's products + the last AND's bit, then rho
    # and rho R of bit_select: 16 B per element); party 0 derives its own
    sent = run_.dealer_report["bytes_to"]
    assert 0 < sent["1"] - cost.offline_bytes < 400 and sent["0"] < 400  # + headers
    assert cost.offline_bytes == cost.offline_link_bytes == (
        adder_costs(m, bits, False, leaf, compact=True).offline_bytes + 16 * m)


def test_pinned_per_element_costs_circa_against_exact_relu() -> None:
    """Per element (M = 8,000; per party online, dealer to party 1), the numbers of
    compare.py's and circa.py's docstrings and of docs/comparison.md."""
    m = 8000
    k, m_bits = circa.default_params(F)
    per = {name: (c.rounds, c.online_bytes / m, c.offline_bytes / m) for name, c in {
        "exact_adder": adder_costs(m, 64, True, 2),
        "exact_adder_compact": adder_costs(m, 64, True, 2, compact=True),
        "exact_adder_compact_leaf4": adder_costs(m, 64, True, 4, compact=True),
        "circa_adder": circa.circa_costs("adder", m, k, m_bits, 2),
        "circa_adder_compact": circa.circa_costs("adder_compact", m, k, m_bits, 2),
        "circa_adder_compact_leaf4": circa.circa_costs("adder_compact", m, k, m_bits, 4),
    }.items()}
    assert per == {
        "exact_adder": (6, 31.625, 127.5),
        "exact_adder_compact": (7, 31.625, 31.625),
        "exact_adder_compact_leaf4": (6, 43.625, 23.625),
        "circa_adder": (4, 13.625, 115.5),
        "circa_adder_compact": (5, 13.625, 19.625),
        "circa_adder_compact_leaf4": (4, 16.625, 17.625),
    }
    # dealer bytes, Circa against exact ReLU: 6.5x against the table-ending exact adder,
    # but only 1.61x on the same (compact) path: bit_select's 16 B per element stay
    assert per["exact_adder"][2] / per["circa_adder_compact"][2] == pytest.approx(6.497, abs=1e-3)
    assert per["exact_adder_compact"][2] / per["circa_adder_compact"][2] == pytest.approx(
        1.611, abs=1e-3)


def test_relu_gate_other_multiplicand_circa_and_maximum() -> None:
    res = gate_and_maximum("adder_compact")
    leaf = compare.plan_comparison(Session.tracing(RunConfig(frac_bits=F), 0, CORRELATIONS),
                                   "adder_compact", [147, 63, 42, 21], 32, True).leaf
    per_level = adder_costs(1, 32, True, leaf, compact=True).rounds
    assert res[0][1]["phases"]["online"]["rounds"] == 4 * per_level  # ceil(log2 13) levels
    # a DReLU asked with adder_compact runs the table-ending adder (no arithmetic variant)
    sess = Session.tracing(RunConfig(), 0, CORRELATIONS)
    assert compare.choose_method(sess, "adder_compact", [4096], 24, product=False) == "adder"


def test_circa_on_the_adder_compact_path_against_exact_relu() -> None:
    k, m_bits = circa.default_params(F)
    size = 500
    res = circa_run("adder_compact", size)
    leaf = compare.plan_comparison(Session.tracing(RunConfig(frac_bits=F), 0, CORRELATIONS),
                                   "adder_compact", [size], 14, True, False).leaf
    cost = circa.circa_costs("adder_compact", size, k, m_bits, leaf)
    for _, report in res:
        assert report["phases"]["online"]["rounds"] == cost.rounds == 5 - leaf // 2 + 1
        assert {s["name"] for s in report["scopes"]} == {"adder_compact"}
    assert res[0][1]["bytes_to"] == {"1": gate_message_bytes(0, size, 14, leaf)}


@pytest.mark.parametrize("leaf", [2, 4])
def test_a_large_xor_gate_takes_its_material_in_pieces(monkeypatch: pytest.MonkeyPatch,
                                                       leaf: int) -> None:
    m, bits = 400, 64
    x = signed_inputs(bits, m, 3)

    def job(sess: Session) -> torch.Tensor:
        xs = sharing.share_input(sess, 1, x if sess.party_id == 1 else None, x.shape)
        return binary.adder_drelu_xor(sess, xs, bits, leaf=leaf)

    whole = run_in_memory(RunConfig(timeout_s=30), job, CORRELATIONS)
    monkeypatch.setattr(binary, "GATE_REQUEST_ELEMENTS", 96)  # 5 pieces: 4 x 96 + 16
    pieces = run_in_memory(RunConfig(timeout_s=30), job, CORRELATIONS)
    assert torch.equal((pieces[0][0] ^ pieces[1][0]).long(), (x >= 0).long())
    for (_, a), (_, b) in zip(whole, pieces, strict=True):
        assert a["bytes_to"] == b["bytes_to"]


def test_auto_prices_the_compact_adder_and_reports_it() -> None:
    """The whole run: on a large ReLU the table ending's 112 B of dealer material per element
    cost more than the compact ending's extra round (no network, LAN and WAN); the online
    phase alone: the table ending's one round fewer wins."""
    m = 197 * 768
    for network in ("lan", "wan"):
        cfg: dict[str, Any] = {"network": NETWORK_PRESETS[network]}
        whole = Session.tracing(RunConfig(**cfg), 0, CORRELATIONS)
        online = Session.tracing(RunConfig(auto_objective="online", **cfg), 0, CORRELATIONS)
        assert compare.choose_method(whole, "auto", [m], 64, product=True) == "adder_compact"
        assert compare.choose_method(whole, "auto", [m], 14, product=True) == "adder_compact"
        assert compare.choose_method(online, "auto", [m], 64, product=True) != "adder_compact"
    x = signed_inputs(64, 20_000, 0)
    res = run(lambda s: compare.relu(s, shared(s, x)))
    assert torch.equal(opened(res), x.clamp(min=0))
    assert {s["name"] for s in res[0][1]["scopes"]} == {"adder_compact"}
    assert res[0][1]["choices"]["compare"]["run"] == {"adder_compact": 1}


# The compact adder ReLU gate (method "adder_compact"): adder_gate (out = OUT_XOR) and
# bit_select's (K = 1) material; bytes per element to party 1 (party 0 receives nothing),
# numel = 8, by (bits, leaf width). The table-ending gate: 56 + 56 B more than the tree.
COMPACT_ADDER_GATE = {(14, 2): 19.625, (14, 4): 17.625, (17, 2): 19.625, (24, 2): 23.625,
                      (24, 4): 19.625, (32, 2): 23.625, (64, 2): 31.625, (64, 4): 23.625}


@pytest.mark.parametrize("bits, leaf", sorted(COMPACT_ADDER_GATE))
def test_compact_adder_gate_bytes_per_element_are_pinned(bits: int, leaf: int) -> None:
    numel = 8
    prgs = [Prg(new_seed(), 5) for _ in range(2)]
    gate = binary.AdderGate().deal((numel, bits, binary.OUT_XOR, leaf), prgs)
    select = BitSelect().deal((1, numel, 0), prgs)
    sent = [sum(a.nbytes for a in gate[p] + select[p]) / numel for p in (0, 1)]
    assert sent == [0.0, COMPACT_ADDER_GATE[bits, leaf]]
    cost = adder_costs(numel, bits, True, leaf, compact=True)
    assert cost.offline_bytes == cost.offline_link_bytes == numel * sent[1]
    table = adder_costs(numel, bits, True, leaf)
    assert table.offline_bytes - cost.offline_bytes == numel * (112 - 16.125)
