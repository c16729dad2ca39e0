"""Known-answer tests for the AES-CTR PRG: any rewrite must keep the stream bit for bit.

The expected values were produced by the original in-place implementation on
cryptography 48 and are re-derived here from AES-ECB on explicit counter blocks, so the
test pins both the bytes and what they mean (CTR with nonce = stream, little-endian,
followed by a 64-bit zero counter that counts big-endian).
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privit.parties.prg import Prg

KEY = bytes(range(16))
FIRST_40 = "0a54c3e6eae07eccf451bbcd991a30ec5b25f3e397680f722bfa1142cac4e41486820da90c6eb5a2"
NEXT_600K_SHA256 = "22a025cf37e6bab88c4a4924847dbde84be6c1e0cf48f75b561de9cb428b258c"


def _reference_stream(key: bytes, stream: int, n: int) -> bytes:
    """AES-ECB over the counter blocks nonce‖counter, written out by hand."""
    first = int.from_bytes(stream.to_bytes(8, "little") + bytes(8), "big")
    blocks = b"".join(((first + i) % (1 << 128)).to_bytes(16, "big") for i in range(-(-n // 16)))
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return (ecb.update(blocks) + ecb.finalize())[:n]


def test_known_answer_across_calls_and_chunks() -> None:
    prg = Prg(KEY, stream=7)
    assert prg.bytes(40).tobytes().hex() == FIRST_40
    # 600,000 bytes span several internal chunks and start mid-block (40 is not a multiple of 16).
    assert hashlib.sha256(prg.bytes(600_000).tobytes()).hexdigest() == NEXT_600K_SHA256


@pytest.mark.parametrize("stream", [0, 7, (1 << 64) - 1])
def test_stream_is_aes_ctr(stream: int) -> None:
    n = 1000
    assert Prg(KEY, stream).bytes(n).tobytes() == _reference_stream(KEY, stream, n)


def test_split_draws_equal_one_draw() -> None:
    whole = Prg(KEY, 3).bytes(700_001)
    prg = Prg(KEY, 3)
    parts = [prg.bytes(n) for n in (1, 15, 262_144, 0, 437_841)]
    assert np.array_equal(np.concatenate(parts), whole)


def test_output_is_writable_and_typed() -> None:
    prg = Prg(KEY, 1)
    out = prg.bytes(64)
    assert out.dtype == np.uint8 and out.flags.writeable
    ring = prg.ring((3, 4))
    assert ring.shape == (3, 4) and str(ring.dtype) == "torch.int64"
    bits = prg.bits((5,))
    assert set(bits.tolist()) <= {0, 1}


@pytest.mark.parametrize(("seed", "stream"), [(bytes(15), 0), (KEY, -1), (KEY, 1 << 64)])
def test_bad_seed_or_stream_is_refused(seed: bytes, stream: int) -> None:
    with pytest.raises(ValueError):
        Prg(seed, stream)


def test_restarted_draws_the_stream_again() -> None:
    """The dealer re-derives a weight mask from its request PRG (owner_matmul.OwnerMask)."""
    prg = Prg(bytes(range(16)), stream=7)
    again = prg.restarted()
    first = prg.ring((3, 5))
    assert torch.equal(again.ring((3, 5)), first)
    assert torch.equal(prg.restarted().ring((3, 5)), first)  # also after prg moved on
    assert not torch.equal(Prg(bytes(range(16)), stream=8).ring((3, 5)), first)
