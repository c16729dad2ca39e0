"""The adder path (protocols/binary.py): layout, packing, dealer material, and the gate end
to end over the in-memory harness with exact rounds and wire bytes."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from privit.parties.config import RunConfig
from privit.parties.inmemory_run import run_in_memory, run_in_memory_detailed
from privit.parties.prg import Prg, new_seed
from privit.parties.session import Session
from privit.parties.wire import Message, encode, message_nbytes
from privit.protocols import binary, binary_layout, sharing
from privit.protocols.cost_model import adder_costs
from privit.protocols.registry import CORRELATIONS

BITS = [1, 2, 5, 6, 9, 10, 17, 18, 33, 63, 64]


def signed_inputs(bits: int, size: int, seed: int) -> torch.Tensor:
    """Values with |x| < 2^(bits-1), with 0, -1 and both extremes first."""
    gen = torch.Generator().manual_seed(seed)
    half = 1 << (bits - 1)
    if bits == 64:
        x = torch.randint(-(1 << 62), 1 << 62, (size,), generator=gen) * 2
        x[1::3] += 1
    else:
        x = torch.randint(-half, half, (size,), generator=gen)
    x[:4] = torch.tensor([0, -1, half - 1 if bits < 64 else (1 << 63) - 1,
                          -half if bits < 64 else -(1 << 63)])
    return x


def test_bit_reverse_positions_matches_index_reversal() -> None:
    rng = np.random.default_rng(0)
    for p in (4, 8, 16, 32, 64):
        levels = p.bit_length() - 1
        x = rng.integers(0, 2**63, 50, dtype=np.uint64)
        if p < 64:
            x &= np.uint64((1 << p) - 1)
        got = binary_layout.bit_reverse_positions(x, p)
        for value, out in zip(x.tolist(), got.tolist(), strict=True):
            want = 0
            for q in range(p):
                rev = int(format(q, f"0{levels}b")[::-1], 2)
                want |= ((value >> q) & 1) << rev
            assert out == want


@pytest.mark.parametrize("width", [1, 2, 4, 8, 16, 32])
def test_pack_bits_round_trip_and_size(width: int) -> None:
    rng = np.random.default_rng(width)
    for count in (0, 1, 7, 1001):
        values = rng.integers(0, 1 << width, count).astype(binary_layout.word_dtype(width))
        packed = binary_layout.pack_bits(values, width)
        assert packed.dtype == np.uint8 and packed.shape == (binary_layout.packed_nbytes(count, width),)
        assert packed.shape[0] == -(-count * width // 8)
        assert np.array_equal(binary_layout.unpack_bits(packed, width, count), values)


@pytest.mark.parametrize("width", [1, 2, 4, 8, 16])
def test_pack_bits_layout_is_value_i_at_bit_width_i(width: int) -> None:
    """The wire layout itself (both parties and the dealer rely on it), not only the round
    trip: a whole number of bytes and a padded tail, uint8 and wider inputs."""
    rng = np.random.default_rng(10 + width)
    for count, dtype in ((64, np.uint8), (61, np.uint8), (40, np.uint32)):
        values = rng.integers(0, 1 << width, count).astype(dtype)
        stream = sum(int(v) << (width * i) for i, v in enumerate(values.tolist()))
        want = stream.to_bytes(binary_layout.packed_nbytes(count, width), "little")
        assert binary_layout.pack_bits(values, width).tobytes() == want


@pytest.mark.parametrize("bits", range(1, 65))
def test_share_words_is_the_top_bit_and_the_reversed_low_bits(bits: int) -> None:
    """share_words (narrowed, shifted and reversed in place) against its definition: bit
    bits - 1, and the low bits - 1 bits at the top of P positions, bit-reversed."""
    rng = np.random.default_rng(bits)
    x = rng.integers(0, 2**63, 300, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 300,
                                                                                    dtype=np.uint64)
    k, p = bits - 1, binary_layout.positions(bits)
    low = x & np.uint64(binary_layout.low_mask(k)) if k else np.zeros_like(x)
    want_word = binary_layout.bit_reverse_positions(
        (low << np.uint64(p - k)).astype(binary_layout.word_dtype(p)), p)
    top, word = binary_layout.share_words(x, bits)
    assert top.dtype == np.uint8 and np.array_equal(top, (x >> np.uint64(k)) & np.uint64(1))
    assert word.dtype == want_word.dtype and np.array_equal(word, want_word)


@pytest.mark.parametrize("bits, leaf", [(17, 2), (33, 4), (64, 2)])
def test_gate_local_work_in_slices_gives_the_same_shares(monkeypatch: pytest.MonkeyPatch,
                                                         bits: int, leaf: int) -> None:
    """The local work between openings runs in slices of LOCAL_SLICE elements: several
    slices and a short last one give the same shares as one slice (same seeds), exact."""
    m = 400
    x = signed_inputs(bits, m, 5 + bits).reshape(20, 20)
    y = torch.randint(-(1 << 62), 1 << 62, (20, 20), generator=torch.Generator().manual_seed(6))

    def job(sess: Session) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        xs = sharing.share_input(sess, 1, x if sess.party_id == 1 else None, x.shape)
        ys = sharing.share_input(sess, 0, y if sess.party_id == 0 else None, y.shape)
        d, product = binary.adder_gate(sess, xs, bits, ys, leaf=leaf)
        return d, product, binary.adder_drelu_xor(sess, xs, bits, leaf=leaf)

    def shares() -> list[Any]:
        run = run_in_memory_detailed(RunConfig(timeout_s=30), job, CORRELATIONS,
                                     seed_source=b"slices")
        return run.results

    whole = shares()
    monkeypatch.setattr(binary, "LOCAL_SLICE", 64)  # 7 slices: 6 x 64 + 16
    sliced = shares()
    assert torch.equal(sliced[0][0] + sliced[1][0], (x >= 0).long())
    assert torch.equal(sliced[0][1] + sliced[1][1], y * (x >= 0).long())
    assert torch.equal((sliced[0][2] ^ sliced[1][2]).long(), (x >= 0).long())
    for a, b in zip(whole, sliced, strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_final_truth_table_is_drelu_of_the_masked_bits() -> None:
    masks = np.array([[0, 1, 0, 1, 1], [0, 0, 1, 1, 1], [1, 0, 0, 1, 0]], dtype=np.uint8)
    table = binary_layout.final_truth_table(masks)
    assert np.array_equal(table.sum(axis=1), np.full(5, binary_layout.TABLE_SUM))
    for e in range(5):
        for idx in range(8):
            p, g, t = (((idx >> k) & 1) ^ int(masks[k, e]) for k in range(3))
            assert table[e, idx] == t ^ (p & g)


def test_leaf_terms_expand_the_block_generate_and_propagate() -> None:
    for leaf in binary_layout.LEAF_WIDTHS:
        g_terms, p_terms = binary_layout.leaf_terms(leaf)
        full = (1 << leaf) - 1
        for x in range(1 << leaf):
            for y in range(1 << leaf):
                carry_in_out = (x + y) >> leaf  # carry out of the block with carry in 0
                propagate = int((x ^ y) == full)
                mono = lambda v, s: int(v & s == s)  # noqa: E731
                g = 0
                for s_mask, t_mask in g_terms:
                    g ^= mono(x, s_mask) & mono(y, t_mask)
                p = mono(x, full) ^ mono(y, full)
                for s_mask, t_mask in p_terms:
                    p ^= mono(x, s_mask) & mono(y, t_mask)
                assert (g, p) == (carry_in_out, propagate)


@pytest.mark.parametrize("bits, relu, leaf", [(64, 1, 2), (64, 0, 4), (14, 1, 4), (9, 0, 2),
                                              (3, 1, 2)])
def test_adder_gate_material_relations_and_offline_bytes(bits: int, relu: int, leaf: int) -> None:
    m = 300
    kind = binary.AdderGate()
    seeds = [new_seed(), new_seed()]
    params = (m, bits, relu, leaf)
    dealt = kind.deal(params, [Prg(s, 5) for s in seeds])
    mats = [{k: v.numpy() for k, v in kind.expand(params, i, 2, Prg(seeds[i], 5), dealt[i]).items()}
            for i in range(2)]
    assert dealt[0] == []  # party 0 derives everything from its PRG
    assert sum(a.nbytes for a in dealt[1]) == adder_costs(m, bits, bool(relu), leaf).offline_bytes
    a, b = mats[0]["leaf_mask"], mats[1]["leaf_mask"]
    c = mats[0]["leaf_c"] ^ mats[1]["leaf_c"]
    if leaf == 2:  # rows: bit 0, bit 1, their product
        assert np.array_equal(c[0], (a[1] & b[1]) ^ (a[2] & b[0]) ^ (a[0] & b[2]))
        assert np.array_equal(c[1], (a[1] & b[0]) ^ (a[0] & b[1]))
    for row, terms in zip(c, binary_layout.leaf_terms(leaf), strict=True):
        want = np.zeros_like(row)
        for s_mask, t_mask in terms:
            want ^= a[s_mask - 1] & b[t_mask - 1]
        assert np.array_equal(row, want)
    for k, _ in enumerate(binary_layout.level_widths(bits, leaf)):
        mask = mats[0][f"mask{k}"] ^ mats[1][f"mask{k}"]
        c = mats[0][f"c{k}"] ^ mats[1][f"c{k}"]
        assert np.array_equal(c, np.stack([mask[0] & mask[1], mask[0] & mask[2]]))
    table = mats[0]["table"] + mats[1]["table"]
    assert np.array_equal(table, binary_layout.final_truth_table(mats[0]["final_mask"]
                                                                 ^ mats[1]["final_mask"]))
    if relu:
        big_r = mats[0]["big_r"] + mats[1]["big_r"]
        assert np.array_equal(mats[0]["r_table"] + mats[1]["r_table"], table * big_r[:, None])


def adder_payloads(m: int, bits: int, product: bool, leaf: int = 2) -> list[tuple[str, int]]:
    """(label, payload bytes) of each message the adder gate sends, in order."""
    p = binary_layout.positions(bits)
    monomials = (1 << leaf) - 1
    sizes = [binary_layout.packed_nbytes(monomials * m, p // leaf) + (8 * m if product else 0)]
    labels = ["adder_leaf"]
    for k, w in enumerate(binary_layout.level_widths(bits, leaf)):
        sizes.append(binary_layout.packed_nbytes(3 * m, w // 2))
        labels.append(f"adder_level{k}")
    sizes.append(binary_layout.packed_nbytes(3 * m, 1))
    labels.append("adder_final")
    return list(zip(labels, sizes, strict=True))


def adder_message_bytes(src: int, m: int, bits: int, product: bool, leaf: int = 2) -> int:
    """Exact wire bytes of the adder gate's messages from `src` (headers included)."""
    return sum(message_nbytes(encode(Message("data", src, i, lbl, [np.zeros(n, np.uint8)])))
               for i, (lbl, n) in enumerate(adder_payloads(m, bits, product, leaf)))


