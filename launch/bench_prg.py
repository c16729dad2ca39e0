"""Throughput of the AES-128-CTR PRG (parties/prg.py), the dealer's and parties' hot path.

`python -m privit.launch.bench_prg [--sizes 4096,1048576,16777216] [--reps 5] [--baseline]`
prints one row per draw size: bytes per draw and GB/s (best of `reps` timed passes, each
drawing about 64 MiB, a fresh `Prg` per draw as the dealer makes one per request).
`--baseline` adds the implementation before issue 11 (one in-place `update_into`), which only
cryptography 42-50 accept; elsewhere its rows say so. `privit bench` adds the PRG rows beside
the transport rows.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import cryptography
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privit.parties.prg import Prg

DEFAULT_SIZES = (4096, 1 << 20, 1 << 24)
_PASS_BYTES = 1 << 26


def _shipped(seed: bytes, stream: int, nbytes: int) -> np.ndarray:
    return Prg(seed, stream).bytes(nbytes)


def _inplace_baseline(seed: bytes, stream: int, nbytes: int) -> np.ndarray:
    """The PRG before issue 11: zeros encrypted in place (cryptography 42-50 only)."""
    nonce = stream.to_bytes(8, "little") + bytes(8)
    enc = Cipher(algorithms.AES(seed), modes.CTR(nonce)).encryptor()
    out = np.zeros(nbytes, dtype=np.uint8)
    view = memoryview(out)  # type: ignore[arg-type]
    enc.update_into(view, view)
    return out


IMPLEMENTATIONS: dict[str, Callable[[bytes, int, int], np.ndarray]] = {
    "prg": _shipped, "prg_inplace_baseline": _inplace_baseline}


def prg_throughput(nbytes: int, reps: int = 5, implementation: str = "prg") -> dict[str, Any]:
    """GB/s of one implementation's draws of `nbytes`, a fresh generator per draw."""
    draw = IMPLEMENTATIONS[implementation]
    draws = max(1, _PASS_BYTES // nbytes)
    seed = bytes(range(16))
    best = 0.0
    try:
        for _ in range(reps):
            start = time.perf_counter()
            for stream in range(draws):
                draw(seed, stream, nbytes)
            best = max(best, draws * nbytes / (time.perf_counter() - start) / 1e9)
    except ValueError as exc:  # this cryptography refuses the in-place call
        return {"op": implementation, "draw_bytes": nbytes, "unsupported": str(exc)}
    return {"op": implementation, "draw_bytes": nbytes, "gb_per_s": best}


def run(sizes: tuple[int, ...] = DEFAULT_SIZES, reps: int = 5,
        baseline: bool = False) -> list[dict[str, Any]]:
    names = ["prg", "prg_inplace_baseline"] if baseline else ["prg"]
    return [prg_throughput(n, reps, name) for n in sizes for name in names]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m privit.launch.bench_prg")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--baseline", action="store_true",
                        help="also time the in-place implementation from before issue 11")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    print(f"cryptography {cryptography.__version__}")
    for row in run(sizes, args.reps, args.baseline):
        result = (f"{row['gb_per_s']:6.2f} GB/s" if "gb_per_s" in row
                  else f"unsupported here: {row['unsupported']}")
        print(f"{row['op']:<22} draw {row['draw_bytes']:>10,} B  {result}")


if __name__ == "__main__":
    main()
