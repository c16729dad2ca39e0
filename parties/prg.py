"""AES-128-CTR pseudo-random generator for seeds shared between two roles.

Two roles holding the same 16-byte seed and asking for the same `stream` number draw
identical bytes, which is how the dealer and a party derive the same correlated
randomness without sending it, and how two parties derive a zero-cost input mask.
Each (seed, stream) pair must be used for one purpose only: callers pick the stream
number deterministically (for the dealer, the request index).
"""
from __future__ import annotations

import os

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SEED_BYTES = 16
# CTR keystream = AES(counter) xor plaintext, so encrypting zeros yields the stream.
# cryptography >= 51 refuses an in-place update_into (input and output overlapping), so
# the zeros come from this read-only source, fed in chunks: 256 KiB stays in L2 and
# measured as fast as the old in-place call (BENCHMARKS.md, "PRG").
_ZERO_CHUNK = memoryview(bytes(1 << 18))
_SLACK = 15


def new_seed() -> bytes:
    return os.urandom(SEED_BYTES)


class Prg:
    """Draws from AES-128-CTR keyed by `seed`, with a 64-bit `stream` number as nonce."""

    def __init__(self, seed: bytes, stream: int = 0) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"PRG seed must be {SEED_BYTES} bytes, got {len(seed)}")
        if not 0 <= stream < 1 << 64:
            raise ValueError(f"PRG stream must fit in 64 bits, got {stream}")
        self._seed, self._stream = seed, stream
        nonce = stream.to_bytes(8, "little") + bytes(8)
        self._enc = Cipher(algorithms.AES(seed), modes.CTR(nonce)).encryptor()

    def restarted(self) -> Prg:
        """A new generator at the start of this one's stream (the same draws again)."""
        return Prg(self._seed, self._stream)

    def bytes(self, n: int) -> np.ndarray:
        """The next `n` bytes of the stream, as a fresh writable uint8 array."""
        # cryptography < 42 wants room for one block more than it writes (15 bytes).
        out = np.empty(n + _SLACK, dtype=np.uint8)
        view = memoryview(out)  # type: ignore[arg-type]
        chunk = len(_ZERO_CHUNK)
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            written = self._enc.update_into(_ZERO_CHUNK[:size], view[start : start + size + _SLACK])
            if written != size:  # CTR is a stream mode: never buffers a partial block
                raise RuntimeError(f"AES-CTR wrote {written} of {size} bytes")
        return out[:n]

    def ring(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Uniform elements of Z_2^64 as int64."""
        n = int(np.prod(tuple(shape), dtype=np.int64))
        return torch.from_numpy(self.bytes(8 * n).view(np.int64).reshape(tuple(shape)))

    def bits(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        """Uniform bits {0, 1} as int64."""
        n = int(np.prod(tuple(shape), dtype=np.int64))
        return torch.from_numpy((self.bytes(n) & 1).astype(np.int64).reshape(tuple(shape)))