def run_gate(bits: int, x: torch.Tensor, y: torch.Tensor | None, leaf: int = 2
             ) -> list[tuple[Any, dict[str, Any]]]:
    def job(sess: Session) -> tuple[torch.Tensor, torch.Tensor | None]:
        xs = sharing.share_input(sess, 1, x if sess.party_id == 1 else None, x.shape)
        ys = None if y is None else sharing.share_input(
            sess, 0, y if sess.party_id == 0 else None, y.shape)
        return binary.adder_gate(sess, xs, bits, ys, leaf=leaf)

    return run_in_memory(RunConfig(timeout_s=30), job, CORRELATIONS)


@pytest.mark.parametrize("leaf", binary_layout.LEAF_WIDTHS)
@pytest.mark.parametrize("bits", BITS)
def test_adder_gate_exact_with_rounds_and_bytes(bits: int, leaf: int) -> None:
    if leaf not in binary_layout.leaf_widths(bits):
        pytest.skip("4-bit leaves need P >= 8")
    m = 400
    x = signed_inputs(bits, m, bits).reshape(20, 20)
    y = torch.randint(-(1 << 62), 1 << 62, (20, 20), generator=torch.Generator().manual_seed(1))
    res = run_gate(bits, x, y, leaf)
    d = res[0][0][0] + res[1][0][0]
    product = res[0][0][1] + res[1][0][1]
    assert torch.equal(d, (x >= 0).long())
    assert torch.equal(product, y * (x >= 0).long())
    cost = adder_costs(m, bits, product=True, leaf=leaf)
    rounds = int(np.log2(binary_layout.positions(bits))) - (1 if leaf == 4 else 0)
    for party, (_, report) in enumerate(res):
        online = report["phases"]["online"]
        assert online["rounds"] == cost.rounds == rounds
        assert online["messages"] == cost.messages
        assert report["bytes_to"] == {
            str(1 - party): adder_message_bytes(party, m, bits, True, leaf)}
    assert sum(n for _, n in adder_payloads(m, bits, True, leaf)) == cost.online_bytes


