"""The owner's product kernels on ViT-Base's weight shapes: the general limb kernel
(`ring.ring_matmul_limbs`, what the owner used before) against the narrow one
(`ring.ring_matmul_narrow`, W in one limb, checked once ahead as the owner does).

`python -m privit.launch.bench_narrow [--reps 7] [--threads 1] [--bits 21] [--int64]`
prints one row per shape: min and median ms of each kernel, the kernels alternated within
each repetition (so that a burst of load hits both alike), after one untimed warm-up.
`--int64` adds torch's int64 kernel (seconds per product on CPUs without AVX-512).
Operands: a uniform over Z_2^64, W uniform in [-2^(bits-1), 2^(bits-1)]; every product is
checked equal to the general kernel's before timing.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from privit.protocols import ring

VIT_BASE_SHAPES = ((197, 768, 2304), (197, 768, 768), (197, 768, 3072), (197, 3072, 768))
"""(n, k, m) of qkv, proj, fc1 and fc2 at batch 1."""


def _time(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m privit.launch.bench_narrow")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bits", type=int, default=21)
    parser.add_argument("--int64", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    bound = 1 << (args.bits - 1)
    print(f"threads {args.threads}, w_bits {args.bits}, {args.reps} reps; ms min / median")
    for n, k, m in VIT_BASE_SHAPES:
        a = torch.randint(ring.INT64_MIN, ring.INT64_MAX, (n, k), generator=gen)
        w = torch.randint(-bound, bound + 1, (k, m), generator=gen)
        narrow = ring.narrow_weight(w, args.bits)
        kernels: dict[str, Callable[[], torch.Tensor]] = {
            "limbs": lambda: ring.ring_matmul_limbs(a, w),  # noqa: B023 (used in this pass)
            "narrow": lambda: ring.ring_matmul_narrow(a, narrow),  # noqa: B023
        }
        if args.int64:
            kernels["int64"] = lambda: torch.matmul(a, w)  # noqa: B023
        if not torch.equal(kernels["narrow"](), kernels["limbs"]()):
            raise SystemExit(f"narrow differs from limbs on {(n, k, m)}")
        seconds: dict[str, list[float]] = {name: [] for name in kernels}
        for _ in range(args.reps):
            for name, fn in kernels.items():
                seconds[name].append(_time(fn))
        dims = ring.matmul_dims(a.shape, w.shape)
        gemms = (round(ring.matmul_features("limbs", dims)[1] / dims.macs),
                 ring.narrow_plan(k, args.bits)[1])
        cells = [f"{name} {min(s) * 1e3:.1f} / {statistics.median(s) * 1e3:.1f}"
                 for name, s in seconds.items()]
        print(f"({n},{k})@({k},{m}) GEMMs {gemms[0]} -> {gemms[1]}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
