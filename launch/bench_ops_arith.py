"""Benchmark ops of the arithmetic layer (protocols/sharing, beaver, truncation)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from privit.launch.bench_op import BenchOp, Plain, Shares
from privit.parties.session import Session
from privit.protocols import beaver, sharing, truncation

ELEMENTWISE = (197, 768)
MATMUL = ((197, 192), (192, 768))
BMM = ((4, 65, 64), (4, 64, 65))


def _normal(gen: torch.Generator, shape: tuple[int, ...], std: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64) * std


def _open_run(sess: Session, s: Shares, _: Any) -> torch.Tensor:
    return sharing.share_public(sess, sharing.open_all(sess, s["x"], label="open"))


def _trunc(method: str) -> Callable[[Session, Shares, Any], torch.Tensor]:
    def run(sess: Session, s: Shares, _: Any) -> torch.Tensor:
        scaled = sharing.mul_public(s["x"], 1 << sess.frac_bits)  # x with 2f fractional bits
        if method == "exact":
            return truncation.truncate_exact_many(sess, [scaled], [sess.frac_bits])[0]
        fn = truncation.truncate_local if method == "local" else truncation.truncate_dealer
        return fn(sess, scaled, sess.frac_bits)
    return run


def _fixed_setup(sess: Session, s: Shares) -> beaver.FixedOperand:
    return beaver.prepare_fixed_matmul(sess, s["w"])


def _elementwise(gen: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
    return {"x": (_normal(gen, ELEMENTWISE), 1), "y": (_normal(gen, ELEMENTWISE), 0)}


def _matmul_inputs(gen: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
    (n, k), (_, m) = MATMUL
    return {"x": (_normal(gen, (n, k)), 1), "w": (_normal(gen, (k, m), k ** -0.5), 0)}


def _bmm_inputs(gen: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
    return {"x": (_normal(gen, BMM[0]), 1), "w": (_normal(gen, BMM[1], 0.125), 0)}


def _x_only(gen: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
    return {"x": (_normal(gen, ELEMENTWISE, 10.0), 1)}


def _x(p: Plain) -> torch.Tensor:
    return p["x"]


OPS = [
    BenchOp("open", "197x768", "open a secret-shared tensor (one round)", _x_only, _open_run, _x),
    BenchOp("mul", "197x768", "Beaver multiplication of two secret tensors", _elementwise,
            lambda sess, s, _: beaver.beaver_mul(sess, s["x"], s["y"]), lambda p: p["x"] * p["y"]),
    BenchOp("square", "197x768", "square of a secret tensor (Beaver square pair)", _x_only,
            lambda sess, s, _: beaver.beaver_square(sess, s["x"]), lambda p: p["x"] ** 2),
    BenchOp("matmul", "197x192 @ 192x768", "secret x secret matrix product (Beaver matrix triple)",
            _matmul_inputs,
            lambda sess, s, _: beaver.beaver_matmul(sess, s["x"], s["w"]), lambda p: p["x"] @ p["w"]),
    BenchOp("fixed_matmul", "197x192 @ W 192x768", "product with a fixed weight (mask opened once)",
            _matmul_inputs,
            lambda sess, s, w: beaver.fixed_matmul(sess, s["x"], w), lambda p: p["x"] @ p["w"],
            setup=_fixed_setup),
    BenchOp("bmm", "4x65x64 @ 4x64x65", "batched secret x secret matrix product (attention sizes)",
            _bmm_inputs,
            lambda sess, s, _: beaver.beaver_matmul(sess, s["x"], s["w"]), lambda p: p["x"] @ p["w"]),
    BenchOp("trunc_local", "197x768", "fixed-point truncation, local (SecureML, 2 parties)",
            _x_only, _trunc("local"), _x),
    BenchOp("trunc_exact", "197x768", "fixed-point truncation, local shift + wrap bit (2 parties)",
            _x_only, _trunc("exact"), _x),
    BenchOp("trunc_dealer", "197x768", "fixed-point truncation with a dealer pair",
            _x_only, _trunc("dealer"), _x),
]