@pytest.mark.parametrize("leaf", [2, 4])
def test_a_large_gate_takes_its_material_in_pieces(monkeypatch: pytest.MonkeyPatch,
                                                   leaf: int) -> None:
    """Past GATE_REQUEST_ELEMENTS the material comes as several plan requests (a window
    bounds each), joined into one layout: the same values, online rounds and bytes."""
    m, bits = 400, 64
    x = signed_inputs(bits, m, 3).reshape(20, 20)
    y = torch.randint(-(1 << 62), 1 << 62, (20, 20), generator=torch.Generator().manual_seed(4))
    whole = run_gate(bits, x, y, leaf)
    monkeypatch.setattr(binary, "GATE_REQUEST_ELEMENTS", 96)  # 5 pieces: 4 x 96 + 16
    pieces = run_gate(bits, x, y, leaf)
    assert torch.equal(pieces[0][0][0] + pieces[1][0][0], (x >= 0).long())
    assert torch.equal(pieces[0][0][1] + pieces[1][0][1], y * (x >= 0).long())
    for (_, a), (_, b) in zip(whole, pieces, strict=True):
        for key in ("bytes", "rounds", "messages"):
            assert a["phases"]["online"][key] == b["phases"]["online"][key]
        assert a["bytes_to"] == b["bytes_to"]
    tracer = Session.tracing(RunConfig(), 0, CORRELATIONS)
    binary.adder_gate(tracer, torch.zeros(m, dtype=torch.int64), bits, leaf=leaf)
    assert [p[0] for _, p in tracer.trace or []] == [96, 96, 96, 96, 16]


def test_adder_gate_without_product_and_n3_refused() -> None:
    x = signed_inputs(64, 100, 3)
    res = run_gate(64, x, None)
    assert res[0][0][1] is None
    assert torch.equal(res[0][0][0] + res[1][0][0], (x >= 0).long())
    assert res[0][1]["bytes_to"] == {"1": adder_message_bytes(0, 100, 64, False)}

    def job(sess: Session) -> Any:
        return binary.adder_gate(sess, torch.zeros(3, dtype=torch.int64), 64)

    with pytest.raises(NotImplementedError):
        job(Session.tracing(RunConfig(n_parties=3, truncation="dealer"), 0, CORRELATIONS))
