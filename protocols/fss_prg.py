"""Fixed-key AES PRG and randomness sources for function secret sharing (FSS).

The tree PRG of the DCF (see ``dcf.py``) is a length-expanding function of a 128-bit
seed. We build it from one fixed, public AES-128 key in the Matyas-Meyer-Oseas form

    H(y) = AES_k(y) xor y,

applied to the seed with a 2-bit domain tweak written into its two lowest bits:

    y_d = (s with bits 0 and 1 replaced by d),   d in {0, 1, 2, 3}

    G(s) = ( H(y_0), H(y_1), H(y_2), H(y_3) )
            child L   child R   value L   value R

so a seed carries 126 significant bits (bits 2..127); bits 0 and 1 of a seed are
"don't care" everywhere. Child block d (d = 0 for left, 1 for right) holds the child
seed in bits 2..127 and its control bit in bit d; the value block 2 + d holds the
64-bit output-group value in its low word. Evaluation along one path only needs
two blocks per level (child d and value d), one AES call over 2M blocks.

Every call runs one AES-ECB pass of OpenSSL (AES-NI) over a whole numpy array of
blocks; there is no Python loop per element. Blocks are handled as ``uint64`` pairs
(word 0 = bytes 0..7, little endian), so XORs run on 8-byte words.

Security: H is the fixed-key-AES hash used throughout MPC (random-permutation model);
distinct tweaks make the four inputs of one seed distinct, and seeds are uniform.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

U64 = np.dtype("<u8")
SEED_BYTES = 16
# Public and fixed; any 16 bytes will do. Security does not depend on its secrecy.
FIXED_KEY = b"privit/fss-prg/1"
TWEAK_BITS = np.uint64(3)
CLEAR_TWEAK = np.uint64(0xFFFF_FFFF_FFFF_FFFC)
# Tweak of the value block of a path step, on top of the direction bit d (value d = 2 + d).
_VALUE_TWEAK = np.uint64(2)

RandomSource = Callable[[int], bytes]
"""A callable returning that many uniformly random bytes (os.urandom, AesCtrSource)."""


def aes_ctr_bytes(seed16: bytes, nonce16: bytes, nbytes: int) -> bytes:
    """Return ``nbytes`` of the AES-128-CTR key stream of key ``seed16`` from ``nonce16``.

    The keyed stream PRG: parties that share ``seed16`` derive identical bytes locally.
    Cost: one AES block per 16 bytes (OpenSSL, ~8 GB/s with AES-NI).
    """
    if len(seed16) != 16 or len(nonce16) != 16:
        raise ValueError("aes_ctr_bytes needs a 16-byte seed and a 16-byte nonce")
    if nbytes < 0:
        raise ValueError("nbytes must be >= 0")
    encryptor = Cipher(algorithms.AES(seed16), modes.CTR(nonce16)).encryptor()
    return encryptor.update(bytes(nbytes)) + encryptor.finalize()


class AesCtrSource:
    """Deterministic random source: successive calls walk one AES-CTR stream of ``seed16``.

    Each call starts at a fresh block-aligned counter, so no key-stream byte is reused.
    """

    def __init__(self, seed16: bytes) -> None:
        if len(seed16) != 16:
            raise ValueError("AesCtrSource needs a 16-byte seed")
        self._seed = bytes(seed16)
        self._counter = 0

    def __call__(self, nbytes: int) -> bytes:
        nonce = self._counter.to_bytes(16, "big")
        self._counter += -(-nbytes // 16)
        return aes_ctr_bytes(self._seed, nonce, nbytes)


def as_random_source(rng: bytes | RandomSource | None) -> RandomSource:
    """Normalise a keygen ``rng`` argument: 16-byte seed, a callable, or None (os.urandom)."""
    if rng is None:
        return os.urandom
    if isinstance(rng, bytes | bytearray):
        return AesCtrSource(bytes(rng))
    if callable(rng):
        return rng
    raise TypeError(f"rng must be 16 bytes, a callable(nbytes) -> bytes, or None, not {rng!r}")


def random_u64(source: RandomSource, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform ``uint64`` array of ``shape`` from ``source``."""
    count = int(np.prod(shape, dtype=np.int64))
    raw = source(8 * count)
    if len(raw) != 8 * count:
        raise ValueError("random source returned the wrong number of bytes")
    return np.frombuffer(raw, dtype=U64).reshape(shape).copy()


