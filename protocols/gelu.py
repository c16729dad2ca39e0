"""GeLU on fixed-point shares: two approximations of the exact (erf) GeLU, a cheap one and
a precise one, and MPCFormer's quadratic.

Both accurate kinds write GeLU(x) = x Phi(x) = ReLU(x) - g(|x|) with g(t) = t Phi(-t), an
even correction that decays fast, approximate g on [0, a) and take 0 beyond (the output
is then ReLU(x) exactly), as in SIGMA's GeLU (ReLU minus a correction on a clipped range;
SIGMA reads the correction from a lookup table, here it is a polynomial). The comparisons
that select the pieces run in ONE batched call and their unscaled 0/1 bits multiply
exactly. On the fss path both kinds compare with the compact one-bit DCF keys
(compare.drelu_xor, dcf_bit.py) and convert the XOR-shared bits inside the opening of the
first product round (bit_select.py), at no extra round; on the adder path (chosen by
"auto" where the cost model finds it cheaper) the comparisons end in XOR shares too
(binary.adder_drelu_xor: the last AND alone, no B2A truth tables) and convert the same way.
The comparisons look at x's high bits only (piece_comparisons: Circa's local truncation,
GeluConfig.compare_frac_bits = 5 fractional bits kept): compare_bits - k = 21 bits at f = 16
(k = 11), 17 at f = 20. A comparison's result only matters to within the pieces'
tolerance: moving a piece end by less than 1/64 swaps in the neighbouring polynomial (or,
at 0, the other sign, or at the cutoff 0) on a sliver where both are close to g. The
fss keys shrink with the bits (452 B per comparison at 21 bits, 806 at 32); the adder's
cost only falls where its positions do (binary_layout.positions: 17 bits or fewer, so at
f = 20 but not at f = 16), and the fss wire only at 16 bits or fewer.

"poly" (the cheap one): g ~ t h(t), h a cubic on [0, 3.3) (g(3.3) = 1.6e-3); 3 comparisons,
4 rounds, 52 N + ceil(3 N / 8) + 4 H B per party on the fss path (52.4 B per element).
Max abs error 2.1e-3 on the whole real line (the moved ends included: 2.07e-3).

"erf" (the private ViT's default, models/private_options.py): g ~ p_j(t), a quartic per
piece of [0, 0.95), [0.95, 2.2), [2.2, 4.25) (g(4.25) = 4.5e-5); 7 comparisons, 4 rounds,
100 N + ceil(7 N / 8) + 4 H B per party on the fss path (100.9 B per element; 124 on the
arithmetic keys before), dealer 3324.9 B per element at f = 16 (5802.9 with 32-bit
comparisons, 10648 on the arithmetic keys), 2.3x the poly's (7 against 3 comparisons).
The piece's coefficients are selected by the bits (linear, local) and multiply x, x^2,
x^3, x^4, so the online cost does not depend on the number of pieces.
Max abs error 8.1e-5 on the whole real line (5.8e-5 comparing all 32 bits), measured on
every fixed-point input of [-4.5, 4.5] with the fixed-point rounding and every piece end
moved either way by the dropped bits (tests/test_gelu_erf.py).

"quad": MPCFormer's 0.125 x^2 + 0.25 x + 0.5 (a cheap stand-in that needs distillation;
it is not close to GeLU: it is the model's activation, evaluated exactly).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from privit.parties.session import Session
from privit.protocols import compare, ring, sharing
from privit.protocols.approx_config import GeluConfig, with_method
from privit.protocols.bit_select import bit_products, open_bits
from privit.protocols.circa import truncated_share
from privit.protocols.products import linear, mul_many, truncate_many

GELU_KINDS = ("poly", "erf", "quad")


def gelu(sess: Session, x: torch.Tensor, kind: str = "erf", cfg: GeluConfig | None = None, *,
         method: str | None = None) -> torch.Tensor:
    """Shares of GeLU(x) (fixed point), kind "poly" (the cheap erf-GeLU approximation),
    "erf" (the precise one) or "quad" (MPCFormer's quadratic). See `gelu_poly`,
    `gelu_erf` and `gelu_quad` for costs."""
    if kind == "poly":
        return gelu_poly(sess, x, with_method(cfg or GeluConfig(), method))
    if kind == "erf":
        return gelu_erf(sess, x, with_method(cfg or GeluConfig(), method))
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
    Steps 1-2 take the bits in XOR shares (compare.drelu_xor: the compact keys on the fss
    path, dcf_bit.py; the adder's XOR ending on the adder path); 2. bit_select.bit_products:
    b0 x, bp x, bm x and x^2 from ONE opening of the 3 N masked bits and x + R; kappa x =
    2 b0 x - bp x - bm x.
    Step 1 compares on c = compare_bits - k bits, k = cfg.compare_drop(f) (piece_comparisons;
    c = 21 at f = 16, 17 at f = 20).
    ROUNDS 3 + the comparison's: 4 on the fss path; on the adder path 3 + its log2(P)
    rounds (8 at c = 21 or 32 with 2-bit leaves, 7 at c = 17). Local truncation.
    BYTES per party (numel N, w = wire_itemsize(c) = 4 at c = 21, H per message): fss:
      3 w N + H, then ceil(3 N / 8) + 8 N + H, 16 N + H, 16 N + H: 52 N + ceil(3 N / 8) +
      4 H at c = 17..32; adder: the XOR-ending adder's bytes on c bits (adder_costs(compact
      =True)), then ceil(3 N / 8) + 8 N + H, 16 N + H, 16 N + H.
    OFFLINE (fss): 3 N (2 bit_dcf_cw_bytes(c - 1)) + ceil(3 N / 8) for the keys (452 B per
      comparison at c = 21, 806 at 32, 1512 with drelu_fss), 8 (3 N + 3 N + N) for the
      select, 8 N + 8 N for the last two products: 1428 N + ceil(3 N / 8) at c = 21.
      OFFLINE (adder): the XOR-ending adder's material (3 x 7.625 N at c = 21 or 32 with
      2-bit leaves, 3 x 3.625 N with 4-bit ones or at c = 17 with 2-bit ones) + the same 72 N.
    Range: exact pieces for |x| < 2^(bits - 1 - f) - a - 2^(k - f) (32 bits, f = 16:
    32763); beyond a (+ 1/64) the output is ReLU(x) itself (error g(|x|) < 1.7e-3).
    Error: 2.1e-3 + a few 2^-f.
    """
    f, kb = sess.frac_bits, cfg.coeff_bits
    a = round(cfg.cutoff * 2.0 ** f)
    stacked = torch.stack([x, sharing.add_public(sess, x, a), sharing.add_public(sess, x, -a)])
    bits = piece_comparisons(sess, stacked, cfg)
    (b0x, bpx, bmx), y_raw = bit_products(sess, bits, x, square=True, label="gelu")
    assert y_raw is not None
    (y,) = truncate_many(sess, [y_raw], f)
    r, it = b0x, 2 * b0x - bpx - bmx
    t = 2 * r - x
    (ty,) = mul_many(sess, [(t, y)], label="gelu")
    c0, c1, c2, c3 = cfg.coefficients
    h_raw = linear(sess, [(c1, t), (c2, y), (c3, ty)], c0, f + kb)
    (h,) = truncate_many(sess, [h_raw], f + kb)
    (corr,) = mul_many(sess, [(it, h)], label="gelu")
    return r - corr


def gelu_erf(sess: Session, x: torch.Tensor, cfg: GeluConfig) -> torch.Tensor:
    """Shares of ReLU(x) - sum_j [|x| in piece j] p_j(|x|) ~ GeLU(x), pieces of cfg.erf.

    Pieces [b_(j-1), b_j) of |x|, j = 1..m, b_0 = 0, b_m = a = cutoff; p_j(t) = sum_k
    c_jk t^k, k <= 4 (m = 3 by default). kb = cfg.erf.coeff_bits.
    1. ONE comparison call on x, x - b_j, x + b_j (j = 1..m; 2m + 1 comparisons): bits
       s = [x >= 0], P_j = [x >= b_j], N_j = [x >= -b_j]. With P_0 = N_0 = s, pos_j =
       P_(j-1) - P_j and neg_j = N_j - N_(j-1) are the piece's halves, ind_j = pos_j + neg_j
       = [|x| in piece j] and kappa_j = pos_j - neg_j = ind_j sign(x).
       Local: the coefficients of each element's piece, C_0 = sum_j ind_j [c_j0 2^(f+kb)],
       C_k = sum_j e_jk [c_jk 2^kb] with e_jk = ind_j (k even) or kappa_j (k odd), so that
       C_k x^k = [piece j] c_jk t^k (t^k = sign^k x^k); bits times public integers: exact.
       (Coefficient selection: the online cost does not grow with the number of pieces.)
    2. ONE product round: r = s x (ReLU, exact) and C_1 x (both untruncated), y = x^2
       (truncated by f).
    3. ONE round: C_2 y and x y (broadcast product of (C_2, x) with y), y^2; x^3 = x y and
       x^4 = y^2 truncated by f.
    4. ONE round: (C_3, C_4) (x^3, x^4) (one product of the stacked pairs).
       corr = C_0 + C_1 x + ... + C_4 x^4 carries f + kb bits; ONE truncation by kb (after
       the selection, so only the element's own piece value is truncated); result r - corr.
    Step 1 compares on c = compare_bits - k bits (piece_comparisons, as gelu_poly: c = 21
    at f = 16, 17 at f = 20).
    On the fss path steps 1-2 use the compact keys (as gelu_poly): 1. compare.drelu_xor
    (bits in XOR shares, dcf_bit.py); 2. bit_select.open_bits: the 2m + 1 bits in
    arithmetic shares, every bit times x and x^2 from ONE opening of the (2m + 1) N masked
    bits and x + R; s x is a row, C_1 x the same selection applied to the rows b x
    (linear). The adder path does the same with the adder's XOR ending
    (binary.adder_drelu_xor) in place of the compact keys (before: arithmetic bits from the
    B2A truth tables, then a Beaver round for (s, C_1) x and x^2; same rounds).
    ROUNDS 3 + the comparison's: 4 on the fss path, 3 + the adder's rounds on the adder
      path; local truncation (dealer truncation: +3).
    BYTES per party (numel N, w = wire_itemsize(c) = 4 at c = 21, H per message): fss:
      (2m + 1) w N + H, then ceil((2m + 1) N / 8) + 8 N + H, then 8 (3 N + N) + H and
      8 (4 N) + H: 100 N + ceil(7 N / 8) + 4 H at m = 3 and c = 17..32 (it was 124 N + 4 H
      on the arithmetic keys); adder: the XOR-ending adder's bytes on c bits
      (adder_costs(compact=True): the same at c = 21 as at 32, 0.48x at c = 17), then the
      same three messages as on fss.
    OFFLINE (fss): (2m + 1) N 2 bit_dcf_cw_bytes(c - 1) + ceil((2m + 1) N / 8) for the
      keys (7 x 452 N = 3164 N + ceil(7 N / 8) at c = 21; 7 x 806 N at 32, 10584 N with
      drelu_fss), 16 (2m + 1) N + 8 N for the select (120 N), 8 (2 N + N) + 8 (2 N) for the
      last two products: 3324 N + ceil(7 N / 8) in all at c = 21 (5802 N at 32, 10648 N
      before the compact keys). OFFLINE (adder): the XOR-ending adder's material (7 x
      7.625 N at c = 21 or 32 with 2-bit leaves, 7 x 3.625 N with 4-bit ones or at c = 17
      with 2-bit ones, cost_model.adder_costs(compact=True)) + the same 160 N: 213.4 N /
      185.4 N (was 508.5 N with the B2A truth tables).
    Range: exact pieces for |x| < 2^(bits - 1 - f) - a - 2^(k - f) (32 bits, f = 16:
    32763); beyond a + 1/64 the output is ReLU(x) itself (error g(|x|) <= g(a) = 4.5e-5 at
    a = 4.25). Inside: the interpolation error (3.9e-5; 6.5e-5 within 1/64 of a moved
    piece end, the neighbouring piece's polynomial there), the coefficients' rounding
    (< 1.3e-5) and the rounding of x^2, x^3, x^4 weighted by the coefficients (a few 2^-f):
    8.1e-5 in all at f = 16 (5.8e-5 with compare_frac_bits=None).
    """
    f, ecfg = sess.frac_bits, cfg.erf
    shifted = [x]
    for _, hi in ecfg.pieces():
        end = round(hi * 2.0 ** f)
        shifted += [sharing.add_public(sess, x, -end), sharing.add_public(sess, x, end)]
    xor_bits = piece_comparisons(sess, torch.stack(shifted), cfg)
    opened = open_bits(sess, xor_bits, x, square=True, label="gelu_erf")
    assert opened.square is not None
    coeffs = _erf_coefficients(opened.bits, cfg, f, orders=(0, 2, 3, 4))
    relu_x, c1x = opened.products[0], _erf_coefficients(opened.products, cfg, f, (1,))[1]
    (y,) = truncate_many(sess, [opened.square], f)
    second, y2 = mul_many(sess, [(torch.stack([coeffs[2], x]), y.unsqueeze(0)), (y, None)],
                          bits=None, label="gelu_erf")
    x3, x4 = truncate_many(sess, [second[1], y2], f)
    (third,) = mul_many(sess, [(torch.stack([coeffs[3], coeffs[4]]), torch.stack([x3, x4]))],
                        bits=None, label="gelu_erf")
    corr_raw = coeffs[0] + c1x + second[0] + third[0] + third[1]
    (corr,) = truncate_many(sess, [corr_raw], ecfg.coeff_bits)
    return relu_x - corr


def piece_comparisons(sess: Session, stacked: torch.Tensor, cfg: GeluConfig) -> torch.Tensor:
    """XOR shares of [v >= 0] for the stacked shifted inputs v = x - end (either kind's
    step 1), compared on their high bits only.

    Steps: 1. k = cfg.compare_drop(f); party 0 adds 2^(k-1) and every party drops the k
    low bits of its share (circa.truncated_share, floor mode; local, 0 rounds). The shares
    then sum to u = floor((v + 2^(k-1)) / 2^k) - c, c the dropped carry (0 or 1), whose
    sign is v's except for v in [-2^(k-1), 2^(k-1)): the end moves by less than 2^(k-1)
    ulps. Only u mod 2^(bits - k) is read, so the sum wrapping around 2^64 changes
    nothing (it moves u by 2^(64-k)): no failure probability, unlike a truncation whose
    value is kept. u fits bits - k signed bits for |v| < 2^(bits-1) - 2^k.
    2. ONE comparison call (compare.drelu_xor, the plan for bits - k bits: the cost model
    prices the narrower comparisons) on u, the bits in XOR shares (the compact keys or
    the adder's XOR ending), converted inside the next product's opening by the caller.
    ROUNDS, BYTES, OFFLINE: those of drelu_xor on numel elements of bits - k bits."""
    drop = cfg.compare_drop(sess.frac_bits)
    bits = cfg.compare_bits - drop
    if drop:
        stacked = truncated_share(sess, sharing.add_public(sess, stacked, 1 << (drop - 1)),
                                  drop, "floor")
    plan = compare.plan_comparison(sess, cfg.method, [stacked.numel()], bits, product=False,
                                   compact=True)
    with sess.scope("pieces"):
        return compare.drelu_xor(sess, stacked, bits=bits, plan=plan)


def _erf_coefficients(rows: Sequence[torch.Tensor], cfg: GeluConfig, f: int,
                      orders: Sequence[int] = range(5)) -> dict[int, torch.Tensor]:
    """C_k (k in `orders`, of 0..4) of gelu_erf's step 1 from the rows (s, P_1, N_1, ...,
    P_m, N_m): shares of the bits, or of the bits times x (the selection is linear: it then
    gives C_k x). Only the asked orders are computed (the fss path needs C_1 of the
    products and the others of the bits). Each C_k is one public integer combination of
    the rows (`_selection_weights`), a pass per row with a nonzero weight."""
    coeffs: dict[int, torch.Tensor] = {}
    for k, weights in _selection_weights(cfg, f, len(rows), orders).items():
        terms = [(w, rows[r]) for r, w in enumerate(weights) if w]
        if not terms:
            coeffs[k] = torch.zeros_like(rows[0])
            continue
        (w0, row0), *rest = terms
        acc = row0 * w0
        for w, row in rest:
            acc.add_(row, alpha=w)
        coeffs[k] = acc
    return coeffs


def _selection_weights(cfg: GeluConfig, f: int, count: int, orders: Sequence[int]
                       ) -> dict[int, list[int]]:
    """Per order k, the weight of each row in C_k = sum_j e_jk [c_jk 2^scale]: with
    above = (s, P_1, ..., P_m) and not_below = (s, N_1, ..., N_m), piece j's pos_j =
    above_j - above_(j+1) and neg_j = not_below_(j+1) - not_below_j enter ind_j = pos_j +
    neg_j (even k) or kappa_j = pos_j - neg_j (odd k). Exact in Z_2^64 (weights reduced
    to int64)."""
    ecfg = cfg.erf
    kb = ecfg.coeff_bits
    above = [0, *range(1, count, 2)]
    not_below = [0, *range(2, count, 2)]
    weights = {k: [0] * count for k in orders}
    for j, piece in enumerate(ecfg.coefficients()):
        for k in orders:
            c = round(piece[k] * 2.0 ** (f + kb if k == 0 else kb))
            sign = -1 if k % 2 else 1
            row = weights[k]
            row[above[j]] += c
            row[above[j + 1]] -= c
            row[not_below[j + 1]] += sign * c
            row[not_below[j]] -= sign * c
    half = 1 << 63
    return {k: [(w + half) % (2 * half) - half for w in row] for k, row in weights.items()}


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
