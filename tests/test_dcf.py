"""FSS primitives: the fixed-key AES PRG, the DCF, and the DReLU built on them."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privit.protocols.dcf import (
    DcfKeys,
    DreluMaterial,
    dcf_eval,
    dcf_key_bytes,
    dcf_keygen,
    drelu_eval,
    drelu_key_bytes,
    drelu_keygen,
    drelu_mask_share,
    open_masked,
)
from privit.protocols.fss_prg import (
    FIXED_KEY,
    U64,
    AesCtrSource,
    FixedKeyHash,
    aes_ctr_bytes,
    as_random_source,
    prg_expand,
    prg_expand_path,
    random_u64,
)

SEED = b"test-dcf-seed-16"


def _uniform(rng: np.random.Generator, n_bits: int, size: int) -> np.ndarray:
    return rng.integers(0, 2**n_bits - 1, size, dtype=np.uint64, endpoint=True)


def _reconstruct(keys: tuple[DcfKeys, DcfKeys], x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    return dcf_eval(0, keys[0], x, chunk=chunk) + dcf_eval(1, keys[1], x, chunk=chunk)


# ------------------------------------------------------------------ PRG


def test_fixed_key_hash_is_aes_xor_input() -> None:
    source = AesCtrSource(SEED)
    blocks = random_u64(source, (5, 2))
    encryptor = Cipher(algorithms.AES(FIXED_KEY), modes.ECB()).encryptor()
    expected = np.frombuffer(encryptor.update(blocks.tobytes()), dtype=U64).reshape(5, 2) ^ blocks
    assert np.array_equal(FixedKeyHash()(blocks), expected)


def test_path_expansion_matches_full_expansion() -> None:
    hash_ = FixedKeyHash()
    seeds = random_u64(AesCtrSource(SEED), (64, 2))
    full = prg_expand(hash_, seeds)
    direction = seeds[:, 1] & np.uint64(1)
    work = np.empty((64, 2, 2), dtype=U64)
    work[:, 0] = seeds
    path = prg_expand_path(hash_, work, direction)
    rows = np.arange(64)
    assert np.array_equal(path[:, 0], full[rows, direction.astype(np.intp)])
    assert np.array_equal(path[:, 1], full[rows, 2 + direction.astype(np.intp)])
    # the two tweak bits of a seed are ignored
    assert np.array_equal(prg_expand(hash_, seeds ^ np.array([3, 0], dtype=U64)), full)


def test_aes_ctr_stream_and_source() -> None:
    stream = aes_ctr_bytes(SEED, bytes(16), 48)
    assert len(stream) == 48 and stream == aes_ctr_bytes(SEED, bytes(16), 48)
    source = AesCtrSource(SEED)
    assert source(16) + source(32) == stream  # successive calls walk one stream
    assert as_random_source(SEED)(48) == stream
    assert len(as_random_source(None)(7)) == 7
    with pytest.raises(TypeError):
        as_random_source(3)  # type: ignore[arg-type]


# ------------------------------------------------------------------ DCF


@pytest.mark.parametrize("n_bits", [0, 1, 2, 5])
def test_dcf_exhaustive_small(n_bits: int) -> None:
    count = 1 << n_bits
    alpha = np.repeat(np.arange(count, dtype=U64), count)
    x = np.tile(np.arange(count, dtype=U64), count)
    keys = dcf_keygen(alpha, n_bits, SEED)
    expected = (x < alpha).astype(U64)
    assert np.array_equal(_reconstruct(keys, x), expected)
    assert np.array_equal(_reconstruct(keys, x, chunk=7), expected)  # ragged chunks


@pytest.mark.parametrize("n_bits", [16, 64])
def test_dcf_random_and_near_alpha(n_bits: int) -> None:
    rng = np.random.default_rng(n_bits)
    top = np.uint64(2**n_bits - 1)
    alpha = _uniform(rng, n_bits, 3000)
    alpha[:4] = [0, 0, top, top]  # edge cases: never true / true except at the top
    x = _uniform(rng, n_bits, 3000)
    x[:4] = [0, top, 0, top]
    x[1000:2000] = alpha[1000:2000]  # on alpha's path to the end
    x[2000:2500] = alpha[2000:2500] - (alpha[2000:2500] > 0)  # alpha - 1
    x[2500:3000] = alpha[2500:3000] + (alpha[2500:3000] < top)  # alpha + 1
    beta = rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64, endpoint=True)
    expected_bits = (x < alpha).astype(U64)
    assert np.array_equal(_reconstruct(dcf_keygen(alpha, n_bits, SEED), x), expected_bits)
    with_beta = dcf_keygen(alpha, n_bits, None, beta=beta)
    assert np.array_equal(_reconstruct(with_beta, x), expected_bits * beta)


def test_dcf_shares_look_random() -> None:
    alpha = np.full(2000, 12345, dtype=U64)
    keys = dcf_keygen(alpha, 16, SEED)
    share = dcf_eval(0, keys[0], np.arange(2000, dtype=U64))
    assert len(np.unique(share)) > 1990  # not the 0/1 value itself


@pytest.mark.parametrize("n_bits", [0, 1, 5, 16, 63, 64])
def test_dcf_key_bytes_formula(n_bits: int) -> None:
    m = 37
    keys = dcf_keygen(np.zeros(m, dtype=U64), n_bits, SEED)
    assert dcf_key_bytes(n_bits) == 24 * n_bits + 24
    for key in keys:
        assert key.nbytes == m * dcf_key_bytes(n_bits)
        assert key.n_bits == n_bits and key.size == m
    assert dcf_key_bytes(64) == 1560 and dcf_key_bytes(16) == 408


def test_dcf_keygen_is_deterministic_under_a_seed() -> None:
    alpha = np.arange(50, dtype=U64)
    first, second = dcf_keygen(alpha, 8, SEED), dcf_keygen(alpha, 8, SEED)
    for a, b in zip(first, second, strict=True):
        assert all(
            np.array_equal(u, v) for u, v in zip(a.to_buffers(), b.to_buffers(), strict=True)
        )
    other = dcf_keygen(alpha, 8, b"another-seed-16b")
    assert not np.array_equal(first[0].root_seed, other[0].root_seed)


def _wire_round_trip(buffers: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """Raw bytes plus (dtype, shape) headers, as the transport sends them: no pickle."""
    headers = [(buffer.dtype.str, buffer.shape) for buffer in buffers]
    payloads = [buffer.tobytes() for buffer in buffers]
    return [
        np.frombuffer(payload, dtype=np.dtype(dtype)).reshape(shape)
        for payload, (dtype, shape) in zip(payloads, headers, strict=True)
    ]


def test_dcf_serialisation_round_trip() -> None:
    rng = np.random.default_rng(1)
    alpha, x = _uniform(rng, 20, 500), _uniform(rng, 20, 500)
    keys = dcf_keygen(alpha, 20, SEED)
    rebuilt = tuple(DcfKeys.from_buffers(_wire_round_trip(key.to_buffers())) for key in keys)
    for party in (0, 1):
        assert np.array_equal(dcf_eval(party, rebuilt[party], x), dcf_eval(party, keys[party], x))
    buffers = list(keys[0].to_buffers())
    with pytest.raises(ValueError):
        DcfKeys.from_buffers(buffers[:3])
    with pytest.raises(ValueError):
        DcfKeys.from_buffers([buffers[0], buffers[1][:-1], buffers[2], buffers[3]])
    with pytest.raises(ValueError):
        DcfKeys.from_buffers([buffers[0], buffers[1], buffers[2].view(np.int64), buffers[3]])


def test_dcf_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        dcf_keygen(np.array([16], dtype=U64), 4, SEED)  # alpha out of range
    with pytest.raises(ValueError):
        dcf_keygen(np.array([1], dtype=np.int64), 4, SEED)
    with pytest.raises(ValueError):
        dcf_keygen(np.array([1], dtype=U64), 65, SEED)
    keys = dcf_keygen(np.array([3, 5], dtype=U64), 4, SEED)
    with pytest.raises(ValueError):
        dcf_eval(0, keys[0], np.array([3, 16], dtype=U64))  # x out of range
    with pytest.raises(ValueError):
        dcf_eval(2, keys[0], np.array([3, 5], dtype=U64))
    with pytest.raises(ValueError):
        dcf_eval(0, keys[0], np.array([3], dtype=U64))  # wrong length


# ------------------------------------------------------------------ DReLU


def _signed(x: np.ndarray, n_bits: int) -> np.ndarray:
    """Two's-complement value of the low n bits of x (int64)."""
    low = x & np.uint64((1 << n_bits) - 1) if n_bits < 64 else x
    return np.array([v - (1 << n_bits) if v >> (n_bits - 1) else v for v in low.tolist()])


