"""Dealer bytes of every FSS key type, per element and by component, pinned exactly:
the formula (fss_correlations.dealt_bytes) against the arrays `deal()` really sends."""

from __future__ import annotations

import numpy as np
import pytest

from privit.parties.prg import Prg
from privit.protocols.bit_select import BitSelect
from privit.protocols.cost_model import fss_costs
from privit.protocols.dcf_bit import BitDreluMaterial, bit_drelu_eval
from privit.protocols.fss_correlations import (
    DreluBitFss,
    bit_dcf_keys,
    dealt_bytes,
    fss_kinds,
)

SEEDS = (b"party-0-seed-16b", b"party-1-seed-16b")

# (kind, bits): bytes per element sent to (party 0, party 1), numel = 8 (so that the
# packed MSB(r) bits of drelu_bit_fss are one whole byte per 8 elements)
PER_ELEMENT = {
    ("drelu_fss", 64): (1520, 1528), ("drelu_fss", 32): (752, 760),
    ("drelu_fss", 24): (560, 568),
    ("relu_fss", 64): (2032, 2048), ("relu_fss", 32): (1008, 1024),
    ("relu_fss", 24): (752, 768),
    ("drelu_bit_fss", 64): (919, 919.125), ("drelu_bit_fss", 32): (403, 403.125),
    ("drelu_bit_fss", 24): (274, 274.125), ("drelu_bit_fss", 20): (210, 210.125),
    ("drelu_bit_fss", 8): (16, 16.125), ("drelu_bit_fss", 2): (1, 1.125),
}


def _deal(kind: str, numel: int, bits: int) -> list[list[np.ndarray]]:
    params = (numel, bits, 0) if kind == "relu_fss" else (numel, bits)
    return fss_kinds()[kind].deal(params, [Prg(seed, 3) for seed in SEEDS])


@pytest.mark.parametrize(("kind", "bits"), sorted(PER_ELEMENT))
def test_dealt_bytes_per_element_are_pinned(kind: str, bits: int) -> None:
    numel = 8
    sent = [sum(a.nbytes for a in payload) for payload in _deal(kind, numel, bits)]
    by_component = dealt_bytes(kind, numel, bits)
    assert sent == [sum(part.values()) for part in by_component]
    assert [s / numel for s in sent] == list(PER_ELEMENT[(kind, bits)])


def test_bit_drelu_key_is_under_300_bytes_per_element_at_24_bits() -> None:
    party0, party1 = dealt_bytes("drelu_bit_fss", 1000, 24)
    assert sum(party0.values()) == 274_000 and sum(party1.values()) == 274_125
    assert party0 == {"seed_cw": 256_000, "value_cw": 2_000, "leaf_cw": 16_000}


@pytest.mark.parametrize("bits", [2, 9, 24, 32])
def test_drelu_bit_fss_deal_then_expand_computes_drelu(bits: int) -> None:
    numel = 300
    kind = DreluBitFss()
    payloads = kind.deal((numel, bits), [Prg(seed, 11) for seed in SEEDS])
    mats = [kind.expand((numel, bits), party, 2, Prg(SEEDS[party], 11), payloads[party])
            for party in (0, 1)]
    half = 2 ** (bits - 1)
    rng = np.random.default_rng(bits)
    values = np.concatenate([[-half, half - 1, -1, 0, 1], rng.integers(-half, half, numel - 5)])
    low = np.uint64(2**bits - 1)
    x = values.astype(np.int64).view(np.uint64) & low
    r = [mat["r_share"].numpy() for mat in mats]
    x_hat = (x + r[0] + r[1]) & low
    shares = [bit_drelu_eval(party, BitDreluMaterial(r[party], mats[party]["msb_share"].numpy(),
                                                     bit_dcf_keys(mats[party], bits)), x_hat)
              for party in (0, 1)]
    assert np.array_equal(shares[0] ^ shares[1], (values >= 0).astype(np.uint8))


def test_drelu_bit_fss_rejects_a_wrong_payload() -> None:
    kind = DreluBitFss()
    payloads = kind.deal((16, 24), [Prg(seed, 1) for seed in SEEDS])
    with pytest.raises(ValueError, match="payload arrays"):
        kind.expand((16, 24), 0, 2, Prg(SEEDS[0], 1), payloads[1])
    with pytest.raises(ValueError, match="msb_share"):
        kind.expand((16, 24), 1, 2, Prg(SEEDS[1], 1), [*payloads[1][:3], np.zeros(3, np.uint8)])
    with pytest.raises(ValueError, match="seed_cw"):
        kind.expand((16, 25), 0, 2, Prg(SEEDS[0], 1), payloads[0])


# The compact ReLU gate (compare._gate_fss_compact, method "fss_compact"): a drelu_bit_fss
# key and bit_select's (K = 1) material; bytes per element to (party 0, party 1), numel = 8
COMPACT_GATE = {14: (113, 129.125), 17: (162, 178.125), 20: (210, 226.125),
                24: (274, 290.125), 25: (291, 307.125), 32: (403, 419.125),
                64: (919, 935.125)}


@pytest.mark.parametrize("bits", sorted(COMPACT_GATE))
def test_compact_relu_gate_bytes_per_element_are_pinned(bits: int) -> None:
    numel = 8
    prgs = [Prg(seed, 5) for seed in SEEDS]
    keys = fss_kinds()["drelu_bit_fss"].deal((numel, bits), prgs)
    select = BitSelect().deal((1, numel, 0), prgs)
    sent = [sum(a.nbytes for a in keys[p] + select[p]) / numel for p in (0, 1)]
    assert sent == list(COMPACT_GATE[bits])
    cost = fss_costs(numel, bits, True, shared_mask=False, compact=True)
    assert cost.offline_bytes == numel * sum(sent) and cost.offline_link_bytes == numel * sent[1]
    # the target, <= 300 B per element per party: met up to 24 bits
    assert (max(sent) <= 300) == (bits <= 24)
