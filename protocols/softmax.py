"""Attention normalisers on fixed-point shares: softmax, MPCViT's ReLU-softmax and
ScaleAttn, MPCFormer's 2Quad.

Every normaliser divides a non-negative numerator by its row sum with
reciprocal.divide (one comparison round for the guess, then k + 1 product rounds), so
the row sum's reciprocal is never formed on its own: the guess multiplies the
numerators directly and the Goldschmidt factors refine both together.

Shapes: the normalised dimension is `dim` (softmax) or the last one; any leading dims
(batch, heads, query rows) are processed together, in the same messages.
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from privit.parties.session import Session
from privit.protocols import circa, compare, sharing
from privit.protocols.approx_config import (
    ReluSoftmaxConfig,
    SoftmaxConfig,
    TwoQuadConfig,
    with_method,
)
from privit.protocols.exp import exp
from privit.protocols.products import mul_many, truncate_many
from privit.protocols.reciprocal import divide

SCALE_MIN_SIGNIFICANT_BITS = 12


def softmax(sess: Session, x: torch.Tensor, dim: int = -1, cfg: SoftmaxConfig | None = None, *,
            method: str | None = None) -> torch.Tensor:
    """Shares of softmax(x) along `dim` (N = x.shape[dim]).

    Steps:
    1. m = compare.maximum(x) along dim: ceil(log2 N) rounds (fss: 1 per level).
    2. e = exp(x - m) (x - m <= 0 exactly: clamp at -16 only): 1 + 3 + 2 rounds.
    3. s = sum e in [1, N] (the maximum contributes e^0 = 1).
    4. e / s by reciprocal.divide over [2^-0.5, 2^(ceil(log2 N) + 0.5)): 1 + 1 + k rounds.
    ROUNDS (fss, local truncation, k = 2): ceil(log2 N) + 6 + 4; N = 197: 18.
    BYTES per party (M = numel, R = rows, K = 4 (ceil(log2 N) + 1) + 1 thresholds per row,
      H per message; comparisons at cfg.compare_bits = 32, whose ReLU gate opens 4 + 8 B):
      max: 12 (M - R) in ceil(log2 N) messages;  exp: 12 M + H (clamp), 48 M + 3 H
      (polynomial), 16 M + 2 H (squarings);  divide: 4 K R + H (thresholds at f +
      ceil(log2 N) + 3 <= 32 bits), 8 (M + 3 R) + H, 8 (M + 2 R) + H, 8 (M + R) + H.
      About 112 B per element; (3, 197, 197): 13.1 MB per party.
    OFFLINE (dealer): FSS keys (compare.py: 64 n - 16 B per ReLU gate, 48 n - 24 per
      DReLU at n bits) for M - R + M gates and K R DReLUs, plus 8 B per product element.
    Accuracy (defaults, f = 16): max abs error about 1e-4, documented bound 3e-4 (exp
    rounding amplified by the two squarings, and the reciprocal's 5.6e-5 relative error).
    Range: |x| < 2^(compare_bits - 2 - f) - 8 (16376 at 32 bits), so that every pairwise
    difference and x - max + 16 fit the comparisons (use compare_bits 64 otherwise).
    """
    cfg = with_method(cfg or SoftmaxConfig(), method)
    x = x.movedim(dim, -1)
    n = x.shape[-1]
    with sess.scope("max"):
        m = compare.maximum(sess, x, dim=-1, method=cfg.method,
                            bits=cfg.compare_bits).unsqueeze(-1)
    with sess.scope("exp"):
        e = exp(sess, x - m, replace(cfg.exp, clamp_high=False, method=cfg.method,
                                     compare_bits=cfg.compare_bits))
    rcfg = replace(cfg.reciprocal(n), compare_bits=sess.frac_bits + math.ceil(math.log2(max(n, 2))) + 3)
    with sess.scope("divide"):
        out = divide(sess, e, e.sum(-1, keepdim=True), rcfg, label="softmax_div")
    return out.movedim(-1, dim)


def relu_softmax(sess: Session, s: torch.Tensor, eps: float = 1e-5,
                 cfg: ReluSoftmaxConfig | None = None, *, method: str | None = None
                 ) -> torch.Tensor:
    """Shares of MPCViT's RSAttn: ReLU(S) / (sum_row ReLU(S) + eps), last dim.

    eps = 1e-5 is below one fixed-point step (2^-16 = 1.5e-5): it is added inside the
    division at 2f + L fractional bits (eps y0 is linear in the comparison bits), so it
    counts as in plaintext. A row whose scores are all <= 0 has ReLU row 0 and sum 0: the
    numerators are exactly 0 and so is the output row (never a reciprocal of 0).
    Steps: 1. r = compare.relu(S) (1 round, fss). 2. divide(r, sum r + eps) over
    [2^-16, 2^hi) (default hi = 14, L = 4): 1 + 1 + k rounds.
    ROUNDS (fss, local truncation, k = 2): 5. BYTES per party (M, R, K = 121 thresholds
    per row by default, H per message): relu 12 M + H (32-bit gate: 4 + 8 B); divide
    w K R + H with w = 8 (thresholds at 32 + ceil(log2 N) + 1 bits > 32), 8 (M + 3 R) + H,
    8 (M + 2 R) + H, 8 (M + R) + H: about 36 B per element + 8 K / N.
    Range: |S| < 2^(compare_bits - 1 - f) (32768 at 32 bits); row sums in [2^-16, 2^14).
    Out of range: a row sum >= 2^hi gives an all-zero row (see reciprocal.divide).
    """
    cfg = with_method(cfg or ReluSoftmaxConfig(), method)
    with sess.scope("relu"):
        r = compare.relu(sess, s, method=cfg.method, bits=cfg.compare_bits)
    return _normalise_rows(sess, r, cfg, eps)


def stochastic_relu_softmax(sess: Session, s: torch.Tensor, k: int, m: int, eps: float = 1e-5,
                            cfg: ReluSoftmaxConfig | None = None, *, method: str | None = None
                            ) -> torch.Tensor:
    """RSAttn with Circa's stochastic ReLU (circa.stochastic_relu, k low bits dropped, m
    magnitude bits) in place of the exact one, then the same division as relu_softmax.
    The faults are Circa's (PosZero: a positive score below 2^k units may become 0).
    ROUNDS and BYTES: circa.stochastic_relu's, then relu_softmax's division.
    """
    cfg = with_method(cfg or ReluSoftmaxConfig(), method)
    with sess.scope("relu"):
        r = circa.stochastic_relu(sess, s, k=k, m=m, method=cfg.method)
    return _normalise_rows(sess, r, cfg, eps)


def _normalise_rows(sess: Session, r: torch.Tensor, cfg: ReluSoftmaxConfig, eps: float) -> torch.Tensor:
    """r / (sum_row r + eps), the division of both RSAttn variants."""
    sum_bits = cfg.compare_bits + math.ceil(math.log2(max(r.shape[-1], 2))) + 1
    rcfg = replace(cfg.reciprocal, method=cfg.method, compare_bits=min(64, sum_bits))
    with sess.scope("divide"):
        return divide(sess, r, r.sum(-1, keepdim=True), rcfg, eps=eps, label="relu_softmax_div")


def scale_attention(sess: Session, s: torch.Tensor, n: int) -> torch.Tensor:
    """Shares of MPCViT's ScaleAttn S / N (N = number of keys including cls): a public
    scale, one truncation. S is multiplied by c = round(2^(f+t) / N) with t = max(0,
    bitlen(N) - f + 12), so c keeps >= 12 significant bits (relative error < 2^-12 of c,
    e.g. 1.2e-5 for N = 257), then truncated by f + t.
    ROUNDS 0 with local truncation (1 with dealer truncation), BYTES 0 (local).
    Accuracy: |S / N| 2^-12 + 2^-f. Magnitude before truncation |S / N| 2^(2f+t).
    """
    if n < 1:
        raise ValueError(f"ScaleAttn divides by the key count, got {n}")
    f = sess.frac_bits
    t = max(0, n.bit_length() - f + SCALE_MIN_SIGNIFICANT_BITS)
    c = round(2.0 ** (f + t) / n)
    (out,) = truncate_many(sess, [sharing.mul_public(s, c)], f + t)
    return out


def two_quad(sess: Session, s: torch.Tensor, c: float = 5.0, cfg: TwoQuadConfig | None = None, *,
             method: str | None = None) -> torch.Tensor:
    """Shares of MPCFormer's 2Quad: (S + c)^2 / sum_row (S + c)^2, last dim.

    Steps: 1. q = (S + c)^2 (one square, 1 round). 2. divide(q, sum q) over
    [2^-16, 2^hi) (default hi = 17, L = 7): 1 + 1 + k rounds.
    ROUNDS (fss, local truncation, k = 2): 5. BYTES per party: 8 M + H, then divide as in
    relu_softmax (K = 133 thresholds per row by default, 64-bit: the row sum is not
    bounded by a comparison).
    A row with every S = -c exactly gives 0 (numerators 0); a row sum >= 2^hi gives 0.
    """
    cfg = with_method(cfg or TwoQuadConfig(), method)
    shifted = sharing.add_public(sess, s, round(c * 2.0 ** sess.frac_bits))
    (q,) = mul_many(sess, [(shifted, None)], label="two_quad_square")
    rcfg = replace(cfg.reciprocal, method=cfg.method)
    with sess.scope("divide"):
        return divide(sess, q, q.sum(-1, keepdim=True), rcfg, label="two_quad_div")
