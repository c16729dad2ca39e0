"""LayerNorm over the last dimension on fixed-point shares, with public or secret affine.

    LN(x) = (x - mean) / sqrt(var + eps) * weight + bias      (biased var, as torch)

Fixed point makes the textbook order lossy: a variance of 1e-3 is 65 steps of 2^-16, the
mean (a division by d) is inexact, and 1/sqrt(var) spans 2^5..2^-5. So (d = row width):
- centre exactly in integers: d x_j - sum x is d (x_j - mean) with no division;
  z = (d x - sum x) / 2^t keeps kappa = d / 2^t in (4, 8] (t = ceil(log2 d) - 3), so z
  carries 2-3 more bits than x - mean would;
- sum z^2 untruncated (2f fractional bits): Q = d kappa^2 (var + eps), exact;
- guess Y ~ sqrt(d / Q) from ONE comparison round on Q (thresholds 4 per octave, as
  reciprocal.grid_bits), and normalise z with it: zn = z Y has unit variance up to the
  guess error, so everything after is well scaled (|zn| <= sqrt(d));
- measure the residual e = 1 - mean(zn^2) from the normalised values themselves and
  correct with P(e) ~ (1 - e)^(-1/2) (degree 2): any rounding of Y cancels, because
  the correction is computed from the same zn that it scales.

Secret weight (the owner's shares): w multiplies z in the first product round (z w,
broadcast over rows) and is normalised alongside z, so it costs no extra round.
"""
from __future__ import annotations

import math

import torch

from privit.parties.session import Session
from privit.protocols import ring, sharing
from privit.protocols.approx_config import (
    LayerNormConfig,
    inv_sqrt_correction,
    rsqrt_grid,
    with_method,
)
from privit.protocols.products import mul_many, truncate_many
from privit.protocols.reciprocal import grid_bits, grid_select
from privit.protocols.rsqrt import apply_correction

OVERFLOW_BITS = 61


def centring_shift(d: int, a: int, f: int, cfg: LayerNormConfig) -> int:
    """t of step 0: kappa = d / 2^t in (2^(c-1), 2^c] with c = cfg.center_bits, or fewer
    bits where d kappa^2 var_hi 2^2f would reach 2^OVERFLOW_BITS (more fractional bits,
    e.g. --frac-bits 17-18: each bit of kappa given up buys 2 bits of headroom, and z
    still carries c - 1 more bits than x - mean). Refuses what no kappa > 1/2 fits."""
    for c in range(cfg.center_bits, -1, -1):
        t = max(0, a - c)
        kappa = d / 2 ** t
        if math.log2(d * kappa * kappa) + cfg.var_hi_log2 + 2 * f < OVERFLOW_BITS:
            return t
    raise ValueError(f"LayerNorm of width {d}: variances up to 2^{cfg.var_hi_log2} overflow "
                     f"the ring at {f} fractional bits (d var 2^2f >= 2^{OVERFLOW_BITS}); "
                     f"lower var_hi_log2 or the fractional bits")


def _is_secret(t: torch.Tensor | None) -> bool:
    return t is not None and t.dtype == torch.int64


