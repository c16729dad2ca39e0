"""GeLU on fixed-point shares: an accurate approximation of the exact (erf) GeLU, and
MPCFormer's quadratic.

"poly" (also "erf"): GeLU(x) = x Phi(x) = ReLU(x) - g(|x|) with g(t) = t Phi(-t), an even
correction that decays fast (g(3.3) = 1.6e-3). g is approximated by t h(t) with h a cubic
on [0, a) (a = cfg.cutoff = 3.3) and by 0 beyond; the three comparisons that select the
pieces (x >= 0, x >= -a, x >= a) run in ONE batched call, and the sign and the piece
indicator multiply x exactly (unscaled 0/1 bits), as in SIGMA's GeLU (ReLU minus a
correction on a clipped range; SIGMA reads the correction from a lookup table, here it
is a polynomial). Max abs error of the approximation 2.1e-3 on the whole real line.

"quad": MPCFormer's 0.125 x^2 + 0.25 x + 0.5 (a cheap stand-in that needs distillation;
it is not close to GeLU: it is the model's activation, evaluated exactly).
"""
from __future__ import annotations

import torch

from privit.parties.session import Session
from privit.protocols import compare, ring, sharing
from privit.protocols.approx_config import GeluConfig, with_method
from privit.protocols.products import linear, mul_many, truncate_many

GELU_KINDS = ("poly", "erf", "quad")


def gelu(sess: Session, x: torch.Tensor, kind: str = "poly", cfg: GeluConfig | None = None, *,
         method: str | None = None) -> torch.Tensor:
    """Shares of GeLU(x) (fixed point), kind "poly"/"erf" (the erf-GeLU approximation) or
    "quad" (MPCFormer's quadratic). See `gelu_poly` and `gelu_quad` for costs."""
    if kind in ("poly", "erf"):
        return gelu_poly(sess, x, with_method(cfg or GeluConfig(), method))
    if kind == "quad":
        return gelu_quad(sess, x)
    raise ValueError(f"unknown GeLU kind {kind!r}; choose from {GELU_KINDS}")


def gelu_poly(sess: Session, x: torch.Tensor, cfg: GeluConfig) -> torch.Tensor:
    """Shares of ReLU(x) - [|x| < a] |x| h(|x|) ~ GeLU(x).

    Steps (a = cutoff, h(t) = c0 + c1 t + c2 t^2 + c3 t^3):
    1. ONE compare.drelu call on (x, x + a, x - a): bits b0, bp, bm. sigma = 2 b0 - 1 is
       the sign, ind = bp - bm = [|x| < a], kappa = ind sigma = 2 b0 - bp - bm.
    2. ONE product round: r = b0 x and it = kappa x (exact, the bits are unscaled; one
       broadcast product of the stacked (b0, kappa) with x) and y = x^2.
       Then t = |x| = 2 r - x and it = [|x| < a] |x|.
    3. ONE round: ty = t y = |x|^3.
    4. h = c0 + c1 t + c2 y + c3 ty (coefficients with f + coeff_bits bits, truncated);
       ONE round: it h; result r - it h.
    ROUNDS 4 on the fss path (3 + the comparison round), local truncation.
    BYTES per party (numel N, w = wire_itemsize(compare_bits) = 4 at 32 bits, H per
      message): 3 w N + H (fss), then 8 (3 N + N) + H, 16 N + H, 16 N + H:
      76 N + 4 H at 32-bit comparisons. OFFLINE (fss): 3 N (48 bits - 24) for the keys,
      + 8 (2 N) + 8 N + 8 N + 8 N for the products.
    Range: exact pieces for |x| < 2^(bits - 1 - f) - a (32 bits: 32764); beyond a the
    output is ReLU(x) itself (error g(|x|) < 1.6e-3). Error: 2.1e-3 + a few 2^-f.
    """
    f, kb = sess.frac_bits, cfg.coeff_bits
    a = round(cfg.cutoff * 2.0 ** f)
    stacked = torch.stack([x, sharing.add_public(sess, x, a), sharing.add_public(sess, x, -a)])
    with sess.scope("pieces"):
        b0, bp, bm = compare.drelu(sess, stacked, method=cfg.method, bits=cfg.compare_bits)
    kappa = 2 * b0 - bp - bm
    prods, y = mul_many(sess, [(torch.stack([b0, kappa]), x.unsqueeze(0)), (x, None)],
                        bits=[None, f], label="gelu")
    r, it = prods[0], prods[1]
    t = 2 * r - x
    (ty,) = mul_many(sess, [(t, y)], label="gelu")
    c0, c1, c2, c3 = cfg.coefficients
    h_raw = linear(sess, [(c1, t), (c2, y), (c3, ty)], c0, f + kb)
    (h,) = truncate_many(sess, [h_raw], f + kb)
    (corr,) = mul_many(sess, [(it, h)], label="gelu")
    return r - corr


def gelu_quad(sess: Session, x: torch.Tensor) -> torch.Tensor:
    """Shares of 0.125 x^2 + 0.25 x + 0.5 (MPCFormer's Quad), exact coefficients.

    Steps: 1. ONE square round, x^2 untruncated (2f bits). 2. x^2 + 2^(f+1) x + 2^(2f+2)
    at 2f + 3 fractional bits, truncated by f + 3 once.
    ROUNDS 1 (+1 with dealer truncation). BYTES per party H + 8 N. OFFLINE 8 N.
    """
    f = sess.frac_bits
    (sq,) = mul_many(sess, [(x, None)], bits=None, label="gelu_quad")
    total = sharing.add_public(sess, sq + ring.lshift(ring.as_ring(x), f + 1), ring.pow2(2 * f + 2))
    (out,) = truncate_many(sess, [total], f + 3)
    return out
