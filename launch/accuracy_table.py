"""Accuracy of the non-linear protocols against float64, as a markdown table.

The repository's copy is docs/accuracy.md, regenerated with
`privit accuracy --out docs/accuracy.md` (the default --out is accuracy.md in the current
directory).

`accuracy_rows()` runs every op over its documented input range through the in-memory
harness (parties/inmemory_run.py: both parties and the dealer as threads of this process,
with the same framing, offline phase and Session as real runs; accuracy does not depend
on the transport) and compares the opened result with torch float64 computed on the SAME
fixed-point inputs (multiples of 2^-f), so the numbers are the protocols' own error, not
the input's rounding. Comparisons run on the FSS path.

    python -m privit.launch.accuracy_table [--out accuracy.md] [--seed 0]

Errors: max abs = max |out - ref|; max rel = max |out - ref| / |ref| over the elements
with |ref| >= 2^-4 (below, one fixed-point step 2^-16 alone is a relative error above
2^-12; relative error is meaningless where the reference is ~0); for
LayerNorm the output is (x - mean) / sigma (no affine), so its abs error IS the error
relative to the row's standard deviation.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from privit.parties.config import RunConfig
from privit.parties.inmemory_run import run_in_memory
from privit.parties.session import Session
from privit.protocols import exp, gelu, layernorm, reciprocal, ring, rsqrt, sharing, softmax
from privit.protocols.approx_config import (
    ExpConfig,
    GeluConfig,
    LayerNormConfig,
    ReciprocalConfig,
    ReluSoftmaxConfig,
    RsqrtConfig,
    SoftmaxConfig,
    TwoQuadConfig,
)
from privit.protocols.registry import CORRELATIONS

FRAC_BITS = 16
REL_FLOOR = 2.0 ** -4
FSS = "fss"
DEFAULT_OUT = Path("accuracy.md")  # in the current directory, as every privit output
Op = Callable[[Session, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Case:
    """One table row: an op on inputs drawn over its documented range."""

    name: str
    inputs: str
    make: Callable[[torch.Generator], torch.Tensor]
    op: Op
    reference: Callable[[torch.Tensor], torch.Tensor]
    note: str = ""


def _fixed(x: torch.Tensor) -> torch.Tensor:
    return ring.decode(ring.encode(x, FRAC_BITS), FRAC_BITS)


def _log2_uniform(lo: float, hi: float, n: int) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda gen: torch.exp2(lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64))


def _scores(shape: tuple[int, ...], std: float) -> Callable[[torch.Generator], torch.Tensor]:
    return lambda gen: std * torch.randn(shape, generator=gen, dtype=torch.float64)


def _relu_scores(gen: torch.Generator) -> torch.Tensor:
    s = 2 * torch.randn(3, 64, 197, generator=gen, dtype=torch.float64)
    s[0, :4] = -s[0, :4].abs()  # all-non-positive rows: the output row must be 0
    return s


def _ln_rows(gen: torch.Generator) -> torch.Tensor:
    var = torch.logspace(-3, 3, 64, dtype=torch.float64).unsqueeze(-1)
    x = torch.randn(64, 192, generator=gen, dtype=torch.float64)
    x = (x - x.mean(-1, keepdim=True)) / x.std(-1, unbiased=False, keepdim=True)
    return x * var.sqrt() + 3 * torch.randn(64, 1, generator=gen, dtype=torch.float64)


def _relu_softmax_ref(s: torch.Tensor) -> torch.Tensor:
    r = s.clamp(min=0)
    return r / (r.sum(-1, keepdim=True) + 1e-5)


def _two_quad_ref(s: torch.Tensor) -> torch.Tensor:
    q = (s + 5) ** 2
    return q / q.sum(-1, keepdim=True)


CASES = [
    Case("exp", "[-16, 0], 20001 points", lambda g: torch.linspace(-16, 0, 20001, dtype=torch.float64),
         lambda s, x: exp.exp(s, x, ExpConfig(method=FSS)), torch.exp),
    Case("reciprocal", "[1, 256) log-uniform, 4096", _log2_uniform(0, 8, 4096),
         lambda s, x: reciprocal.reciprocal(s, x, ReciprocalConfig(method=FSS)), lambda x: 1 / x),
    Case("reciprocal (ReLU-softmax range)", "[2^-10, 2^14) log-uniform, 4096",
         _log2_uniform(-10, 14, 4096),
         lambda s, x: reciprocal.reciprocal(s, x, ReluSoftmaxConfig().reciprocal, method=FSS),
         lambda x: 1 / x,
         "the config relu_softmax uses (scale_bits 4); abs error at outputs up to 1024"),
    Case("rsqrt", "[2^-8, 2^12) log-uniform, 4096", _log2_uniform(-8, 12, 4096),
         lambda s, x: rsqrt.rsqrt(s, x, RsqrtConfig(method=FSS)), torch.rsqrt),
    Case("softmax", "(3, 64, 197) N(0, 2^2)", _scores((3, 64, 197), 2.0),
         lambda s, x: softmax.softmax(s, x, -1, SoftmaxConfig(method=FSS)),
         lambda x: torch.softmax(x, -1)),
    Case("softmax", "(3, 64, 197) N(0, 8^2)", _scores((3, 64, 197), 8.0),
         lambda s, x: softmax.softmax(s, x, -1, SoftmaxConfig(method=FSS)),
         lambda x: torch.softmax(x, -1), "wide spread: many entries clamped at -16"),
    Case("relu_softmax", "(3, 64, 197) N(0, 2^2), 4 rows <= 0", _relu_scores,
         lambda s, x: softmax.relu_softmax(s, x, 1e-5, ReluSoftmaxConfig(method=FSS)),
         _relu_softmax_ref, "all-non-positive rows: exactly 0 (tests/test_softmax.py)"),
    Case("two_quad", "(3, 64, 197) N(0, 2^2)", _scores((3, 64, 197), 2.0),
         lambda s, x: softmax.two_quad(s, x, 5.0, TwoQuadConfig(method=FSS)), _two_quad_ref),
    Case("scale_attention", "(3, 64, 197) N(0, 2^2), N = 197", _scores((3, 64, 197), 2.0),
         lambda s, x: softmax.scale_attention(s, x, 197), lambda x: x / 197),
    Case("gelu (poly)", "[-8, 8], 20001 points", lambda g: torch.linspace(-8, 8, 20001, dtype=torch.float64),
         lambda s, x: gelu.gelu(s, x, "poly", GeluConfig(method=FSS)), torch.nn.functional.gelu,
         "vs the exact erf GeLU"),
    Case("gelu (erf)", "[-8, 8], 20001 points", lambda g: torch.linspace(-8, 8, 20001, dtype=torch.float64),
         lambda s, x: gelu.gelu(s, x, "erf", GeluConfig(method=FSS)), torch.nn.functional.gelu,
         "vs the exact erf GeLU"),
    Case("gelu (quad)", "[-8, 8], 20001 points", lambda g: torch.linspace(-8, 8, 20001, dtype=torch.float64),
         lambda s, x: gelu.gelu(s, x, "quad"), lambda x: 0.125 * x**2 + 0.25 * x + 0.5,
         "vs its own formula 0.125x^2 + 0.25x + 0.5 (not GeLU)"),
    Case("layer_norm", "(64, 192), row variances 1e-3 .. 1e3", _ln_rows,
         lambda s, x: layernorm.layer_norm(s, x, None, None, 1e-5, LayerNormConfig(method=FSS)),
         lambda x: torch.nn.functional.layer_norm(x, (x.shape[-1],), None, None, 1e-5),
         "abs error = error relative to the row's std"),
]


def _run_case(case: Case, gen: torch.Generator) -> dict[str, Any]:
    x = _fixed(case.make(gen))
    cfg = RunConfig(n_parties=2, frac_bits=FRAC_BITS, truncation="local", timeout_s=300)

    def job(sess: Session) -> torch.Tensor:
        mine = ring.encode(x, FRAC_BITS) if sess.party_id == 1 and not sess.is_tracing else None
        return case.op(sess, sharing.share_input(sess, 1, mine, tuple(x.shape)))

    results = run_in_memory(cfg, job, CORRELATIONS)
    out = ring.decode(sharing.reconstruct([r for r, _ in results]), FRAC_BITS)
    ref = case.reference(x)
    err = (out - ref).abs()
    big = ref.abs() >= REL_FLOOR
    rel = float((err[big] / ref.abs()[big]).max()) if bool(big.any()) else math.nan
    return {"op": case.name, "inputs": case.inputs, "max_abs_error": float(err.max()),
            "max_rel_error": rel, "rounds": results[0][1]["phases"]["online"]["rounds"],
            "note": case.note}


def accuracy_rows(seed: int = 0, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every case (or those named) and return one row per case."""
    rows = []
    for i, case in enumerate(CASES):
        if names and case.name.split(" ")[0] not in names:
            continue
        rows.append(_run_case(case, torch.Generator().manual_seed(seed * 100 + i)))
    return rows


