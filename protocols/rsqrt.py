"""Inverse square root of positive shared values.

Initial guess y0 ~ 1/sqrt(x) from ONE batched comparison round against a geometric grid
(reciprocal.grid_bits / grid_select), then a polynomial correction in the relative
error of the guess: with e = 1 - x y0^2,

    1/sqrt(x) = y0 (1 - e)^(-1/2) ~ y0 P(e),   P ~ (1 - e)^(-1/2) on [-e_max, e_max]

(degree 2 by default; Newton's step y0 (3 - x y0^2)/2 is the degree-1 Taylor case). The
guess grid makes |e| <= 0.0864 (4 thresholds per octave), so P of degree 2 is within
9e-5 of the true factor, with no iteration.
LayerNorm (layernorm.py) fuses the same guess with its normalisation; this is the
standalone op.
"""
from __future__ import annotations

import torch

from privit.parties.session import Session
from privit.protocols import sharing
from privit.protocols.approx_config import RsqrtConfig, with_method
from privit.protocols.products import linear, mul_many, truncate_many
from privit.protocols.reciprocal import grid_bits, grid_select

RSQRT_COEFF_BITS = 2


def apply_correction(sess: Session, e: torch.Tensor, coefs: tuple[float, ...], label: str
                     ) -> tuple[torch.Tensor, int]:
    """P(e) = sum c_k e^k with f + RSQRT_COEFF_BITS fractional bits; returns (P, its
    fractional bits). The powers e^2..e^D take ceil(log2 D) rounds (1 for D = 2); the
    coefficients carry 2f + RSQRT_COEFF_BITS bits and the sum is truncated by f.
    ROUNDS ceil(log2 D) (+ 1 with dealer truncation). BYTES per party: H + 8 numel per
    square, H + 16 numel per other power."""
    f = sess.frac_bits
    powers = {1: e}
    degree = len(coefs) - 1
    while max(powers) < degree:
        top = max(powers)
        todo = list(range(top + 1, min(2 * top, degree) + 1))
        pairs = [(powers[top], None if i == 2 * top else powers[i - top]) for i in todo]
        for i, p in zip(todo, mul_many(sess, pairs, label=label), strict=True):
            powers[i] = p
    bits = f + RSQRT_COEFF_BITS
    p_raw = linear(sess, [(coefs[k], powers[k]) for k in range(1, degree + 1)], coefs[0], bits)
    (p,) = truncate_many(sess, [p_raw], f)
    return p, bits


def rsqrt(sess: Session, x: torch.Tensor, cfg: RsqrtConfig | None = None, *,
          method: str | None = None) -> torch.Tensor:
    """Shares of 1 / sqrt(x), elementwise, for x in [2^lo, 2^hi) (default [2^-8, 2^12)).

    Steps (L = scale_bits):
    1. grid_bits(x): ONE comparison round on K = (hi - lo) per_octave + 1 thresholds.
    2. y0 = grid guess with f + L bits (y0^2 = 2 / (tau (1 + rho)) on [tau, rho tau)).
    3. ONE round: u = x y0 (truncated by f: f + L bits). 4. ONE round: e = 1 - u y0
       (truncated by f + 2L: f bits). Before truncation |x y0| 2^(2f+L) = sqrt(x)
       2^(2f+L): 2^38 at x = 2^12, L = 0 (local truncation fails with probability
       |value| / 2^64 per element).
    5. ceil(log2 D) rounds: powers of e (1 for D = 2). 6. ONE round: y0 P(e).
    ROUNDS (fss, local truncation, D = 2): 5. BYTES per party (numel N, w =
      wire_itemsize(compare bits)): K N w + H; 3 (H + 16 N) + (H + 8 N).
    Out of range: below 2^lo the first guess is used and e grows towards 1 (P(1) =
    c0 + c1 + c2 ~ 1.9 instead of infinity: an underestimate, never a sign error); above
    2^hi the grid continues one interval, beyond it e < -e_max and the error grows
    smoothly (P > 0 everywhere: no sign change): about +24% at 2^(hi+1), x3.4 at
    2^(hi+2). Accuracy inside, relative to 1/sqrt of
    the fixed-point input: 1e-4 from P, plus 2^-f / sqrt(x) from rounding u ~ sqrt(x),
    plus a few 2^-f absolute.
    """
    cfg = with_method(cfg or RsqrtConfig(), method)
    f, lb = sess.frac_bits, cfg.scale_bits
    grid = cfg.grid()
    bits = 64 if cfg.compare_bits is None else cfg.compare_bits
    with sess.scope("guess"):
        ge = grid_bits(sess, x, grid, f, method=cfg.method, bits=bits)
    y0 = grid_select(sess, ge, grid.guesses, f + lb)
    (u,) = mul_many(sess, [(x, y0)], bits=f, label="rsqrt")
    (w,) = mul_many(sess, [(u, y0)], bits=f + 2 * lb, label="rsqrt")
    e = sharing.add_public(sess, -w, 1 << f)
    p_raw, p_bits = apply_correction(sess, e, cfg.correction(), "rsqrt")
    (out,) = mul_many(sess, [(y0, p_raw)], bits=lb + p_bits, label="rsqrt")
    return out


def rsqrt_rounds(cfg: RsqrtConfig) -> int:
    """Online rounds of `rsqrt` on the fss path with local truncation."""
    degree = cfg.degree
    powers = 0
    top = 1
    while top < degree:
        top *= 2
        powers += 1
    return 1 + 2 + powers + 1

