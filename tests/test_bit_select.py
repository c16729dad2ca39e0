"""bit_select.bit_products: XOR-shared bits times one shared value (and its square) from
one opening: values, exact rounds, online bytes and dealer bytes (2 parties, in memory);
open_bits: the same opening also gives the bits in arithmetic shares."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from nonlinear_helpers import LSB, Expected, check_costs, check_offline, run, shared

from privit.parties.prg import Prg
from privit.protocols import bit_select
from privit.protocols.bit_select import BitSelect, bit_products, open_bits

SEEDS = (b"party-0-seed-16b", b"party-1-seed-16b")


def _xor_shares(sess, bits: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Test-only XOR sharing of public bits: a fixed pad m, party 0 holds bits ^ m."""
    pad = torch.randint(0, 2, bits.shape, generator=torch.Generator().manual_seed(3),
                        dtype=torch.uint8)
    return bits ^ pad if sess.party_id == 0 else pad


@pytest.mark.parametrize("square", [True, False])
def test_bit_products_values_rounds_and_bytes(square: bool) -> None:
    n, k = 203, 3
    x = torch.linspace(-40, 40, n, dtype=torch.float64)
    bits = torch.randint(0, 2, (k, n), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)

    def job(sess):  # type: ignore[no-untyped-def]
        prods, sq = bit_products(sess, _xor_shares(sess, bits), shared(sess, 1, x), square=square,
                                 label="sel")
        return prods + ([sq] if sq is not None else [])

    res = run(job)
    for row in range(k):
        assert torch.equal(res.value[row], bits[row].double() * x.to(torch.float64)
                           .mul(2.0**16).round().div(2.0**16))
    if square:  # raw x^2 carries 2 f fractional bits: decoded with f it is x^2 * 2^16
        assert (res.value[k] / 2.0**16 - x**2).abs().max() <= 1e-6 + 80 * LSB
    e = Expected()
    e.sent.append(("sel", "|u1", (-(-k * n // 8) + 8 * n,)))
    e.rounds += 1
    e.requests([("bit_select", (k, n, int(square)))])
    check_costs(res, e)
    check_offline(res, 8 * (2 * k * n + (n if square else 0)))


@pytest.mark.parametrize("slice_len", [None, 16])
def test_open_bits_gives_the_bits_in_arithmetic_shares_from_the_same_opening(
        monkeypatch: pytest.MonkeyPatch, slice_len: int | None) -> None:
    """slice_len: step 3 in slices of 16 elements (7 slices, the last short) as well."""
    if slice_len is not None:
        monkeypatch.setattr(bit_select, "_SLICE", slice_len)
    n, k = 101, 7
    x = torch.linspace(-9, 9, n, dtype=torch.float64)
    bits = torch.randint(0, 2, (k, n), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    assert 0 < int(bits.sum()) < k * n  # both values occur

    def job(sess):  # type: ignore[no-untyped-def]
        opened = open_bits(sess, _xor_shares(sess, bits), shared(sess, 1, x), square=False,
                           label="sel")
        assert opened.square is None
        return opened.bits + opened.products

    res = run(job)
    for row in range(k):  # decoded with f: the unscaled bit b reads as b 2^-16
        assert torch.equal(res.value[row] * 2.0**16, bits[row].double())
        assert torch.equal(res.value[k + row], bits[row].double() * x.mul(2.0**16).round()
                           .div(2.0**16))
    e = Expected()
    e.sent.append(("sel", "|u1", (-(-k * n // 8) + 8 * n,)))
    e.rounds += 1
    e.requests([("bit_select", (k, n, 0))])
    check_costs(res, e)
    check_offline(res, 8 * 2 * k * n)


def test_open_bits_of_no_elements() -> None:
    """N = 0: every output row is an empty tensor of x's shape (the rows are views of one
    (K, N) array, reshaped by K, not by -1)."""
    x = torch.zeros((0,), dtype=torch.float64)

    def job(sess):  # type: ignore[no-untyped-def]
        opened = open_bits(sess, torch.zeros((3, 0), dtype=torch.uint8), shared(sess, 1, x),
                           square=True, label="sel")
        assert opened.square is not None
        return opened.bits + opened.products + [opened.square]

    res = run(job)
    assert [tuple(v.shape) for v in res.value] == [(0,)] * 7


def test_bit_select_deals_to_party_1_only_and_rejects_bad_payloads() -> None:
    kind = BitSelect()
    payloads = kind.deal((2, 5, 1), [Prg(seed, 4) for seed in SEEDS])
    assert payloads[0] == [] and [a.shape for a in payloads[1]] == [(2, 5), (2, 5), (5,)]
    mats = [kind.expand((2, 5, 1), p, 2, Prg(SEEDS[p], 4), payloads[p]) for p in (0, 1)]
    m = [{name: t.numpy() for name, t in mat.items()} for mat in mats]
    rho = (m[0]["rho_bits"] ^ m[1]["rho_bits"]).astype(np.uint64)
    big_r = m[0]["r_share"] + m[1]["r_share"]
    assert np.array_equal(m[0]["rho"] + m[1]["rho"], rho)
    assert np.array_equal(m[0]["rho_r"] + m[1]["rho_r"], rho * big_r)
    assert np.array_equal(m[0]["r2"] + m[1]["r2"], big_r * big_r)
    with pytest.raises(ValueError, match="party 0 gets no payload"):
        kind.expand((2, 5, 1), 0, 2, Prg(SEEDS[0], 4), payloads[1])
    with pytest.raises(ValueError, match="rho_r is"):
        kind.expand((2, 5, 1), 1, 2, Prg(SEEDS[1], 4), [payloads[1][0], np.zeros(3, np.uint64),
                                                         payloads[1][2]])
    with pytest.raises(ValueError, match="params"):
        kind.deal((0, 5, 1), [Prg(seed, 4) for seed in SEEDS])
