"""Comparison through binary shares (the "adder path"), 2 parties + dealer.

The sign of x = x_0 + x_1 mod 2^n is t_0 xor t_1 xor carry, where t_i is bit n-1 of
party i's share and carry = [lo(x_0) + lo(x_1) >= 2^(n-1)] on the low n-1 bits. Each
party knows its own share's bits in the clear, so the carry is a carry-lookahead over
bits that two parties hold privately. We compute only the carry OUT (not every carry):
a balanced tree of (generate, propagate) pairs, (G, P)_hi o (G, P)_lo =
(G_hi xor P_hi G_lo, P_hi P_lo), as in the parallel-prefix adders (Sklansky,
Kogge-Stone; CrypTen's A2B uses Kogge-Stone over every carry), with three changes:

1. leaves of w = 2 or 4 bits in ONE round: a block's (G, P) is a XOR of products of a
   party-0 monomial and a party-1 monomial of the block's bits (w = 2:
   G = x1 y1 xor (x1 x0) y0 xor x0 (y1 y0), P = x1 x0 xor y1 y0 xor x1 y0 xor x0 y1),
   each of which costs one masked bit per monomial with a dealer "cross" correlation
   (no g = x y round first): 2^w - 1 bits per block per party. w = 4 saves one round
   for 2.5x the leaf bytes; the cost model picks w (compare.py);
2. bit-sliced words in a bit-reversed layout, so that every tree level pairs the upper
   and lower halves of each element's word (a shift and a mask, no bit gathering), and
   every level's messages are dense bit strings (its width shrinks by half per level);
3. the last level, the XOR with t_0 xor t_1 and the conversion to arithmetic shares
   (B2A), and for ReLU the product with x, happen in ONE round: DReLU is a function of
   three masked bits (u, v, w) that the parties open; the dealer shares its truth table
   (8 entries, 7 sent: they sum to 4) and R times it (R masks x), and each party picks
   the entry at the opened index: one-time truth tables (Ishai et al., TCC 2013).
   The XOR-output variant (`adder_drelu_xor`, for consumers that convert the bit inside
   their next product's opening, bit_select.py) ends instead with the last AND alone, a
   Beaver AND on XOR shares (2 masked bits per party, 1 dealer bit): d stays in XOR
   shares and the dealer sends no 64-bit table.

Positions: the n-1 low bits sit at the top of P = max(4, next power of two >= n-1)
positions (zeros below: they neither generate nor matter). Leaves: P/w blocks.
ROUNDS log2(P) - log2(w) + 1 (the leaf round, log2(P/w) - 1 tree levels, the final
round); w = 2: 6 for n = 34..64, 5 for 18..33, 4 for 10..17, 3 for 6..9, 2 for n <= 5;
w = 4 (P >= 8): one fewer. Bytes: see `adder_costs`. Formulas and proofs in
docs/comparison.md.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from privit.parties.prg import Prg
from privit.parties.session import Params, Session
from privit.protocols.binary_layout import (
    TABLE,
    TABLE_SUM,
    U64,
    final_truth_table,
    leaf_bits,
    leaf_monomials,
    leaf_terms,
    leaf_widths,
    level_widths,
    low_mask,
    pack_bits,
    packed_nbytes,
    positions,
    share_words,
    unpack_bits,
    word_dtype,
)

RING_BITS = 64
# What a gate outputs (the third of its params): DReLU in arithmetic shares; DReLU and its
# product with a 64-bit value; DReLU in XOR shares (uint8), no table, no product.
OUT_DRELU, OUT_PRODUCT, OUT_XOR = 0, 1, 2


# -- dealer material ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Layout:
    numel: int
    bits: int
    out: int
    leaf: int

    @property
    def relu(self) -> bool:
        return self.out == OUT_PRODUCT

    @property
    def xor(self) -> bool:
        return self.out == OUT_XOR

    @property
    def lanes(self) -> int:
        """Blocks per element after the leaf round (bits per lane word)."""
        return positions(self.bits) // self.leaf

    @property
    def levels(self) -> list[int]:
        return level_widths(self.bits, self.leaf)


def _params(params: Params) -> _Layout:
    if len(params) != 4 or not all(isinstance(p, int) and not isinstance(p, bool) for p in params):
        raise ValueError(f"adder_gate: params are (numel, bits, out, leaf), got {params!r}")
    numel, bits, out, leaf = (int(p) for p in params)
    if (numel < 0 or not 1 <= bits <= RING_BITS or out not in (OUT_DRELU, OUT_PRODUCT, OUT_XOR)
            or leaf not in leaf_widths(bits)):
        raise ValueError(f"adder_gate: bad params {params!r}")
    return _Layout(numel, bits, out, leaf)


def _draw_bits(prg: Prg, shape: tuple[int, ...], width: int) -> np.ndarray:
    dtype = word_dtype(width)
    count = int(np.prod(shape))
    raw = prg.bytes(count * dtype.itemsize).view(dtype).reshape(shape)
    raw &= dtype.type(low_mask(width))
    return raw


def _draw_ring(prg: Prg, shape: tuple[int, ...]) -> np.ndarray:
    return prg.bytes(8 * int(np.prod(shape))).view(np.int64).reshape(shape)


def _draw(prg: Prg, party: int, lay: _Layout) -> dict[str, np.ndarray]:
    """Everything a party derives from its PRG, in the fixed draw order."""
    m = lay.numel
    out = {"leaf_mask": _draw_bits(prg, ((1 << lay.leaf) - 1, m), lay.lanes)}
    if party == 0:
        out["leaf_c"] = _draw_bits(prg, (2, m), lay.lanes)
    for k, w in enumerate(lay.levels):
        out[f"mask{k}"] = _draw_bits(prg, (3, m), w // 2)
        if party == 0:
            out[f"c{k}"] = _draw_bits(prg, (2, m), w // 2)
    if lay.xor:  # the last AND alone: masks (alpha, beta), party 0's share of alpha beta
        out["final_mask"] = _draw_bits(prg, (2, m), 1)
        if party == 0:
            out["final_c"] = _draw_bits(prg, (1, m), 1)
        return out
    out["final_mask"] = _draw_bits(prg, (3, m), 1)
    if party == 0:
        out["table"] = _draw_ring(prg, (TABLE - 1, m))
    if lay.relu:
        out["big_r"] = _draw_ring(prg, (m,))
        if party == 0:
            out["r_table"] = _draw_ring(prg, (TABLE - 1, m))
    return out


def _xor_parts(lay: _Layout) -> list[tuple[str, int, int]]:
    """The XOR-shared derived values party 1 receives: (name, width, rows)."""
    parts = [("leaf_c", lay.lanes, 2)]
    parts += [(f"c{k}", w // 2, 2) for k, w in enumerate(lay.levels)]
    if lay.xor:
        parts.append(("final_c", 1, 1))
    return parts


def _cross(xs: np.ndarray, ys: np.ndarray, terms: list[tuple[int, int]],
           out: np.ndarray | None = None) -> np.ndarray:
    """XOR over terms (S, T) of xs[S - 1] & ys[T - 1] (into `out` when given)."""
    out = np.zeros_like(xs[0]) if out is None else out
    (s_first, t_first), rest = terms[0], terms[1:]
    np.bitwise_and(xs[s_first - 1], ys[t_first - 1], out=out)
    term = np.empty_like(out)
    for s_mask, t_mask in rest:
        np.bitwise_and(xs[s_mask - 1], ys[t_mask - 1], out=term)
        out ^= term
    return out


def _complete(first: np.ndarray, total: np.ndarray | int) -> np.ndarray:
    """(M, 8) shares of a table from shares of its first 7 entries (7, M) and of its sum."""
    out = np.empty((first.shape[1], TABLE), dtype=np.int64)
    out[:, :TABLE - 1] = first.T
    out[:, TABLE - 1] = total - first.sum(axis=0)
    return out


class AdderGate:
    """`adder_gate`, params (numel, bits, out, leaf): the masks and correlations of one
    adder-path comparison (out = OUT_PRODUCT: and of its product with a 64-bit value;
    out = OUT_XOR: ending in a Beaver AND, DReLU in XOR shares, `adder_drelu_xor`).

    Per party, from its PRG: the leaf masks (2^w - 1 values of P/w bits per element), per
    level the AND masks (a, b1, b2), the final mask bits (alpha, beta, gamma), R.
    Party 0 also draws its shares of every derived value; party 1 receives:
    one uint8 string of the XOR-shared products (leaf: cG, cP of P/w bits each; level of
    width w: a b1, a b2 of w/2 bits each), and one int64 array of its arithmetic shares
    of 7 entries of the final truth table (and of R times them, for relu); the 8th entry
    of each is 4 (4 R) minus the other seven, computed at expansion.
    OFFLINE BYTES per element (party 1 only): packed 2 (P/w + sum_levels w/2) bits + 56
    (+ 56 for relu); n = 64, w = 2: 15.5 + 56 (+ 56). OUT_XOR: the masks of the last AND
    are (alpha, beta) and party 1 receives its share of alpha beta (1 bit, packed) instead
    of the tables: 2 (P/w + sum_levels w/2) bits + 1 bit (n = 64: 15.625; n = 14: 3.625).
    """

    name = "adder_gate"

    def deal(self, params: Params, prgs: Sequence[Prg]) -> list[list[np.ndarray]]:
        lay = _params(params)
        if len(prgs) != 2:
            raise NotImplementedError(f"adder_gate: 2 parties only, not {len(prgs)}")
        d0, d1 = (_draw(prg, p, lay) for p, prg in enumerate(prgs))
        a, b = d0["leaf_mask"], d1["leaf_mask"]  # row S - 1: mask of monomial S
        xor_values = {"leaf_c": np.stack([_cross(a, b, terms)
                                          for terms in leaf_terms(lay.leaf)])}
        for k, _ in enumerate(lay.levels):
            mask = d0[f"mask{k}"] ^ d1[f"mask{k}"]
            xor_values[f"c{k}"] = np.stack([mask[0] & mask[1], mask[0] & mask[2]])
        if lay.xor:
            final = d0["final_mask"] ^ d1["final_mask"]
            xor_values["final_c"] = (final[0] & final[1])[None]
        packed = [pack_bits(xor_values[name] ^ d0[name], width)
                  for name, width, _ in _xor_parts(lay)]
        if lay.xor:
            return [[], [np.concatenate(packed)]]
        table = final_truth_table(d0["final_mask"] ^ d1["final_mask"])[:, :TABLE - 1].T
        arith = [table - d0["table"]]
        if lay.relu:
            big_r = d0["big_r"] + d1["big_r"]
            arith.append(table * big_r - d0["r_table"])
        payload = [np.concatenate(packed) if packed else np.zeros(0, np.uint8),
                   np.ascontiguousarray(np.concatenate(arith))]
        return [[], payload]

    def expand(self, params: Params, party: int, n_parties: int, prg: Prg,
               payload: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        lay = _params(params)
        if n_parties != 2:
            raise NotImplementedError("adder_gate: 2 parties only")
        drawn = _draw(prg, party, lay)
        if party == 0:
            if payload:
                raise ValueError("adder_gate: party 0 receives no payload")
        else:
            self._receive(lay, drawn, payload)
        if lay.xor:
            return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in drawn.items()}
        drawn["table"] = _complete(drawn["table"], TABLE_SUM if party == 0 else 0)
        if lay.relu:
            drawn["r_table"] = _complete(drawn["r_table"], TABLE_SUM * drawn["big_r"])
        return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in drawn.items()}

    @staticmethod
    def _receive(lay: _Layout, drawn: dict[str, np.ndarray], payload: Sequence[np.ndarray]) -> None:
        m = lay.numel
        expected = 1 if lay.xor else 2
        if len(payload) != expected:
            raise ValueError(f"adder_gate: expected {expected} payload arrays, got {len(payload)}")
        packed = payload[0]
        parts = _xor_parts(lay)
        sizes = [packed_nbytes(rows * m, w) for _, w, rows in parts]
        if packed.dtype != np.uint8 or packed.shape != (sum(sizes),):
            raise ValueError(f"adder_gate: packed payload is {packed.dtype}{list(packed.shape)}")
        offset = 0
        for (name, width, rows), size in zip(parts, sizes, strict=True):
            drawn[name] = unpack_bits(packed[offset:offset + size], width, rows * m
                                      ).reshape(rows, m)
            offset += size
        if lay.xor:
            return
        arith = payload[1]
        rows = (TABLE - 1) * (2 if lay.relu else 1)
        if arith.dtype != np.int64 or arith.shape != (rows, m):
            raise ValueError(f"adder_gate: arithmetic payload is {arith.dtype}{list(arith.shape)}")
        drawn["table"] = arith[:TABLE - 1]
        if lay.relu:
            drawn["r_table"] = arith[TABLE - 1:]

    def zeros(self, params: Params) -> dict[str, torch.Tensor]:
        _params(params)
        return {}  # tracing never evaluates (see adder_gate)


# -- the online protocol ------------------------------------------------------------------
# Elements per adder_gate request (~32 MB of party 1's material, ~60 MB with the product):
# a larger gate takes its material as several plan requests, so that no one request outgrows
# a party's streaming window (parties/offline.py; ViT-Base's erf GeLU compares 4.2 M
# elements at once). The online protocol is the same: one message per round.
GATE_REQUEST_ELEMENTS = 1 << 19


def _gate_material(sess: Session, m: int, bits: int, out: int, leaf: int
                   ) -> dict[str, torch.Tensor]:
    """The material of one adder gate on m elements, requested in pieces of at most
    GATE_REQUEST_ELEMENTS and joined along the element axis (the tables' first, every other
    array's last): the same layout as one request's."""
    pieces = [min(GATE_REQUEST_ELEMENTS, m - i) for i in range(0, m, GATE_REQUEST_ELEMENTS)]
    first = sess.correlation("adder_gate", (pieces[0] if pieces else 0, bits, out, leaf))
    if len(pieces) <= 1 or sess.is_tracing:
        for n in pieces[1:]:
            sess.correlation("adder_gate", (n, bits, out, leaf))
        return first
    # Filled piece by piece, each piece dropped once copied: one gate's material at a time.
    joined: dict[str, torch.Tensor] = {}
    for name, t in first.items():
        axis = 0 if name in ("table", "r_table") else t.dim() - 1
        shape = list(t.shape)
        shape[axis] = m
        joined[name] = torch.empty(shape, dtype=t.dtype)
    start = 0
    for index, n in enumerate(pieces):
        mat = first if index == 0 else sess.correlation("adder_gate", (n, bits, out, leaf))
        for name, t in mat.items():
            axis = 0 if name in ("table", "r_table") else t.dim() - 1
            joined[name].narrow(axis, start, n).copy_(t)
        start += n
        del mat
        first = {}
    return joined


def _exchange_bytes(sess: Session, mine: np.ndarray, label: str) -> np.ndarray:
    """Send our uint8 string to the other party and receive theirs (same length): 1 round."""
    other = 1 - sess.party_id
    sess.send(other, mine, label)
    return sess.recv(other, label, mine.shape, torch.uint8).numpy()


def adder_gate(sess: Session, a: torch.Tensor, bits: int, mult: torch.Tensor | None = None,
               leaf: int = 2) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shares of d = DReLU(a mod 2^bits) = [a >= 0] (0/1, int64) and, if `mult` is given,
    of d * mult (same shape as a). 2 parties. leaf: block width of the leaf round (2, 4).

    Steps (P positions, L = P/w leaf blocks; see the module docstring):
    1. leaf round: each party masks its 2^w - 1 monomials of every block (L bits each)
       with its dealer masks and sends them, with mult - R (8 B) for ReLU; both compute
       XOR shares of each block's (G, P) from the cross correlation;
    2. per tree level (width v -> v/2): open P_hi ^ a, G_lo ^ b1, P_lo ^ b2 (3 v/2 bits);
       G = G_hi ^ P_hi G_lo, P = P_hi P_lo by Beaver ANDs sharing the mask a;
    3. final round: open u = P_hi ^ alpha, v = G_lo ^ beta, w = T ^ gamma (3 bits) with
       T = 1 ^ t_0 ^ t_1 ^ G_hi; d = [table][u + 2v + 4w] (the dealer's truth table of
       T ^ P_hi G_lo over the masked inputs), d * mult = (mult - R) d + [R table][same].
    ROUNDS log2(P) - log2(w) + 1 (6 for bits = 64, w = 2). BYTES per party: see
    cost_model.adder_costs.
    """
    out = OUT_DRELU if mult is None else OUT_PRODUCT
    shape = a.shape
    mat = _start(sess, a, bits, out, leaf)
    if sess.is_tracing:
        zero = torch.zeros(shape, dtype=torch.int64)
        return zero, (zero.clone() if mult is not None else None)
    mat_np = {k: v.numpy() for k, v in mat.items()}
    m = a.numel()
    mult_masked = None
    if mult is not None:
        mult_masked = (mult.reshape(-1) - mat["big_r"]).contiguous().numpy()
    top, g, prop, mult_open = _carry_tree(sess, a, bits, leaf, mat_np, mult_masked)

    # 3. final round: last AND, XOR with the top bits, B2A (and the product) at once
    t, p_hi, g_lo = _final_inputs(sess, g, prop, top)
    mine = np.stack([p_hi, g_lo, t]) ^ mat_np["final_mask"]
    got = _exchange_bytes(sess, pack_bits(mine, 1), "adder_final")
    opened = mine ^ unpack_bits(got, 1, 3 * m).reshape(3, m)
    flat = (opened[0] | (opened[1] << 1) | (opened[2] << 2)).astype(np.int64)
    flat += np.arange(0, TABLE * m, TABLE, dtype=np.int64)
    d = torch.from_numpy(np.take(mat_np["table"].reshape(-1), flat))
    product = None
    if mult_open is not None:
        picked = torch.from_numpy(np.take(mat_np["r_table"].reshape(-1), flat))
        product = (mult_open * d + picked).reshape(shape)
    return d.reshape(shape), product


def adder_drelu_xor(sess: Session, a: torch.Tensor, bits: int, leaf: int = 2) -> torch.Tensor:
    """XOR shares (uint8 0/1, a's shape) of d = DReLU(a mod 2^bits), for a consumer that
    converts d inside its next product's opening (bit_select.open_bits). 2 parties.

    Steps 1-2 as `adder_gate` (no multiplicand in the leaf round); 3. final round: the
    last AND alone, a Beaver AND on XOR shares: open u = P_hi ^ alpha, v = G_lo ^ beta
    (2 bits) and d_i = T_i ^ c_i ^ (u beta_i) ^ (v alpha_i) ^ [i = 0] u v with c = alpha
    beta from the dealer (T = 1 ^ t_0 ^ t_1 ^ G_hi is XOR-shared locally).
    ROUNDS as `adder_gate` (log2(P) - log2(w) + 1). BYTES per party: adder_costs(compact)
    (the DReLU's, with 2 final bits instead of 3). OFFLINE per element (party 1 only):
    the tree's packed products + 1 bit (bits = 14, w = 2: 3.625 B; 64: 15.625 B), no
    truth table (56 B for the arithmetic DReLU).
    """
    shape = a.shape
    mat = _start(sess, a, bits, OUT_XOR, leaf)
    if sess.is_tracing:
        return torch.zeros(shape, dtype=torch.uint8)
    mat_np = {k: v.numpy() for k, v in mat.items()}
    m = a.numel()
    top, g, prop, _ = _carry_tree(sess, a, bits, leaf, mat_np, None)
    t, p_hi, g_lo = _final_inputs(sess, g, prop, top)
    alpha, beta = mat_np["final_mask"]
    mine = np.stack([p_hi ^ alpha, g_lo ^ beta])
    got = _exchange_bytes(sess, pack_bits(mine, 1), "adder_final")
    u, v = mine ^ unpack_bits(got, 1, 2 * m).reshape(2, m)
    d = t ^ mat_np["final_c"][0] ^ (u & beta) ^ (v & alpha)
    if sess.party_id == 0:
        d ^= u & v
    return torch.from_numpy(d).reshape(shape)


def _start(sess: Session, a: torch.Tensor, bits: int, out: int, leaf: int
           ) -> dict[str, torch.Tensor]:
    if sess.n != 2:
        raise NotImplementedError("the adder path is implemented for 2 parties")
    if not 1 <= bits <= RING_BITS:
        raise ValueError(f"bits must be in [1, 64], got {bits}")
    return _gate_material(sess, a.numel(), bits, out, leaf)


def _final_inputs(sess: Session, g: np.ndarray, prop: np.ndarray, top: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, P_hi, G_lo) shares (uint8) from the last 2-lane words: T = 1 ^ t ^ G_hi."""
    one = g.dtype.type(1)
    g_hi, g_lo, p_hi = (g >> one) & one, g & one, (prop >> one) & one
    t = g_hi.astype(np.uint8) ^ top ^ np.uint8(1 - sess.party_id)
    return t, p_hi.astype(np.uint8), g_lo.astype(np.uint8)


# Elements per slice of the local work between two openings: a slice's passes stay in the
# core's cache (tens of bytes per element); the whole tensor's would stream from memory.
LOCAL_SLICE = 1 << 15


def _slices(m: int) -> list[slice]:
    return [slice(i, min(i + LOCAL_SLICE, m)) for i in range(0, m, LOCAL_SLICE)]


def _carry_tree(sess: Session, a: torch.Tensor, bits: int, leaf: int,
                mat_np: dict[str, np.ndarray], mult_masked: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor | None]:
    """Steps 1-2 of `adder_gate`: (top bit of this party's share, XOR shares of the last
    (G, P) words of 2 lanes, the opened mult - R or None). The local work between two
    openings runs slice by slice (`LOCAL_SLICE` elements); each message is the whole
    tensor's, as before."""
    party = sess.party_id
    m = a.numel()
    x = a.reshape(-1).contiguous().numpy().view(U64)
    p = positions(bits)
    width = p // leaf
    dt = word_dtype(width)
    slices = _slices(m)

    # 1. leaf round
    leaf_mask = mat_np["leaf_mask"]
    top = np.empty(m, dtype=np.uint8)
    own = np.empty(leaf_mask.shape, dtype=dt)
    mine = np.empty(leaf_mask.shape, dtype=dt)
    for s in slices:
        top[s], word = share_words(x[s], bits)
        leaf_monomials(leaf_bits(word, p, leaf), out=own[:, s])
        np.bitwise_xor(own[:, s], leaf_mask[:, s], out=mine[:, s])
    masked = pack_bits(mine, width)
    if mult_masked is not None:
        masked = np.concatenate([mult_masked.view(np.uint8), masked])
    got = _exchange_bytes(sess, masked, "adder_leaf")
    mult_open = None
    if mult_masked is not None:
        mult_open = torch.from_numpy(mult_masked + got[:8 * m].view(np.int64))
        got = got[8 * m:]
    theirs = unpack_bits(got, width, own.shape[0] * m, copy=False).reshape(own.shape)
    xs, ys = (own, theirs) if party == 0 else (theirs, leaf_mask)
    g_terms, p_terms = leaf_terms(leaf)
    c = mat_np["leaf_c"]
    g, prop = np.empty(m, dtype=dt), np.empty(m, dtype=dt)
    for s in slices:
        gs, ps = g[s], prop[s]
        _cross(xs[:, s], ys[:, s], g_terms, out=gs)
        gs ^= c[0, s]
        _cross(xs[:, s], ys[:, s], p_terms, out=ps)
        ps ^= own[-1, s]  # this party's local term
        ps ^= c[1, s]

    # 2. tree levels
    for lvl, w in enumerate(level_widths(bits, leaf)):
        half = w // 2
        hdt = word_dtype(half)
        sh, lowmask = dt.type(half), dt.type(low_mask(half))
        mask = mat_np[f"mask{lvl}"]
        g_hi, mine = np.empty(m, dtype=hdt), np.empty((3, m), dtype=hdt)
        for s in slices:  # mine = (P_hi, G_lo, P_lo) ^ mask
            np.right_shift(g[s], sh, out=g_hi[s], casting="unsafe")
            np.right_shift(prop[s], sh, out=mine[0, s], casting="unsafe")
            np.bitwise_and(g[s], lowmask, out=mine[1, s], casting="unsafe")
            np.bitwise_and(prop[s], lowmask, out=mine[2, s], casting="unsafe")
            mine[:, s] ^= mask[:, s]
        got = _exchange_bytes(sess, pack_bits(mine, half), f"adder_level{lvl}")
        theirs = unpack_bits(got, half, 3 * m).reshape(3, m)
        g, prop, dt = g_hi, np.empty(m, dtype=hdt), hdt
        _beaver_ands(party, theirs, mine, mask, mat_np[f"c{lvl}"], g, prop, slices)
    return top, g, prop, mult_open


def _beaver_ands(party: int, theirs: np.ndarray, mine: np.ndarray, mask: np.ndarray,
                 cl: np.ndarray, g: np.ndarray, prop: np.ndarray, slices: list[slice]) -> None:
    """One tree level's Beaver ANDs, step 2 of `adder_gate`, slice by slice: with the
    opened (u, v1, v2) = theirs ^ mine = (P_hi ^ a, G_lo ^ b1, P_lo ^ b2) (theirs is
    overwritten), g (= G_hi) ^= c1 ^ u b1 ^ v1 a [^ u v1] and prop = c2 ^ u b2 ^ v2 a
    [^ u v2] ([...]: party 0 only)."""
    term = np.empty(LOCAL_SLICE, dtype=g.dtype)
    for s in slices:
        u, v1, v2 = (theirs[k, s] for k in range(3))
        u ^= mine[0, s]
        v1 ^= mine[1, s]
        v2 ^= mine[2, s]
        t = term[:s.stop - s.start]
        gs, ps = g[s], prop[s]
        gs ^= cl[0, s]
        np.bitwise_and(v1, mask[0, s], out=t)
        gs ^= t
        _and_plus(u, mask[1, s], v1 if party == 0 else None, t)
        gs ^= t
        np.bitwise_and(v2, mask[0, s], out=ps)
        ps ^= cl[1, s]
        _and_plus(u, mask[2, s], v2 if party == 0 else None, t)
        ps ^= t


def _and_plus(u: np.ndarray, b: np.ndarray, v: np.ndarray | None, out: np.ndarray) -> None:
    """out = u b, or u b ^ u v = u (b ^ v) when v is given (party 0's extra term)."""
    if v is None:
        np.bitwise_and(u, b, out=out)
    else:
        np.bitwise_xor(b, v, out=out)
        out &= u
