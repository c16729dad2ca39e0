"""Benchmark ops of the non-linear layer (protocols/exp, reciprocal, rsqrt, softmax, gelu,
layernorm).

Comparisons run on the FSS path (method "fss": 1 round per comparison step), the path
the round targets are stated for; the `*_auto` rows let compare.py's cost model choose
per call (on loopback it prefers the adder for large tensors: more rounds, less compute).
Inputs: seeded, from party 1 (the data owner); LayerNorm's weight and bias from party 0
(the model owner's secret shares).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from privit.launch.bench_op import BenchOp, Plain, Shares, default_check
from privit.parties.session import Session
from privit.protocols import exp, gelu, layernorm, reciprocal, rsqrt, softmax
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

SCORES = (3, 197, 197)
ELEMENTWISE = (197, 768)
LN_SHAPE = (197, 192)
Inputs = Callable[[torch.Generator], dict[str, tuple[torch.Tensor, int]]]


def _uniform(shape: tuple[int, ...], lo: float, hi: float) -> Inputs:
    def inputs(gen: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
        return {"x": (lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64), 1)}
    return inputs


def _log_uniform(shape: tuple[int, ...], lo_log2: float, hi_log2: float) -> Inputs:
    def inputs(gen: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
        e = lo_log2 + (hi_log2 - lo_log2) * torch.rand(shape, generator=gen, dtype=torch.float64)
        return {"x": (torch.exp2(e), 1)}
    return inputs


def _scores(std: float = 2.0) -> Inputs:
    def inputs(gen: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
        return {"x": (std * torch.randn(SCORES, generator=gen, dtype=torch.float64), 1)}
    return inputs


def _ln_inputs(gen: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
    """Rows with variances log-uniform in [1e-3, 1e3] and means N(0, 3^2)."""
    rows, d = LN_SHAPE
    var = 10.0 ** (-3 + 6 * torch.rand(rows, 1, generator=gen, dtype=torch.float64))
    x = torch.randn(LN_SHAPE, generator=gen, dtype=torch.float64) * var.sqrt()
    x = x + 3 * torch.randn(rows, 1, generator=gen, dtype=torch.float64)
    w = 1 + 0.2 * torch.randn(d, generator=gen, dtype=torch.float64)
    b = 0.1 * torch.randn(d, generator=gen, dtype=torch.float64)
    return {"x": (x, 1), "w": (w, 0), "b": (b, 0)}


def _ln_ref(p: Plain) -> torch.Tensor:
    return torch.nn.functional.layer_norm(p["x"], (p["x"].shape[-1],), p["w"], p["b"], 1e-5)


def ln_relative_error(result: torch.Tensor, reference: torch.Tensor, plain: Plain) -> dict[str, float]:
    """max |out - ref| / |w| over elements: the error of (x - mean) / sqrt(var + eps),
    i.e. relative to the row's standard deviation."""
    rel = ((result - reference) / plain["w"].abs()).abs().max()
    return {**default_check(result, reference, plain), "rel_error": float(rel)}


def _relu_softmax_ref(p: Plain) -> torch.Tensor:
    r = p["x"].clamp(min=0)
    return r / (r.sum(-1, keepdim=True) + 1e-5)


def _two_quad_ref(p: Plain) -> torch.Tensor:
    q = (p["x"] + 5) ** 2
    return q / q.sum(-1, keepdim=True)


def _x(op: Callable[[Session, torch.Tensor], torch.Tensor]) -> Callable[[Session, Shares, Any], torch.Tensor]:
    return lambda sess, s, _: op(sess, s["x"])


def relative_check(result: torch.Tensor, reference: torch.Tensor, plain: Plain) -> dict[str, float]:
    rel = ((result - reference) / reference.abs()).abs().max()
    return {**default_check(result, reference, plain), "rel_error": float(rel)}


