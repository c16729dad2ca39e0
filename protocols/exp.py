"""exp(x) for x <= 0 on fixed-point shares: clamp, polynomial, repeated squaring.

    e^x = (e^(x / 2^s))^(2^s),   e^(x / 2^s) ~ p(v),  v = 2 (x + T) / T - 1 in [-1, 1]

for x clamped to [-T, 0] (T = cfg.clip, a power of two, so v is a shift of x + T).
The polynomial p of degree D is the Chebyshev interpolant of exp(h (v - 1)), h = T/2^(s+1);
with the defaults (T = 16, s = 2, D = 8, h = 2) its error is 1e-6 (relative 1.5e-4 at
v = -1, 4e-6 near v = 1), well below one fixed-point step; what remains is rounding,
amplified by 2^s = 4 through the squarings. Working on v in [-1, 1] keeps every power
|v^k| <= 1, so products never exceed 2^(2f) before truncation (local truncation fails
with probability ~2^(2f-64) per product, 2^-32 at f = 16).

Related: CrypTen's exp is the limit (1 + x/2^t)^(2^t) (8 squarings, no clamp); SIGMA and
SHAFT clamp and use a lookup table or a polynomial on a short interval, as here.
"""
from __future__ import annotations

import math

import torch

from privit.parties.session import Session
from privit.protocols import compare, sharing
from privit.protocols.approx_config import ExpConfig
from privit.protocols.approx_config import with_method as _with_method
from privit.protocols.circa import truncated_share
from privit.protocols.products import linear, mul_many, truncate_many


def poly_rounds(degree: int) -> int:
    """Rounds of `poly_eval` for a degree: ceil(log2 degree) (1 for degree <= 2)."""
    return max(1, math.ceil(math.log2(degree)))


def poly_eval(sess: Session, v: torch.Tensor, coefs: tuple[float, ...], coeff_bits: int,
              label: str = "poly") -> torch.Tensor:
    """Shares of sum_k c_k v^k, |v| <= 1 (fixed point in and out).

    Steps (D = degree, r = ceil(log2 D), m = 2^(r-1)):
    1. r - 1 rounds of powers: round j computes v^i = v^(2^(j-1)) v^(i - 2^(j-1)) for
       i in (2^(j-1), 2^j] (squares where the factors coincide), all in one mul_many.
    2. q = sum_{k >= m} c_k v^(k-m) and low = sum_{k < m} c_k v^k with coefficients of
       f + coeff_bits fractional bits, q truncated.
    3. ONE round: v^m q; result low + v^m q.
    ROUNDS r (+ dealer truncations). BYTES per party (numel N), one header per round:
    round j opens N for its square v^(2^j) and 2N for each other power it makes; the
    last round 2N (D = 8: 8 N, 24 N, 16 N).
    """
    f, kb = sess.frac_bits, coeff_bits
    degree = len(coefs) - 1
    rounds = poly_rounds(degree)
    m = 2 ** (rounds - 1)
    powers = {1: v}
    for j in range(1, rounds):
        half = 2 ** (j - 1)
        todo = list(range(half + 1, 2 * half + 1))
        pairs = [(powers[half], None if i - half == half else powers[i - half]) for i in todo]
        for i, p in zip(todo, mul_many(sess, pairs, label=label), strict=True):
            powers[i] = p
    high = linear(sess, [(coefs[k], powers[k - m]) for k in range(m + 1, degree + 1)],
                  coefs[m], f + kb)
    low = linear(sess, [(coefs[k], powers[k]) for k in range(1, m)], coefs[0], f + kb)
    if high.shape != v.shape:
        high = high.expand(v.shape).clone()
    if low.shape != v.shape:
        low = low.expand(v.shape).clone()
    (high,) = truncate_many(sess, [high], f + kb)
    (top,) = mul_many(sess, [(powers[m], high)], bits=None, label=label)
    top, low = truncate_many(sess, [top, low], [f, f + kb])
    return top + low


def exp(sess: Session, x: torch.Tensor, cfg: ExpConfig | None = None, *,
        method: str | None = None) -> torch.Tensor:
    """Shares of e^x (fixed point), documented for x in [-T, 0] (T = cfg.clip, 16).

    Steps:
    1. Clamp with ONE comparison call: c = relu(x + T) - relu(x) (= clamp(x, -T, 0) + T);
       without clamp_high only relu(x + T) (for x <= 0 known, e.g. x - max in softmax),
       its sign taken from x + T without its k = cfg.clamp_drop_bits (default f) low bits
       (Circa's truncated comparison on compare_bits - k + 1 bits: 17 by default): an
       x + T in [0, 2^k) ulps may clamp to 0, an error below e^(-T + 1) - e^-T.
    2. v = c / 2^(log2 T - 1) - 1 (a truncation by log2(T) - 1 bits).
    3. p = poly_eval(v): ceil(log2 D) rounds (3 for D = 8).
    4. s squarings: p <- p^2, one round each.
    ROUNDS (fss, local truncation): 1 + ceil(log2 D) + s = 6 by default.
    BYTES per party (numel N, H per message): clamp 12 N + H on the fss path at 32 bits
      (a ReLU gate opens 4 + 8 B; 2 x 12 N with clamp_high); poly (D = 8): (H + 8 N) +
      (H + 24 N) + (H + 16 N); squarings s (H + 8 N). Default: 88 N + 6 H.
    OFFLINE: the ReLU gates' FSS keys (64 n - 16 B each at n bits: 2032 B at 32; the low
      clamp alone at 17 bits: 1072 B) and 8 B per product element (6 products: 48 N).
    Out of range: x < -T gives e^-T (abs error < e^-T = 1.1e-7 for T = 16); x > 0 gives
    1 with clamp_high, else the polynomial's extrapolation (error grows quickly: keep
    clamp_high unless x <= 0 is guaranteed).
    Accuracy on [-T, 0]: abs error <= about 2^s (D + 3) 2^-f in the worst case (rounding
    of each truncation amplified by the squarings), 2e-4 at f = 16; typically 3e-5.
    """
    cfg = _with_method(cfg or ExpConfig(), method)
    f = sess.frac_bits
    t_int = round(cfg.clip * 2.0 ** f)
    shifted = sharing.add_public(sess, x, t_int)
    with sess.scope("clamp"):
        if cfg.clamp_high:
            both = compare.relu(sess, torch.stack([shifted, x]), method=cfg.method,
                                bits=cfg.compare_bits)
            c = both[0] - both[1]
        else:
            # x + T near 0 only costs e^-T: compare it without its low k bits (module doc)
            k = f if cfg.clamp_drop_bits is None else cfg.clamp_drop_bits
            if k:
                a = truncated_share(sess, shifted, k, "floor")
                c = compare.relu_gate(sess, a, shifted, bits=cfg.compare_bits - k + 1,
                                      method=cfg.method)[1]
            else:
                c = compare.relu(sess, shifted, method=cfg.method, bits=cfg.compare_bits)
    shift = int(round(math.log2(cfg.clip))) - 1
    (c,) = truncate_many(sess, [c], shift or None)
    v = sharing.add_public(sess, c, -(1 << f))
    p = poly_eval(sess, v, cfg.coefficients(), cfg.coeff_bits, label="exp_poly")
    for _ in range(cfg.squarings):
        (p,) = mul_many(sess, [(p, None)], label="exp_square")
    return p
