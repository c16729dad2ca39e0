"""Throughput of the AES-128-CTR PRG (parties/prg.py), the dealer's and parties' hot path.

`python -m privit.launch.bench_prg [--sizes 4096,1048576,16777216] [--reps 5]` prints one row
per draw size: bytes per draw and GB/s (best of `reps` timed passes, each drawing about
64 MiB, a fresh `Prg` per draw as the dealer makes one per request). `privit bench` adds
these rows beside the transport rows.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from privit.parties.prg import Prg

DEFAULT_SIZES = (4096, 1 << 20, 1 << 24)
_PASS_BYTES = 1 << 26


def prg_throughput(nbytes: int, reps: int = 5) -> dict[str, Any]:
    """GB/s of `Prg(seed, stream).bytes(nbytes)`, a fresh generator per draw."""
    draws = max(1, _PASS_BYTES // nbytes)
    seed = bytes(range(16))
    best = 0.0
    for _ in range(reps):
        start = time.perf_counter()
        for stream in range(draws):
            Prg(seed, stream).bytes(nbytes)
        best = max(best, draws * nbytes / (time.perf_counter() - start) / 1e9)
    return {"op": "prg", "draw_bytes": nbytes, "gb_per_s": best}


def run(sizes: tuple[int, ...] = DEFAULT_SIZES, reps: int = 5) -> list[dict[str, Any]]:
    return [prg_throughput(n, reps) for n in sizes]


def main(argv: list[str] | None = None) -> None:
    import cryptography

    parser = argparse.ArgumentParser(prog="python -m privit.launch.bench_prg")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    print(f"cryptography {cryptography.__version__}")
    for row in run(sizes, args.reps):
        print(f"prg draw {row['draw_bytes']:>10,} B  {row['gb_per_s']:6.2f} GB/s")


if __name__ == "__main__":
    main()