def layer_norm(sess: Session, x: torch.Tensor, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5,
               cfg: LayerNormConfig | None = None, *, method: str | None = None
               ) -> torch.Tensor:
    """Shares of LayerNorm(x) over the last dim (d = x.shape[-1]).

    weight, bias: None (no affine), a float tensor (public, encoded here) or an int64
    tensor (secret fixed-point shares, e.g. the model owner's, shared from party 0).
    Steps (f = frac_bits, kappa = d / 2^t, a = ceil(log2 d)):
    0. z = (d x - sum x) / 2^t (local; a truncation by t).
    1. ONE round: z^2 untruncated, and z w (truncated) for a secret weight.
       Q = sum z^2 + d kappa^2 eps (2f fractional bits).
    2. ONE comparison round: [Q >= tau_i] for tau on d kappa^2 [2^lo, 2^hi], 4 per
       octave; Y = grid guess (f bits) with Y^2 = 2 d / (tau (1 + rho)).
    3. ONE round: zn = z Y (and zwn = (z w) Y).
    4. ONE round: sum zn^2 untruncated; e~ = (d 2^(2f) - sum zn^2 - d kappa^2 eps Y^2)
       / 2^(f + a) = e (d / 2^a) with e = 1 - mean(zn^2) - kappa^2 eps Y^2 (the eps term
       is linear in the comparison bits: Y takes one grid value per interval).
    5. ONE round: e~^2 (degree 2); P = c0 + c1 e + c2 e^2 at f + 2 bits.
    6. ONE round: zn P (or zwn P); public weight: times w (local); plus bias.
    ROUNDS 6 (fss, local truncation), public or secret weight.
    BYTES per party (M = numel, R = rows, K thresholds per row (113 by default),
      H per message): 8 M (+ 8 (M + d) secret weight) + H; 8 K R + H (64-bit fss
      comparisons); 8 (M + R) (+ 8 (M + R)) + H; 8 M + H; 8 R + H; 8 (M + R) + H.
    Range: row variances var + eps in [2^lo, 2^hi) (default [6.1e-5, 1.6e4]) with relative
      error <= 1e-3 (measured: tests/test_gelu_layernorm.py, docs/accuracy.md). Below
      2^lo the output is scaled down by P(e) sqrt(1 - e) < 1 (e -> 1: a constant row
      gives exactly the bias); above 2^hi the error grows smoothly (P > 0: no sign flip)
      until d kappa^2 var 2^(2f) reaches 2^61 (var ~ 3e4 for d = 256), where the sum of
      squares wraps. Where var_hi would reach it (d = 256 at f >= 17), kappa is halved
      until it fits (centring_shift); what fits no kappa is refused (ValueError).
    """
    cfg = with_method(cfg or LayerNormConfig(), method)
    f = sess.frac_bits
    d = int(x.shape[-1])
    a = max(0, math.ceil(math.log2(d)))
    t = centring_shift(d, a, f, cfg)
    kappa = d / 2 ** t
    q_scale = d * kappa * kappa
    secret_w = _is_secret(weight)
    total = x.sum(-1, keepdim=True)
    (z,) = truncate_many(sess, [x * d - total], t or None)
    pairs: list[tuple[torch.Tensor, torch.Tensor | None]] = [(z, None)]
    if secret_w:
        assert weight is not None
        pairs.append((z, weight))
    first = mul_many(sess, pairs, bits=[None, f][: len(pairs)], label="layer_norm")
    q = sharing.add_public(sess, first[0].sum(-1, keepdim=True),
                           round(q_scale * eps * 2.0 ** (2 * f)))
    lo = math.log2(q_scale) + cfg.var_lo_log2
    grid = rsqrt_grid(lo, lo + cfg.var_hi_log2 - cfg.var_lo_log2, cfg.per_octave, float(d))
    with sess.scope("guess"):
        ge = grid_bits(sess, q, grid, 2 * f, method=cfg.method, bits=64)
    y = grid_select(sess, ge, grid.guesses, f)
    # eps's share of mean(zn^2) + eps': d kappa^2 eps Y^2 / d, linear in the bits (Y takes
    # one grid value per interval), with Y's encoded values so that it matches zn = z Y.
    y_enc = [round(g * 2.0 ** f) / 2.0 ** f for g in grid.guesses]
    eps_y2 = grid_select(sess, ge, tuple(q_scale * eps * v * v for v in y_enc), 2 * f)
    scaled = mul_many(sess, [(z, y)] + ([(first[1], y)] if secret_w else []), label="layer_norm")
    (sq,) = mul_many(sess, [(scaled[0], None)], bits=None, label="layer_norm")
    e_raw = sharing.add_public(sess, -sq.sum(-1, keepdim=True) - eps_y2, d * ring.pow2(2 * f))
    (e,) = truncate_many(sess, [e_raw], f + a)
    lam = d / 2 ** a
    base = inv_sqrt_correction(cfg.correction_range(), cfg.degree)
    coefs = tuple(c / lam ** k for k, c in enumerate(base))
    p_raw, p_bits = apply_correction(sess, e, coefs, "layer_norm")
    (out,) = mul_many(sess, [(scaled[-1], p_raw)], bits=p_bits, label="layer_norm")
    if weight is not None and not secret_w:
        w_int = ring.encode(weight.to(torch.float64), f)
        (out,) = truncate_many(sess, [out * w_int], f)
    if bias is not None:
        if _is_secret(bias):
            out = out + bias
        else:
            out = sharing.add_public(sess, out, ring.encode(bias.to(torch.float64), f))
    return out