def to_markdown(rows: list[dict[str, Any]], seed: int) -> str:
    lines = [
        "# Accuracy of the non-linear protocols",
        "",
        "Generated by `privit accuracy --out docs/accuracy.md` (launch/accuracy_table.py):",
        "every op over its documented input range, run by the in-memory harness (2 parties +",
        "dealer as threads, the same protocol code, framing and dealer plan as real",
        f"processes), f = {FRAC_BITS}, local truncation, comparisons on the FSS path, seed {seed}.",
        "The reference is torch float64 on the same fixed-point inputs (multiples of 2^-16),",
        "so the errors are the protocols' own. max rel is taken over |ref| >= 2^-4 (below",
        "that, one fixed-point step alone is a relative error above 2^-12).",
        "Shares are random, so the truncations' rounding differs from run to run: the errors",
        "vary by about 20 % between runs. Algorithms, ranges and behaviour outside them:",
        "docs/nonlinear.md.",
        "",
        "| op | inputs | max abs error | max rel error | rounds | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        rel = "-" if math.isnan(r["max_rel_error"]) else f"{r['max_rel_error']:.2e}"
        lines.append(f"| {r['op']} | {r['inputs']} | {r['max_abs_error']:.2e} | {rel} | "
                     f"{r['rounds']} | {r['note']} |")
    return "\n".join(lines) + "\n"


def write_accuracy_table(path: Path = DEFAULT_OUT, seed: int = 0) -> list[dict[str, Any]]:
    """Compute every row and write the markdown table to `path`; returns the rows."""
    rows = accuracy_rows(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_markdown(rows, seed))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = write_accuracy_table(args.out, args.seed)
    for r in rows:
        print(f"{r['op']:<34}{r['max_abs_error']:>11.2e}{r['max_rel_error']:>11.2e}{r['rounds']:>5}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
