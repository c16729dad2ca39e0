"""`privit calibrate`: which exact ring-matmul kernel this CPU runs faster, and why.

Shows the calibration that `ring_matmul(method="auto")` uses for a thread count (measured
now if this CPU, torch version and thread count have none cached yet; see
protocols/matmul_calibration.py): its key, its cache file, each kernel's fitted cost model,
the model against the calibration's own timings, and the choice for the ViT products.
`--compare` also times both kernels on those products, to check the model's choice.

Registered by launch/cli.py (``KERNEL_COMMANDS``); torch is imported inside the command.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import click

VIT_PRODUCTS: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("vit_7_4_32 qkv", (65, 256), (256, 768)),
    ("vit_7_4_32 fc2", (65, 512), (512, 256)),
    ("vit_7_4_32 scores", (4, 65, 64), (4, 64, 65)),
    ("vit_9_12_64 scores", (12, 257, 16), (12, 16, 257)),
    ("vit_9_12_64 attn@v", (12, 257, 257), (12, 257, 16)),
    ("bench matmul", (197, 192), (192, 768)),
    ("ViT-Base attn@v", (12, 197, 197), (12, 197, 64)),
    ("ViT-Base fc1", (197, 768), (768, 3072)),
    ("ViT-Base fc2", (197, 3072), (3072, 768)),
)
"""Products of the models privit runs, and of ViT-Base (dim 768, 12 heads, MLP 3072)."""


def _shape(sa: tuple[int, ...], sb: tuple[int, ...]) -> str:
    return f"{'x'.join(map(str, sa))} @ {'x'.join(map(str, sb))}"


def _best_of(reps: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


@click.command("calibrate")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch threads to calibrate for (role processes run with 1: the "
                   "coordinator sets OMP_NUM_THREADS=1)")
@click.option("--remeasure", is_flag=True, help="measure again and replace the cached entry")
@click.option("--compare", is_flag=True,
              help="also time both kernels on the listed products (ViT-Base's int64 "
                   "products take seconds each)")
@click.option("--reps", type=click.IntRange(min=1), default=2, show_default=True,
              help="timed runs per kernel and product with --compare (best kept)")
def calibrate_command(threads: int, remeasure: bool, compare: bool, reps: int) -> None:
    """Show (measuring if needed) which exact ring-matmul kernel is faster on this CPU."""
    import torch  # here: `privit --help` must not wait for torch

    from privit.launch.roles import keep_freed_memory
    from privit.protocols import ring

    keep_freed_memory()  # as every role process does, so allocations cost what they cost there
    torch.set_num_threads(threads)
    cal = ring.MATMUL_CALIBRATOR.calibration(threads, remeasure=remeasure)
    key = cal.key
    how = "measured now" if cal.source == "measured" else "read from"
    click.echo(f"CPU {key.cpu}, torch {key.torch}, {key.threads} thread(s)")
    click.echo(f"calibration {how} {ring.MATMUL_CALIBRATOR.cache_path(threads)} "
               f"(its measurement took {cal.seconds:.2f} s)")
    for method, coef in cal.coefficients.items():
        terms = " + ".join(f"{c * 1e6:.1f} us/{name}" if name == "call" else f"{c * 1e9:.3g} ns/{name}"
                           for c, name in zip(coef, ring.MATMUL_FEATURE_NAMES[method], strict=True))
        click.echo(f"  {method:<6} {terms}")
    click.echo("calibration timings, ms (model / measured):")
    for sample in cal.samples:
        model = cal.predict(sample.method, ring.matmul_features(sample.method, sample.dims))
        click.echo(f"  {sample.method:<6} {'x'.join(map(str, sample.dims)):<16}"
                   f"{model * 1e3:>9.3f} /{sample.seconds * 1e3:>9.3f}")
    forced = ring.forced_matmul_method()
    if forced:
        click.echo(f"{ring.MATMUL_ENV}={forced} forces every `auto` product to {forced}")
    width = 20 if compare else 10
    header = f"{'product':<20}{'shape':<28}{'int64 ms':>{width}}{'limbs ms':>{width}}  auto"
    click.echo("ViT products, ms: model" + (" / measured" if compare else ""))
    click.echo(header)
    gen = torch.Generator().manual_seed(0)
    for name, sa, sb in VIT_PRODUCTS:
        dims = ring.matmul_dims(sa, sb)
        cells = []
        for method in ("int64", "limbs"):
            cell = f"{cal.predict(method, ring.matmul_features(method, dims)) * 1e3:.2f}"
            if compare:
                a = torch.randint(ring.INT64_MIN, ring.INT64_MAX, sa, generator=gen, dtype=torch.int64)
                b = torch.randint(ring.INT64_MIN, ring.INT64_MAX, sb, generator=gen, dtype=torch.int64)
                measured = _best_of(reps, partial(ring.ring_matmul, a, b, method))
                cell += f" / {measured * 1e3:.2f}"
            cells.append(cell)
        choice = ring.choose_matmul_method(sa, sb, threads, cal)
        click.echo(f"{name:<20}{_shape(sa, sb):<28}{cells[0]:>{width}}{cells[1]:>{width}}  {choice}")


KERNEL_COMMANDS = (calibrate_command,)
"""The commands of this module, registered by launch/cli.py."""
