"""Reciprocal of positive shared values, and the fused row division num / (den + eps).

Initial guess from ONE batched comparison round against a geometric grid of thresholds
(as the exponent-based guesses of SIGMA / SHAFT, with several thresholds per octave), then
the product form of Newton's iteration for 1/x (Goldschmidt): with e0 = 1 - x y0,

    1/x = y0 / (1 - e0) = y0 (1 + e0)(1 + e0^2)(1 + e0^4) ...

k factors leave a relative error e0^(2^k); each factor costs ONE round because e_{i+1} =
e_i^2 and P_{i+1} = P_i (1 + e_i) are independent products of the same step.

Notation: f = frac_bits, L = cfg.scale_bits (the guess carries f + L fractional bits),
K = number of thresholds, k = cfg.factors, H = one message header (sharing.py).
"""
from __future__ import annotations

import math

import torch

from privit.parties.session import Session
from privit.protocols import compare, ring, sharing
from privit.protocols.approx_config import Grid, ReciprocalConfig, with_method
from privit.protocols.circa import truncated_share
from privit.protocols.products import mul_many, truncate_many


def grid_bits(sess: Session, x: torch.Tensor, grid: Grid, x_bits: int, *, method: str,
              bits: int, drop_bits: int = 0) -> torch.Tensor:
    """Shares of [x >= tau_i] for every threshold (shape (K, *x.shape), 0/1 unscaled), with
    x carrying x_bits fractional bits. ONE compare.drelu call on the stacked differences:
    ROUNDS 1 (fss), BYTES K numel wire_itemsize(bits) + H per party (fss).
    drop_bits k > 0: each party drops the k low bits of its difference first (Circa's
    truncated sign, circa.truncated_share, floor mode) and the comparison sees `bits` bits:
    exact for |x - tau| < 2^(bits + k - 2); an x in [tau_i, tau_i + 2^k) ulps may read as
    below tau_i (the neighbouring guess, see layernorm.guess_compare_bits)."""
    taus = torch.tensor([round(t * 2.0 ** x_bits) for t in grid.thresholds], dtype=torch.int64)
    view = taus.reshape((-1,) + (1,) * x.dim())
    diffs = x.unsqueeze(0) - view if sess.party_id == 0 else x.unsqueeze(0).expand(
        (len(taus),) + tuple(x.shape))
    if drop_bits:
        diffs = truncated_share(sess, diffs, drop_bits, "floor")
    return compare.drelu(sess, diffs.contiguous(), method=method, bits=bits)


def grid_select(sess: Session, ge: torch.Tensor, values: tuple[float, ...], scale_bits: int
                ) -> torch.Tensor:
    """Shares of values[i] (encoded with scale_bits fractional bits) for the interval i
    that [x >= tau] bits `ge` (K, ...) point to: v_0 + sum_i ge_i (v_i - v_{i-1}). Exact
    because the bits are monotone in i (exactly one interval indicator is 1). ROUNDS 0."""
    ints = [round(v * 2.0 ** scale_bits) for v in values]
    if len(ints) != ge.shape[0] + 1:
        raise ValueError(f"{len(ints)} guesses for {ge.shape[0]} thresholds")
    steps = torch.tensor([b - a for a, b in zip(ints[:-1], ints[1:], strict=True)], dtype=torch.int64)
    out = (ge * steps.reshape((-1,) + (1,) * (ge.dim() - 1))).sum(0)
    return sharing.add_public(sess, out, ints[0])


def divide(sess: Session, num: torch.Tensor | None, den: torch.Tensor, cfg: ReciprocalConfig,
           *, eps: float = 0.0, label: str = "divide") -> torch.Tensor:
    """Shares of num / (den + eps) (num None: 1 / (den + eps)), den broadcast against num
    (e.g. den (..., 1) a row sum, num (..., N)); den >= 0 in [2^lo, 2^hi) for accuracy.

    Steps:
    1. grid_bits(den): ONE comparison round on K = (hi - lo) per_octave + 1 thresholds.
    2. y0 = grid guess (f + L bits) and eps y0 (2f + L bits), linear in the bits.
    3. ONE product round: den y0 and num y0 (2f + L bits), then e0 = 1 - (den + eps) y0 and
       P = num y0 truncated by f + L (num None: P = y0 truncated by L).
    4. k - 1 rounds: e <- e^2 and P <- P (1 + e) together.
    5. ONE round: P <- P (1 + e).
    Result P = num (1 - e0^(2^k)) / (den + eps).
    ROUNDS (fss, local truncation) 1 + 1 + k. Dealer truncation: + 1 per product round.
    BYTES per party, local truncation, numel N of num and R of den (H per message):
      comparison: K R wire_itemsize(bits) + H (fss);
      step 3: H + 8 (2 R) [+ 8 (N + R) with num];
      each of the k rounds after it: H + 8 R (e^2, not in the last) + 8 (N + R) for
      P (1 + e) (8 (2 R) without num).
    Out of range: den < 2^lo is treated as the first interval (result bounded by 2^k y_0,
    an underestimate); den >= 2^hi gives 0 (abs error < 2^-hi num). A row with num = 0
    (e.g. an all-zero ReLU row with den = 0) gives exactly 0.
    """
    f, lb = sess.frac_bits, cfg.scale_bits
    grid = cfg.grid()
    bits = 64 if cfg.compare_bits is None else cfg.compare_bits
    with sess.scope("guess"):
        ge = grid_bits(sess, den, grid, f, method=cfg.method, bits=bits)
    y0 = grid_select(sess, ge, grid.guesses, f + lb)
    eps_y0 = grid_select(sess, ge, tuple(eps * g for g in grid.guesses), 2 * f + lb) if eps else None
    pairs: list[tuple[torch.Tensor, torch.Tensor | None]] = [(den, y0)]
    if num is not None:
        pairs.append((num, y0))
    raw = mul_many(sess, pairs, bits=None, label=label)
    e_raw = sharing.add_public(sess, -raw[0], ring.pow2(2 * f + lb))
    if eps_y0 is not None:
        e_raw = e_raw - eps_y0
    if num is not None:
        e, p = truncate_many(sess, [e_raw, raw[1]], [f + lb, f + lb])
    else:
        e, p = truncate_many(sess, [e_raw, y0], [f + lb, lb or None])
    one = ring.pow2(f)
    for _ in range(cfg.factors - 1):
        e, p = mul_many(sess, [(e, None), (p, sharing.add_public(sess, e, one))], label=label)
    (p,) = mul_many(sess, [(p, sharing.add_public(sess, e, one))], label=label)
    return p


def reciprocal(sess: Session, x: torch.Tensor, cfg: ReciprocalConfig | None = None, *,
               method: str | None = None) -> torch.Tensor:
    """Shares of 1 / x, elementwise, for x in [2^lo, 2^hi) (`divide` with num None).

    Range and behaviour outside it: see `divide` (x < 2^lo: bounded underestimate, at
    most 2^k y_0; x >= 2^hi: 0). Accuracy inside: relative error <= e0_max^(2^k) (4
    thresholds per octave, k = 2: 5.6e-5) plus fixed-point rounding of a few 2^-f.
    ROUNDS 1 + 1 + k (fss, local truncation): 4 by default.
    BYTES per party (numel R): K R w + H; H + 16 R; (k - 1)(H + 24 R); H + 16 R, with
    w = wire_itemsize(compare_bits), K thresholds.
    """
    cfg = with_method(cfg or ReciprocalConfig(), method)
    if not math.isfinite(cfg.hi_log2):
        raise ValueError("reciprocal needs a finite range")
    return divide(sess, None, x, cfg, label="reciprocal")