FSS = "fss"
OPS = [
    BenchOp("exp", "197x768 on [-16,0]", "exponential of non-positive inputs",
            _uniform(ELEMENTWISE, -16.0, 0.0),
            _x(lambda s, x: exp.exp(s, x, ExpConfig(method=FSS))), lambda p: torch.exp(p["x"])),
    BenchOp("reciprocal", "591 on [1,256)", "reciprocal 1/x", _log_uniform((3 * 197,), 0.0, 8.0),
            _x(lambda s, x: reciprocal.reciprocal(s, x, ReciprocalConfig(method=FSS))),
            lambda p: 1 / p["x"], check=relative_check),
    BenchOp("rsqrt", "197 on [2^-8,2^12)", "inverse square root (for LayerNorm)",
            _log_uniform((197,), -8.0, 12.0),
            _x(lambda s, x: rsqrt.rsqrt(s, x, RsqrtConfig(method=FSS))),
            lambda p: p["x"].rsqrt(), check=relative_check),
    BenchOp("softmax", "3x197x197 N(0,4)", "softmax over the last dim (exp, sum, reciprocal)", _scores(),
            _x(lambda s, x: softmax.softmax(s, x, -1, SoftmaxConfig(method=FSS))),
            lambda p: torch.softmax(p["x"], -1)),
    BenchOp("softmax_auto", "3x197x197 N(0,4)", "softmax, comparison protocol picked by the cost model",
            _scores(),
            _x(lambda s, x: softmax.softmax(s, x, -1, SoftmaxConfig(method="auto"))),
            lambda p: torch.softmax(p["x"], -1)),
    BenchOp("relu_softmax", "3x197x197 N(0,4)", "MPCViT's ReLU-softmax: ReLU(x) / sum ReLU(x)", _scores(),
            _x(lambda s, x: softmax.relu_softmax(s, x, 1e-5, ReluSoftmaxConfig(method=FSS))),
            _relu_softmax_ref),
    BenchOp("two_quad", "3x197x197 N(0,4)", "2Quad softmax approximation (MPCFormer)", _scores(),
            _x(lambda s, x: softmax.two_quad(s, x, 5.0, TwoQuadConfig(method=FSS))), _two_quad_ref),
    BenchOp("scale_attention", "3x197x197 N(0,4) /197", "MPCViT's ScaleAttn: x / N (public scale)",
            _scores(),
            _x(lambda s, x: softmax.scale_attention(s, x, SCORES[-1])), lambda p: p["x"] / SCORES[-1]),
    BenchOp("gelu", "197x768 on [-8,8]", "GeLU, cheap polynomial approximation of erf-GeLU",
            _uniform(ELEMENTWISE, -8.0, 8.0),
            _x(lambda s, x: gelu.gelu(s, x, "poly", GeluConfig(method=FSS))),
            lambda p: torch.nn.functional.gelu(p["x"])),
    BenchOp("gelu_auto", "197x768 on [-8,8]", "GeLU (poly), comparison picked by the cost model",
            _uniform(ELEMENTWISE, -8.0, 8.0),
            _x(lambda s, x: gelu.gelu(s, x, "poly", GeluConfig(method="auto"))),
            lambda p: torch.nn.functional.gelu(p["x"])),
    BenchOp("gelu_erf", "197x768 on [-8,8]", "GeLU, precise erf approximation",
            _uniform(ELEMENTWISE, -8.0, 8.0),
            _x(lambda s, x: gelu.gelu(s, x, "erf", GeluConfig(method=FSS))),
            lambda p: torch.nn.functional.gelu(p["x"])),
    BenchOp("gelu_quad", "197x768 on [-8,8]", "quadratic GeLU approximation (MPCFormer's Quad)",
            _uniform(ELEMENTWISE, -8.0, 8.0),
            _x(lambda s, x: gelu.gelu(s, x, "quad")),
            lambda p: 0.125 * p["x"] ** 2 + 0.25 * p["x"] + 0.5),
    BenchOp("layernorm", "197x192, secret w,b", "LayerNorm with secret weight and bias", _ln_inputs,
            lambda s, sh, _: layernorm.layer_norm(s, sh["x"], sh["w"], sh["b"], 1e-5,
                                                  LayerNormConfig(method=FSS)),
            _ln_ref, check=ln_relative_error),
]
