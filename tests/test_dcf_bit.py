"""The compact bit DCF (protocols/dcf_bit.py): correctness near alpha and at the domain
ends, key bytes per element pinned exactly, and the XOR-share DReLU on top."""

from __future__ import annotations

import numpy as np
import pytest

from privit.protocols.dcf import dcf_key_bytes
from privit.protocols.dcf_bit import (
    BitDcfKeys,
    bit_dcf_cw_bytes,
    bit_dcf_eval,
    bit_dcf_key_bytes,
    bit_dcf_keygen,
    bit_drelu_eval,
    bit_drelu_keygen,
    leaf_bits,
)

SEED = b"test-bitdcf-16by"


def _reconstruct(keys: tuple[BitDcfKeys, BitDcfKeys], x: np.ndarray, chunk: int = 8192
                 ) -> np.ndarray:
    return bit_dcf_eval(0, keys[0], x, chunk=chunk) ^ bit_dcf_eval(1, keys[1], x, chunk=chunk)


@pytest.mark.parametrize("n_bits", [0, 1, 3, 7, 8, 9])
def test_bit_dcf_exhaustive_small(n_bits: int) -> None:
    domain = np.arange(2**n_bits, dtype=np.uint64)
    alpha = np.repeat(domain, domain.size)
    x = np.tile(domain, domain.size)
    got = _reconstruct(bit_dcf_keygen(alpha, n_bits, SEED), x, chunk=777)
    assert np.array_equal(got, (x < alpha).astype(np.uint8))


@pytest.mark.parametrize("n_bits", [9, 19, 23, 31, 63, 64])
def test_bit_dcf_near_alpha_and_domain_ends(n_bits: int) -> None:
    rng = np.random.default_rng(n_bits)
    top = np.uint64(2**n_bits - 1)
    alpha = rng.integers(0, top, 600, dtype=np.uint64, endpoint=True)
    alpha[:4] = [0, 1, top - np.uint64(1), top]
    keys = bit_dcf_keygen(alpha, n_bits, SEED)
    one = np.uint64(1)
    for x in (alpha, np.where(alpha > 0, alpha - one, alpha), np.where(alpha < top, alpha + one, alpha),
              np.zeros_like(alpha), np.full_like(alpha, top),
              rng.integers(0, top, alpha.size, dtype=np.uint64, endpoint=True)):
        assert np.array_equal(_reconstruct(keys, x, chunk=256), (x < alpha).astype(np.uint8))


def test_bit_dcf_key_bytes_are_pinned() -> None:
    # 16 L + ceil(L / 8) + max(1, 2^nu / 8) bytes of CWs, L = n - min(7, n)
    assert [bit_dcf_cw_bytes(n) for n in (0, 3, 7, 8, 19, 23, 31, 63)] == \
        [1, 1, 16, 16 + 1 + 16, 192 + 2 + 16, 256 + 2 + 16, 384 + 3 + 16, 896 + 7 + 16]
    assert bit_dcf_cw_bytes(23) == 274 <= 300
    assert bit_dcf_key_bytes(23) == 290
    # versus dcf.py's Z_2^64 DCF (CWs = key - root seed)
    assert dcf_key_bytes(23) - 16 == 560 and dcf_key_bytes(31) - 16 == 752
    for n_bits in (5, 19, 31):
        m = 37
        keys = bit_dcf_keygen(np.zeros(m, dtype=np.uint64), n_bits, SEED)
        assert leaf_bits(n_bits) == min(7, n_bits)
        for key in keys:
            assert key.nbytes == m * bit_dcf_key_bytes(n_bits)
            assert sum(a.nbytes for a in key.corrections()) == m * bit_dcf_cw_bytes(n_bits)
        for a, b in zip(keys[0].corrections(), keys[1].corrections(), strict=True):
            assert np.array_equal(a, b)  # the CWs are common: only the roots differ


def test_bit_dcf_round_trip_and_bad_inputs() -> None:
    alpha = np.array([5, 900, 70000], dtype=np.uint64)
    key0, key1 = bit_dcf_keygen(alpha, 19, SEED)
    again = BitDcfKeys.from_buffers(19, key0.to_buffers())
    x = np.array([4, 900, 70001], dtype=np.uint64)
    assert list(bit_dcf_eval(0, again, x) ^ bit_dcf_eval(1, key1, x)) == [1, 0, 0]
    with pytest.raises(ValueError, match="expected 4 buffers"):
        BitDcfKeys.from_buffers(19, key0.to_buffers()[:3])
    with pytest.raises(ValueError, match="seed_cw"):
        BitDcfKeys.from_buffers(20, key0.to_buffers())
    with pytest.raises(ValueError, match="outside"):
        bit_dcf_keygen(np.array([2**19], dtype=np.uint64), 19, SEED)
    with pytest.raises(ValueError, match="outside"):
        bit_dcf_eval(0, key0, np.array([0, 0, 2**19], dtype=np.uint64))
    with pytest.raises(ValueError, match="party"):
        bit_dcf_eval(2, key0, x)


def test_bit_dcf_keygen_is_deterministic_and_shares_look_random() -> None:
    alpha = np.arange(4096, dtype=np.uint64)
    first, second = bit_dcf_keygen(alpha, 20, SEED), bit_dcf_keygen(alpha, 20, SEED)
    for a, b in zip(first[0].to_buffers(), second[0].to_buffers(), strict=True):
        assert np.array_equal(a, b)
    share = bit_dcf_eval(0, first[0], np.full(4096, 2**19, dtype=np.uint64))
    assert 1800 < int(share.sum()) < 2300  # one party's bits are balanced, not the output


@pytest.mark.parametrize("n_bits", [2, 8, 20, 24, 64])
def test_bit_drelu_near_zero_and_range_ends(n_bits: int) -> None:
    rng = np.random.default_rng(7 + n_bits)
    half = 2 ** (n_bits - 1)
    values = np.concatenate([np.arange(-min(half, 40), min(half, 40)),
                             [-half, half - 1, -half + 1, half - 2],
                             rng.integers(-half, half, 400)])
    m = values.size
    mask = 2**n_bits - 1 if n_bits < 64 else 2**64 - 1
    x = np.array([int(v) & mask for v in values], dtype=np.uint64)
    mat0, mat1 = bit_drelu_keygen(m, n_bits, SEED)
    x_hat = (x + mat0.r_share + mat1.r_share) & np.uint64(mask)
    got = bit_drelu_eval(0, mat0, x_hat) ^ bit_drelu_eval(1, mat1, x_hat)
    assert np.array_equal(got, (values >= 0).astype(np.uint8))