def _drelu_reconstruct(n_bits: int, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Run the whole DReLU flow: dealer, masked opening, local evaluation; return the sum."""
    size = x.shape[0]
    material = drelu_keygen(size, n_bits, SEED, mask=mask)
    x0 = _uniform(np.random.default_rng(7), 64, size)
    x1 = x - x0  # additive shares of x in Z_2^64
    sent = [drelu_mask_share(0, material[0], x0), drelu_mask_share(1, material[1], x1)]
    x_hat = open_masked(sent[0], sent[1], n_bits)
    assert all(int(s.max(initial=0)) < 2**n_bits for s in sent)  # n bits on the wire
    return drelu_eval(0, material[0], x_hat) + drelu_eval(1, material[1], x_hat)


@pytest.mark.parametrize("n_bits", [1, 2, 4, 5])
def test_drelu_exhaustive_small(n_bits: int) -> None:
    count = 1 << n_bits
    x = np.tile(np.arange(count, dtype=U64), count)
    mask = np.repeat(np.arange(count, dtype=U64), count)  # every x against every r
    expected = (_signed(x, n_bits) >= 0).astype(U64)
    assert np.array_equal(_drelu_reconstruct(n_bits, x, mask), expected)


@pytest.mark.parametrize("n_bits", [20, 64])
def test_drelu_random_and_edges(n_bits: int) -> None:
    rng = np.random.default_rng(n_bits)
    x = _uniform(rng, n_bits, 4000)
    most_negative, most_positive = 1 << (n_bits - 1), (1 << (n_bits - 1)) - 1
    minus_one = (1 << n_bits) - 1
    x[:8] = [0, minus_one, most_negative, most_positive, 1, minus_one - 1, most_negative + 1, 0]
    x[8:1000] = rng.integers(0, 64, 992, dtype=np.uint64) - np.uint64(32)  # near zero
    x[8:1000] &= np.uint64(minus_one)
    expected = (_signed(x, n_bits) >= 0).astype(U64)
    assert np.array_equal(_drelu_reconstruct(n_bits, x), expected)


def test_drelu_material_size_and_round_trip() -> None:
    size, n_bits = 300, 16
    material = drelu_keygen(size, n_bits, SEED)
    assert drelu_key_bytes(n_bits) == 24 * n_bits + 16 == 400
    assert drelu_key_bytes(64) == 1552
    for party in (0, 1):
        assert material[party].nbytes == size * drelu_key_bytes(n_bits)
        assert material[party].n_bits == n_bits
    x_hat = _uniform(np.random.default_rng(3), n_bits, size)
    rebuilt = DreluMaterial.from_buffers(_wire_round_trip(material[1].to_buffers()))
    assert np.array_equal(drelu_eval(1, rebuilt, x_hat), drelu_eval(1, material[1], x_hat))
    with pytest.raises(ValueError):
        DreluMaterial.from_buffers(list(material[1].to_buffers())[:5])
    with pytest.raises(ValueError):
        drelu_keygen(size, 0, SEED)
    with pytest.raises(ValueError):
        drelu_eval(0, material[0], x_hat | np.uint64(1 << n_bits))
