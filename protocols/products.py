"""Several Beaver products in ONE opening, with broadcasting, and batched truncation.

The non-linear protocols (exp, reciprocal, rsqrt, softmax, GeLU, LayerNorm) multiply
several independent pairs per step; `mul_many` opens every masked operand of a step in
one message (STYLE rule 4). A product whose second operand is smaller than the result
(a per-row factor, a per-column weight, a stacked tensor times one shared operand) uses
a broadcast triple, so only the small operand's mask is opened for it, not its expansion.

Beaver, CRYPTO 1991; the broadcast triple is the elementwise triple with b kept at the
operand's shape (c = a * b broadcast), as CrypTen's TTP provider does for `mul`.

Costs per party (H = one message header, sharing.py), for products p with result numel
N_p and small-operand numel S_p:
- square (y None):       opens N_p elements;
- same-shape product:    opens 2 N_p elements;
- broadcast product:     opens N_p + S_p elements.
`mul_many`: ROUNDS 1, BYTES (n-1)(H + 8 sum opened); then `truncate_many` on the items
with bits (exact, the 2-party default: 1 round, H + ceil(sum N_p / 8); local: 0 rounds,
0 bytes; dealer: 1 round, (n-1)(H + 8 sum N_p)). OFFLINE 8 N_p per product to party n-1
(the derived c, or a^2), plus 1-8 N_p per exact truncation (truncation.TruncWrap) or
16 N_p per dealer truncation.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from privit.parties.session import Params, Session
from privit.protocols import ring, truncation
from privit.protocols.correlations import Component, ComponentKind, _dims
from privit.protocols.sharing import open_many

BCAST_TRIPLE = "bcast_triple"
Pair = tuple[torch.Tensor, torch.Tensor | None]
Bits = int | None


class BroadcastTriple(ComponentKind):
    """Beaver triple a (out shape), b (a shape broadcastable to it), c = a * b.

    params = (ndim, *out_shape, *b_shape), both of length ndim."""

    name = BCAST_TRIPLE

    @staticmethod
    def shapes(params: Params) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if not params:
            raise ValueError(f"{BCAST_TRIPLE}: params are (ndim, *out_shape, *b_shape)")
        (ndim,) = _dims(params[:1], BCAST_TRIPLE)
        if len(params) != 1 + 2 * ndim:
            raise ValueError(f"{BCAST_TRIPLE}: expected {1 + 2 * ndim} params, got {params!r}")
        out, small = _dims(params[1:1 + ndim], BCAST_TRIPLE), _dims(params[1 + ndim:], BCAST_TRIPLE)
        if ring.broadcast_shape(out, small) != torch.Size(out):
            raise ValueError(f"{BCAST_TRIPLE}: {small} does not broadcast to {out}")
        return out, small

    def components(self, params: Params) -> list[Component]:
        out, small = self.shapes(params)
        return [Component("a", out, False), Component("b", small, False), Component("c", out, True)]

    def derive(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"c": values["a"] * values["b"]}


def product_kinds() -> dict[str, ComponentKind]:
    """The correlation kinds this module adds to the registry."""
    return {BCAST_TRIPLE: BroadcastTriple()}


def _plan(x: torch.Tensor, y: torch.Tensor | None) -> tuple[str, torch.Tensor, torch.Tensor | None]:
    """(kind, full operand, other operand) for one product; the full one has the result shape."""
    x = ring.as_ring(x)
    if y is None:
        return "square", x, None
    y = ring.as_ring(y)
    out = ring.broadcast_shape(x.shape, y.shape)
    if x.shape == out and y.shape == out:
        return "triple", x, y
    if y.shape == out:
        x, y = y, x
    if x.shape != out:
        x = x.expand(out)
    if y.dim() < len(out):
        y = y.reshape((1,) * (len(out) - y.dim()) + tuple(y.shape))
    return BCAST_TRIPLE, x, y


def _bits_list(bits: Bits | Sequence[Bits], count: int) -> list[Bits]:
    if bits is None or isinstance(bits, int):
        return [bits] * count
    out = list(bits)
    if len(out) != count:
        raise ValueError(f"{len(out)} truncation widths for {count} products")
    return out


def mul_many(sess: Session, pairs: Sequence[Pair], bits: Bits | Sequence[Bits] = -1,
             label: str = "mul_many") -> list[torch.Tensor]:
    """Shares of x_i * y_i (y_i None: x_i^2) for every pair, with ONE opening.

    bits: truncation of each product (an int for all, or one per pair; None = no
    truncation, e.g. when one factor is an unscaled 0/1 bit; the default -1 means f).
    Steps:
    1. Per pair take a `square`, `triple` or `bcast_triple` (the operand with the result's
       shape is masked by a, the other by b at its own shape).
    2. Open every x - a (and y - b) in one message (`open_many`).
    3. z_i = c_i + d b_i + e a_i + [i = 0] d e (square: a2_i + 2 d a_i + [i = 0] d^2).
    4. `truncate_many` on the products with bits.
    ROUNDS 1 + (1 if any bits and exact or dealer truncation). BYTES as in the module
    docstring.
    """
    widths = [sess.frac_bits if b == -1 else b for b in _bits_list(bits, len(pairs))]
    plans = [_plan(x, y) for x, y in pairs]
    mats, masked = [], []
    for kind, x, y in plans:
        if kind == BCAST_TRIPLE:
            assert y is not None
            params: tuple[int, ...] = (x.dim(), *x.shape, *y.shape)
        else:
            params = tuple(x.shape)
        mat = sess.correlation(kind, tuple(int(p) for p in params))
        mats.append(mat)
        masked.append(x - mat["a"])
        if y is not None:
            masked.append(y - mat["b"])
    opened = open_many(sess, masked, label=label) if masked else []
    out, k = [], 0
    lead = sess.party_id == 0
    for (_, _, y), mat in zip(plans, mats, strict=True):
        d = opened[k]
        k += 1
        # addcmul: one pass per product term, no temporaries (the same ring values)
        if y is None:
            z = torch.addcmul(mat["a2"], d, mat["a"], value=2)
            if lead:
                z.addcmul_(d, d)
        else:
            e = opened[k]
            k += 1
            b = mat["b"] + e if lead else mat["b"]
            z = torch.addcmul(mat["c"], d, b).addcmul_(e, mat["a"])
        out.append(z)
    return truncate_many(sess, out, widths)


def truncate_many(sess: Session, xs: Sequence[torch.Tensor], bits: Bits | Sequence[Bits],
                  label: str = "truncate_many") -> list[torch.Tensor]:
    """Shares of x_i / 2^bits_i for every x_i (None: returned unchanged).

    Exact truncation (2 parties, cfg.truncation "exact"): `truncation.truncate_exact_many`,
    every tensor's wrap bits in ONE message: ROUNDS 1 (if any), BYTES H + ceil(sum numel/8),
    OFFLINE 1, 2, 4 or 8 numel (s <= 8, 16, 32, 62) to party 1.
    Local truncation (2 parties, cfg.truncation "local"): SecureML per tensor, 0 rounds.
    Dealer truncation: the steps of `truncation.truncate_dealer` with one trunc_pair per
    tensor and every masked value opened in ONE message. ROUNDS 1 (if any), BYTES
    (n-1)(H + 8 sum numel), OFFLINE 16 numel to party n-1.
    """
    widths = _bits_list(bits, len(xs))
    if sess.n == 2 and sess.cfg.truncation == "local":
        return [x if w is None else truncation.truncate_local(sess, x, w)
                for x, w in zip(xs, widths, strict=True)]
    todo = [i for i, w in enumerate(widths) if w is not None]
    if not todo:
        return list(xs)
    out = list(xs)
    if sess.n == 2 and sess.cfg.truncation == "exact":
        done = truncation.truncate_exact_many(sess, [xs[i] for i in todo],
                                              [int(widths[i] or 0) for i in todo], label=label)
        for i, z in zip(todo, done, strict=True):
            out[i] = z
        return out
    mats, masked = {}, []
    for i in todo:
        x, w = ring.as_ring(xs[i]), widths[i]
        assert w is not None
        if not 1 <= w <= truncation.DEALER_OFFSET_BITS:
            raise ValueError(f"truncation bits must be in [1, {truncation.DEALER_OFFSET_BITS}]")
        mat = sess.correlation("trunc_pair", (w, *(int(d) for d in x.shape)))
        mats[i] = mat
        value = x + mat["r"]
        if sess.party_id == 0:
            value = value + ring.pow2(truncation.DEALER_OFFSET_BITS)
        masked.append(value)
    opened = dict(zip(todo, open_many(sess, masked, label=label), strict=True))
    for i in todo:
        w, c, mat = widths[i], opened[i], mats[i]
        assert w is not None
        keep = 1 - ring.msb(c)
        z = mat["r_msb"] * keep * ring.pow2(ring.RING_BITS - w) - mat["r_shift"]
        if sess.party_id == 0:
            z = z + ring.logical_rshift(c, w) - ring.pow2(truncation.DEALER_OFFSET_BITS - w)
        out[i] = z
    return out


def linear(sess: Session, terms: Sequence[tuple[float, torch.Tensor]], const: float, bits: int
           ) -> torch.Tensor:
    """Shares of const + sum_k c_k t_k for public real c_k and const, NOT truncated.

    Each c_k is encoded with `bits` fractional bits; the terms carry f fractional bits, so
    the result carries f + bits (the constant is encoded at that scale and added by party
    0). The caller truncates by `bits` (or fuses it with a later product's truncation).
    ROUNDS 0, BYTES 0. With no terms the result is a 0-d tensor (broadcast it)."""
    scale = float(2 ** bits)
    out = torch.zeros((), dtype=torch.int64)
    for coef, t in terms:
        out = out + t * int(round(coef * scale))
    if sess.party_id == 0 and const:
        out = out + int(round(const * scale * 2 ** sess.frac_bits))
    return out


def beaver_matmul_many(sess: Session, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
                       label: str = "matmul_many", extra_bits: Sequence[int] | None = None
                       ) -> list[torch.Tensor]:
    """Shares of x_i @ y_i / 2^extra_bits_i (both secret, each pair with its own batch dims),
    ONE opening for all, results truncated by f + extra_bits_i (default 0).

    As beaver.beaver_matmul per pair, with every D_i = x_i - A_i and E_i = y_i - B_i in
    one message. ROUNDS 1 (+ 1 for exact or dealer truncation, all products in one message).
    BYTES (n-1)(H + 8 sum(batch (nk + km))). OFFLINE 8 sum(batch n m) to party n-1.
    """
    extra = list(extra_bits) if extra_bits is not None else [0] * len(pairs)
    mats, masked = [], []
    for x, y in pairs:
        if x.dim() < 2 or x.shape[:-2] != y.shape[:-2] or x.shape[-1] != y.shape[-2]:
            raise ValueError(f"beaver_matmul_many: {tuple(x.shape)} @ {tuple(y.shape)}")
        params = tuple(int(v) for v in (*x.shape[:-2], x.shape[-2], x.shape[-1], y.shape[-1]))
        mat = sess.correlation("matmul_triple", params)
        mats.append(mat)
        masked += [x - mat["a"], y - mat["b"]]
    opened = open_many(sess, masked, label=label)
    out = []
    for i, mat in enumerate(mats):
        d, e = opened[2 * i], opened[2 * i + 1]
        b = mat["b"] + e if sess.party_id == 0 else mat["b"]
        out.append(mat["c"] + ring.ring_matmul(d, b) + ring.ring_matmul(mat["a"], e))
    return truncate_many(sess, out, [sess.frac_bits + x for x in extra])