class FixedKeyHash:
    """H(y) = AES_k(y) xor y over whole arrays of 128-bit blocks, k fixed and public.

    One instance holds one OpenSSL ECB context; create one per keygen/eval call
    (cheap, microseconds) rather than sharing a module-level object.
    """

    def __init__(self, key: bytes = FIXED_KEY) -> None:
        self._encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        self._scratch = np.empty(0, dtype=np.uint8)

    def __call__(self, blocks: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Return H(blocks); ``blocks`` is a C-contiguous uint64 array with last axis 2.

        ``out`` (same shape, uint64, C-contiguous) is reused when given.
        Cost: one AES-ECB call over ``blocks.size // 2`` blocks plus one XOR pass.
        """
        if blocks.dtype != U64 or blocks.shape[-1] != 2 or not blocks.flags.c_contiguous:
            raise ValueError("FixedKeyHash needs C-contiguous uint64 blocks of shape (..., 2)")
        nbytes = blocks.nbytes
        # update_into wants room for one extra block; keep a scratch buffer per instance.
        if self._scratch.size < nbytes + 16:
            self._scratch = np.empty(nbytes + 16, dtype=np.uint8)
        plain = blocks.reshape(-1).view(np.uint8).data  # .data: a memoryview, no copy
        written = self._encryptor.update_into(plain, self._scratch.data)
        if written != nbytes:
            raise RuntimeError("AES-ECB returned a partial output")
        encrypted = self._scratch[:nbytes].view(U64).reshape(blocks.shape)
        if out is None:
            out = np.empty_like(blocks)
        np.bitwise_xor(encrypted, blocks, out=out)
        return out


def prg_expand(hash_: FixedKeyHash, seeds: np.ndarray) -> np.ndarray:
    """G(s) for every seed: returns blocks (M, 4, 2) uint64 = [child L, child R, value L, value R].

    Steps: write the 4 tweaked copies of each seed, one H call over 4M blocks.
    Control bits: t_L = bit 0 of block 0's word 0, t_R = bit 1 of block 1's word 0.
    Values: v_L = word 0 of block 2, v_R = word 0 of block 3.
    """
    if seeds.ndim != 2 or seeds.shape[1] != 2:
        raise ValueError("seeds must have shape (M, 2) uint64")
    inp = np.empty((seeds.shape[0], 4, 2), dtype=U64)
    base = np.bitwise_and(seeds[:, 0], CLEAR_TWEAK)
    # Elementwise passes run on 1-D word views: numpy is slow on inner axes of length 2.
    for tweak in range(4):
        np.bitwise_or(base, np.uint64(tweak), out=inp[:, tweak, 0])
        inp[:, tweak, 1] = seeds[:, 1]
    return hash_(inp, out=inp)


def prg_expand_path(hash_: FixedKeyHash, work: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """One path step, in place: ``work[:, 0]`` holds the seeds, ``direction`` is 0/1 per seed.

    Overwrites and returns ``work`` (M, 2, 2) uint64 = [child d, value d] of G(s): the
    child's control bit is bit d of word 0 of block 0, the value is word 0 of block 1.
    Cost: one H call over 2M blocks and 4 elementwise passes on 1-D word views
    (numpy is slow on inner axes of length 2, so no pass touches one).
    """
    if work.dtype != U64 or work.ndim != 3 or work.shape[1:] != (2, 2):
        raise ValueError("work must be uint64 of shape (M, 2, 2)")
    child_word0, value_word0 = work[:, 0, 0], work[:, 1, 0]
    np.bitwise_and(child_word0, CLEAR_TWEAK, out=value_word0)  # value slot as scratch
    np.bitwise_or(value_word0, direction, out=child_word0)
    np.bitwise_or(child_word0, _VALUE_TWEAK, out=value_word0)
    work[:, 1, 1] = work[:, 0, 1]
    return hash_(work, out=work)
