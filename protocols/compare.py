"""Comparison, DReLU, ReLU, select and maximum on additive shares (2 parties + dealer).

Four paths, picked per call by `method`:
- "fss": dealer-assisted function secret sharing (as in SIGMA / Orca): the parties open
  the input masked by the dealer's r (1 round) and evaluate DCF keys locally.
  DReLU uses dcf.py's key (`drelu_fss`); ReLU uses the two-word DCF of relu_fss.py
  (`relu_fss`) so that DReLU and DReLU * x come out of ONE opening: 1 round.
- "fss_compact": the ReLU gate on the compact one-bit DCF (dcf_bit.py, `drelu_xor`, 1
  round) whose XOR-shared bit converts inside the product's opening (bit_select.py,
  `open_bits`, 1 round): 2 rounds, keys 2-4.4x smaller than "fss"'s. A DReLU
  asked with "fss_compact" runs the "fss" key (no arithmetic compact DReLU).
- "adder": conversion to binary shares and a carry-out tree (binary.py, `adder_gate`):
  log2(P) rounds (6 for 64 bits; one fewer with 4-bit leaves, which the cost model picks
  where a round costs more than their extra bytes), about 24-32 B per element per party,
  cheap to compute.
- "adder_compact": the ReLU gate on the adder whose final round is the last AND alone, d
  in XOR shares (binary.adder_drelu_xor), converted with the product inside ONE
  bit_select opening (`open_bits`): one round more than "adder", the same online bytes,
  and 16.125 B of dealer material per element plus the tree's instead of 112 B of
  truth-table shares (64 bits: 31.625 B against 127.5 B; Circa's 14 bits: 19.625 B
  against 115.5 B). A DReLU asked with "adder_compact" runs "adder".
- "auto": the lowest estimate of cost_model.CostModel for the session's network, among
  the four for a ReLU gate (fss and adder for a DReLU); the choice shows in the report as
  a sub-scope named after the path ("fss"/"fss_compact"/"adder"/"adder_compact") and in
  `auto_choices`.

Per element, 64-bit inputs, 2 parties, online bytes for BOTH parties together
(payload; each message adds a ~50-60 B header); offline: the dealer's payload to both:

| op | fss rounds | fss online | fss offline | adder rounds | adder online | adder offline |
|---|---|---|---|---|---|---|
| drelu | 1 | 16 | 3048 | 6 | 47.4 | 71.5 |
| relu, relu_and_drelu | 1 | 16 | 4080 | 6 | 63.4 | 127.5 |
| max of two (per pair) | 1 | 16 | 4080 | 6 | 63.4 | 127.5 |

(adder columns with 2-bit leaves; with 4-bit leaves relu is 5 rounds, 87.3 B, 119.5 B.)
adder_compact relu / max of two (2-bit leaves): 7 rounds, 63.25 B online, 31.625 B offline
(all to party 1; 4-bit leaves: 6 rounds, 87.25 B, 23.625 B).
fss_compact relu / max of two: 2 rounds, 32.25 B online, 1854.125 B offline (919 to party
0, 935.125 to party 1); at 24 bits 24.25 B and 564.125 B (274 / 290.125: the <= 300 B
per element per party of issue 15 holds up to 24 bits), at 32 bits 24.25 B and 822.125 B.

`select` is a Beaver product (1 round, 32 B both parties, 8 B offline). n > 2 parties:
NotImplementedError (FSS keys and the binary leaf protocol are two-party).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from privit.parties.config import NETWORK_PRESETS
from privit.parties.session import Session
from privit.protocols import beaver
from privit.protocols.binary import adder_drelu_xor, adder_gate
from privit.protocols.bit_select import open_bits
from privit.protocols.cost_model import DEFAULT_COST_MODEL, CostModel, wire_itemsize
from privit.protocols.dcf import DreluMaterial, drelu_eval
from privit.protocols.dcf_bit import BitDreluMaterial, bit_drelu_eval
from privit.protocols.fss_correlations import bit_dcf_keys, drelu_dcf_keys, relu_corrections
from privit.protocols.relu_fss import relu_gate_eval

RING_BITS = 64
METHODS = ("auto", "fss", "fss_compact", "adder", "adder_compact")
_WIRE = {1: torch.uint8, 2: torch.uint16, 4: torch.uint32, 8: torch.int64}
_NP_WIRE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.int64}


@dataclass(frozen=True)
class ComparisonConfig:
    """How comparisons run: method "auto" | "fss" | "fss_compact" | "adder" |
    "adder_compact", and the cost model for auto."""

    method: str = "auto"
    cost_model: CostModel = field(default=DEFAULT_COST_MODEL)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown comparison method {self.method!r}; choose from {METHODS}")


Method = str | ComparisonConfig


def _config(method: Method) -> ComparisonConfig:
    return method if isinstance(method, ComparisonConfig) else ComparisonConfig(method)


@dataclass(frozen=True)
class Plan:
    """What a comparison runs: method "fss" | "adder", the adder's leaf width, and whether
    the comparison leaves its bit in XOR shares (`compact`; a ReLU gate then converts it
    with bit_select: one round more): for "fss" the compact bit keys (drelu_xor) instead
    of the wide ones, for "adder" the XOR ending (adder_drelu_xor) instead of the truth
    tables."""

    method: str
    leaf: int = 2
    compact: bool = False

    @property
    def name(self) -> str:
        """The path's name in reports (sub-scope, auto_choices): fss, fss_compact, adder,
        adder_compact."""
        return f"{self.method}_compact" if self.compact else self.method


def plan_comparison(sess: Session, method: Method, numels: Sequence[int], bits: int,
                    product: bool, shared_mask: bool = True, compact: bool = False) -> Plan:
    """The path (auto: the cost model's lowest estimate for the session's network, among
    the wide FSS key, the adder and, for ReLU gates (`product`), their compact variants)
    and, for the adder, its leaf width (always the cost model's choice), for sequential
    comparisons on `numels` elements. `compact`: the caller takes the bits in XOR shares
    (GeLU's drelu_xor, product=False; on the adder path adder_drelu_xor).
    "fss_compact" / "adder_compact" asked for a DReLU without `compact` run "fss" /
    "adder" (the arithmetic DReLU has no compact variant)."""
    cfg = _config(method)
    if sess.n != 2:
        raise NotImplementedError(
            f"comparisons are implemented for 2 parties (+ dealer), not {sess.n}")
    network = sess.cfg.network
    chosen = cfg.method
    model = cfg.cost_model
    if model.objective != sess.cfg.auto_objective:
        model = replace(model, objective=sess.cfg.auto_objective)
    if chosen == "auto":
        chosen = model.choose(numels, bits, product, network, shared_mask, compact)
        # For the report: what auto picked here, and would pick on the LAN and WAN presets.
        sess.counters.note_choice("compare", {
            "run": _plan(chosen, product, compact).name, **{
                name: _plan(model.choose(numels, bits, product, NETWORK_PRESETS[name],
                                         shared_mask, compact), product, compact).name
                for name in ("lan", "wan")}})
    plan = _plan(chosen, product, compact)
    if plan.method == "adder":
        return replace(plan, leaf=model.adder_leaf(numels, bits, product, network,
                                                   plan.compact))
    return plan


def _plan(chosen: str, product: bool, compact: bool) -> Plan:
    method = "adder" if chosen in ("adder", "adder_compact") else "fss"
    return Plan(method, compact=compact or (product and chosen.endswith("_compact")))


def choose_method(sess: Session, method: Method, numels: Sequence[int], bits: int,
                  product: bool, shared_mask: bool = True) -> str:
    """The path's name (cost_model.PATHS) for sequential comparisons on `numels` elements
    (auto: cost model)."""
    return plan_comparison(sess, method, numels, bits, product, shared_mask).name


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= RING_BITS:
        raise ValueError(f"bits must be in [1, 64], got {bits}")


def _u64(x: torch.Tensor) -> np.ndarray:
    return x.reshape(-1).contiguous().numpy().view(np.uint64)


def _low(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1) if bits < RING_BITS else np.uint64(0xFFFF_FFFF_FFFF_FFFF)


def _open_masked(sess: Session, parts: Sequence[tuple[np.ndarray, int]], label: str
                 ) -> list[np.ndarray]:
    """Open values masked by the dealer, each sent in its smallest wire dtype, all in one
    message: parts = (this party's uint64 masked share, bits). Returns each sum mod 2^bits
    (uint64). ROUNDS 1, BYTES sum(numel * wire_itemsize(bits)) + one header."""
    other = 1 - sess.party_id
    if len(parts) == 1:
        values, bits = parts[0]
        size = wire_itemsize(bits)
        mine = (values & _low(bits)).astype(_NP_WIRE[size])
        sess.send(other, mine, label)
        theirs = sess.recv(other, label, mine.shape, _WIRE[size]).numpy()
        return [(mine.astype(np.uint64) + theirs.astype(np.uint64)) & _low(bits)]
    pieces = [(values & _low(bits)).astype(_NP_WIRE[wire_itemsize(bits)]) for values, bits in parts]
    mine = np.concatenate([p.view(np.uint8) for p in pieces])
    sess.send(other, mine, label)
    theirs = sess.recv(other, label, mine.shape, torch.uint8).numpy()
    out, offset = [], 0
    for piece, (_, bits) in zip(pieces, parts, strict=True):
        got = theirs[offset:offset + piece.nbytes].view(piece.dtype)
        offset += piece.nbytes
        out.append((piece.astype(np.uint64) + got.astype(np.uint64)) & _low(bits))
    return out


def _as_ring(values: np.ndarray, shape: torch.Size) -> torch.Tensor:
    return torch.from_numpy(values.view(np.int64)).reshape(shape)


# -- the FSS path --------------------------------------------------------------------------
# Elements per FSS key request (64-bit relu_fss keys: 134 MB of party 1's material; 32-bit
# compact bit keys: 26 MB): a larger comparison takes its keys as several plan requests, so
# that no one request outgrows a party's streaming window (parties/offline.py: the bench's
# 197 x 768 ReLU is 310 MB of keys, the teacher's erf GeLU 90 MB per party of compact keys).
# The online protocol is the same: one opening for all pieces.
FSS_REQUEST_ELEMENTS = 1 << 16


def _request_pieces(m: int) -> list[tuple[int, int]]:
    """(start, count) of each FSS key request for m elements; one empty request for m = 0."""
    return [(i, min(FSS_REQUEST_ELEMENTS, m - i)) for i in range(0, m, FSS_REQUEST_ELEMENTS)
            ] or [(0, 0)]


def _dcf_in_pieces(sess: Session, x: torch.Tensor, bits: int, kind: str, dtype: type,
                   evaluate: Callable[[dict[str, torch.Tensor], np.ndarray, np.ndarray],
                                      np.ndarray]) -> np.ndarray | None:
    """The DReLU of an FSS key `kind` (params (count, bits), material r_share and its keys)
    on x: the keys requested in pieces of FSS_REQUEST_ELEMENTS, x + r opened once (label
    `kind`), then `evaluate(material, r, x_hat)` piece by piece into a flat `dtype` array.
    None while tracing (the requests made)."""
    pieces = _request_pieces(x.numel())
    mats = [sess.correlation(kind, (n, bits)) for _, n in pieces]
    if sess.is_tracing:
        return None
    r = np.concatenate([mat["r_share"].numpy() for mat in mats])
    (x_hat,) = _open_masked(sess, [(_u64(x) + r, bits)], kind)
    out: np.ndarray = np.empty(x.numel(), dtype)
    for (start, n), mat in zip(pieces, mats, strict=True):
        part = slice(start, start + n)
        out[part] = evaluate(mat, r[part], x_hat[part])
    return out


def _drelu_fss(sess: Session, x: torch.Tensor, bits: int) -> torch.Tensor:
    """DReLU by dcf.py's key: 1. open x + r mod 2^n (n bits each, 1 round);
    2. drelu_eval locally, piece by piece of FSS_REQUEST_ELEMENTS.
    ROUNDS 1, BYTES numel * wire_itemsize(n) per party, OFFLINE (48 n - 24) numel."""
    def evaluate(mat: dict[str, torch.Tensor], r: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
        material = DreluMaterial(r, mat["msb_share"].numpy(), drelu_dcf_keys(mat))
        return drelu_eval(sess.party_id, material, x_hat)

    out = _dcf_in_pieces(sess, x, bits, "drelu_fss", np.uint64, evaluate)
    if out is None:
        return torch.zeros(x.shape, dtype=torch.int64)
    return _as_ring(out, x.shape)


def _gate_fss(sess: Session, a: torch.Tensor, bits: int, x: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """DReLU(a) and DReLU(a) * x (x = a when None) from one opening (relu_fss.py).

    1. open a + r mod 2^n and x + R mod 2^64 (one value when x is a and n = 64: r = R);
    2. evaluate the two-word DCF locally, piece by piece of FSS_REQUEST_ELEMENTS.
    ROUNDS 1, BYTES numel * 8 per party when shared, numel * (wire_itemsize(n) + 8)
    otherwise; OFFLINE (64 n - 16) numel.
    """
    shared = x is None and bits == RING_BITS
    m = a.numel()
    pieces = _request_pieces(m)
    mats = [sess.correlation("relu_fss", (n, bits, int(shared))) for _, n in pieces]
    if sess.is_tracing:
        zero = torch.zeros(a.shape, dtype=torch.int64)
        return zero, zero.clone()
    mult = a if x is None else x
    big_r = np.concatenate([mat["big_r_share"].numpy() for mat in mats])
    if shared:
        (x_hat,) = _open_masked(sess, [(_u64(a) + big_r, RING_BITS)], "relu_fss")
        a_hat = x_hat
    else:
        r = np.concatenate([mat["r_share"].numpy() for mat in mats])
        a_hat, x_hat = _open_masked(sess, [(_u64(a) + r, bits), (_u64(mult) + big_r, RING_BITS)],
                                    "relu_fss")
    d, product = np.empty(m, np.uint64), np.empty(m, np.uint64)
    for (start, n), mat in zip(pieces, mats, strict=True):
        part = slice(start, start + n)
        d[part], product[part] = relu_gate_eval(
            sess.party_id, bits, mat["root_seed"].numpy(), relu_corrections(mat),
            mat["msb_share"].numpy(), mat["r_msb_share"].numpy(), big_r[part], a_hat[part],
            x_hat[part])
    return _as_ring(d, a.shape), _as_ring(product, a.shape)


# -- public API ------------------------------------------------------------------------------
def drelu(sess: Session, x: torch.Tensor, *, method: Method = "auto", bits: int = 64
          ) -> torch.Tensor:
    """Arithmetic int64 shares of DReLU(x) = 1{x >= 0} (0/1, not fixed-point scaled).

    Only the low `bits` bits of x count: x must satisfy |x| < 2^(bits-1) (as a signed
    ring value). Steps: fss: open x + r mod 2^bits (1 round), evaluate the DReLU DCF
    key (method "fss_compact" runs this wide key too: no arithmetic compact DReLU);
    adder: binary.adder_gate without product.
    ROUNDS fss 1, adder log2(P) (6 at 64 bits). BYTES per element per party: fss
    wire_itemsize(bits) (8 at 64 bits), adder cost_model.adder_costs (23.625 at 64 bits).
    OFFLINE per element: fss 48 bits - 24 (3048 at 64), adder 71.5 at 64 bits. (For the
    bit in XOR shares, 15.625 B offline on the adder at 64 bits: `drelu_xor`.)
    """
    _check_bits(bits)
    plan = plan_comparison(sess, method, [x.numel()], bits, product=False)
    with sess.scope(plan.method):
        if plan.method == "fss":
            return _drelu_fss(sess, x, bits)
        return adder_gate(sess, x, bits, leaf=plan.leaf)[0]


def drelu_xor(sess: Session, x: torch.Tensor, *, bits: int = 64, plan: Plan | None = None
              ) -> torch.Tensor:
    """XOR shares (uint8 0/1, x's shape) of DReLU(x), for consumers that convert the bits
    inside their next product's opening (bit_select.py). |x| < 2^(bits-1) as for `drelu`.
    plan: None or an "fss" plan: the compact bit DCF (dcf_bit.py, kind `drelu_bit_fss`);
    an "adder" plan: binary.adder_drelu_xor with its leaf width.
    fss steps: 1. open x + r mod 2^bits (1 round); 2. bit_drelu_eval locally.
    ROUNDS fss 1, adder log2(P) - log2(w) + 1 (as `drelu`). BYTES per party: fss numel
    wire_itemsize(bits) (as `drelu`), adder cost_model.adder_costs(compact=True) (the
    DReLU's minus 1 bit per element). OFFLINE per element: fss 2 bit_dcf_cw_bytes(bits -
    1) + 1/8 (bits = 32: 806, against 1512 for `drelu`), adder the tree's packed products
    + 1/8 (bits = 32: 7.625, against 63.5 for `drelu`)."""
    _check_bits(bits)
    if sess.n != 2:
        raise NotImplementedError(f"comparisons are implemented for 2 parties, not {sess.n}")
    if plan is not None and plan.method == "adder":
        with sess.scope("adder"):
            return adder_drelu_xor(sess, x, bits, leaf=plan.leaf)
    with sess.scope("fss"):
        return _drelu_bits(sess, x, bits)


def _drelu_bits(sess: Session, x: torch.Tensor, bits: int) -> torch.Tensor:
    def evaluate(mat: dict[str, torch.Tensor], r: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
        material = BitDreluMaterial(r, mat["msb_share"].numpy(), bit_dcf_keys(mat, bits))
        return bit_drelu_eval(sess.party_id, material, x_hat)

    out = _dcf_in_pieces(sess, x, bits, "drelu_bit_fss", np.uint8, evaluate)
    if out is None:
        return torch.zeros(x.shape, dtype=torch.uint8)
    return torch.from_numpy(out).reshape(x.shape)


def _gate_fss_compact(sess: Session, a: torch.Tensor, bits: int, x: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """DReLU(a) and DReLU(a) * x (x = a when None) on the compact bit keys, in 2 rounds:
    1. drelu_xor's opening of a + r mod 2^n and its bit DCF: d in XOR shares;
    2. bit_select.open_bits (K = 1): d and d x in additive shares.
    ROUNDS 2. BYTES per party: numel wire_itemsize(n) + H, then ceil(numel / 8) + 8 numel
    + H. OFFLINE per element, c = dcf_bit.bit_dcf_cw_bytes(n - 1): party 0 c, party 1
    c + 1/8 + 16 (n = 24: 274 and 290.125 B; n = 64: 919 and 935.125 B).
    """
    d_bits = _drelu_bits(sess, a, bits)
    mult = a if x is None else x
    opened = open_bits(sess, d_bits.unsqueeze(0), mult, square=False, label="relu_bit")
    return opened.bits[0], opened.products[0]


def relu_gate(sess: Session, a: torch.Tensor, x: torch.Tensor | None = None, *, bits: int = 64,
              method: Method = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """(DReLU(a), DReLU(a) * x) with x = a when None; a compared on its low `bits` bits.

    The core of relu / maximum and of Circa's stochastic ReLU (a = truncated x). x is any
    ring value (no truncation: DReLU is 0/1). Paths: "fss" (the wide key, 1 round),
    "fss_compact" (the bit key + bit_select, 2 rounds, `_gate_fss_compact`), "adder"
    (log2(P) rounds), "adder_compact" (the adder's XOR ending + bit_select, log2(P) + 1
    rounds, `_gate_adder_compact`); "auto" the cost model's choice of the four. The
    report's sub-scope names the path that ran.
    ROUNDS at 64 bits (2-bit leaves): fss 1, fss_compact 2, adder 6, adder_compact 7.
    BYTES per element per party: fss 8 (x = a, bits = 64) or wire_itemsize(bits) + 8;
    fss_compact wire_itemsize(bits) + 8 + 1/8; adder and adder_compact
    cost_model.adder_costs(product=True) (both 31.625 at 64 bits, 13.625 at 14).
    OFFLINE per element: fss 64 bits - 16 (4080 at 64); fss_compact
    2 bit_dcf_cw_bytes(bits - 1) + 16.125 (564.125 at 24 bits, 1854.125 at 64); adder
    127.5 at 64 bits (115.5 at 14); adder_compact 31.625 at 64 bits (19.625 at 14).
    """
    _check_bits(bits)
    if x is not None and x.shape != a.shape:
        raise ValueError(f"relu_gate: shapes differ, {tuple(a.shape)} and {tuple(x.shape)}")
    shared = x is None and bits == RING_BITS
    plan = plan_comparison(sess, method, [a.numel()], bits, product=True, shared_mask=shared)
    with sess.scope(plan.name):
        return _gate(sess, a, bits, x, plan)


def _gate_adder_compact(sess: Session, a: torch.Tensor, bits: int, x: torch.Tensor | None,
                        leaf: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DReLU(a) and DReLU(a) * x (x = a when None) on the adder ending in XOR shares:
    1. binary.adder_drelu_xor: the carry tree, the last AND alone (2 masked bits);
    2. bit_select.open_bits (K = 1): d and d x in additive shares.
    ROUNDS log2(P) - log2(w) + 2 (64 bits, w = 2: 7; 14 bits: 5, w = 4: 4). BYTES per party:
    cost_model.adder_costs(product, compact) (64 bits, w = 2: 31.625; 14 bits: 13.625, as
    "adder"). OFFLINE per element, all to party 1: the tree's packed products + 1/8 + 16
    (64 bits, w = 2: 31.625; 14 bits: 19.625, w = 4: 17.625).
    """
    d_bits = adder_drelu_xor(sess, a, bits, leaf=leaf)
    mult = a if x is None else x
    opened = open_bits(sess, d_bits.unsqueeze(0), mult, square=False, label="relu_bit")
    return opened.bits[0], opened.products[0]


def _gate(sess: Session, a: torch.Tensor, bits: int, x: torch.Tensor | None, plan: Plan
          ) -> tuple[torch.Tensor, torch.Tensor]:
    if plan.method == "fss":
        return (_gate_fss_compact if plan.compact else _gate_fss)(sess, a, bits, x)
    if plan.compact:
        return _gate_adder_compact(sess, a, bits, x, plan.leaf)
    d, product = adder_gate(sess, a, bits, a if x is None else x, leaf=plan.leaf)
    assert product is not None
    return d, product


def relu_and_drelu(sess: Session, x: torch.Tensor, *, method: Method = "auto", bits: int = 64
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(shares of max(x, 0) in x's fixed point, shares of DReLU(x) as 0/1), together.

    Steps: `relu_gate(x)`: fss: open x + r (64 bits, 1 round), two-word DCF gives d and
    d * x = x_hat * d - r * d; adder: carry tree, the product with x folded into the last
    round. Exact (no truncation, no error). ROUNDS fss 1, adder 6 (64 bits).
    BYTES per element per party: fss 8, adder 31.625. OFFLINE: fss 4080, adder 127.5.
    bits < 64 (|x| < 2^(bits-1)): fss opens bits + 64 bits, keys (64 bits - 16) B.
    fss_compact: 2 rounds, 16.125 B online per element per party, 1854.125 B offline;
    adder_compact: 7 rounds, 31.625 B, 31.625 B offline (64 bits; `relu_gate`).
    """
    d, product = relu_gate(sess, x, None, bits=bits, method=method)
    return product, d


def relu(sess: Session, x: torch.Tensor, *, method: Method = "auto", bits: int = 64
         ) -> torch.Tensor:
    """Shares of max(x, 0) (fixed point in, fixed point out, exact). Costs as
    `relu_and_drelu`: fss 1 round, 8 B per element per party online, 4080 B offline;
    fss_compact 2 rounds, 16.125 B, 1854.125 B; adder 6 rounds, 31.625 B online, 127.5 B
    offline; adder_compact 7 rounds, 31.625 B, 31.625 B (64 bits, 2-bit leaves)."""
    return relu_gate(sess, x, None, bits=bits, method=method)[1]


def select(sess: Session, bit: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Shares of bit * a + (1 - bit) * b = b + bit * (a - b); bit: arithmetic 0/1 shares.

    One Beaver product without truncation (bit is an integer). ROUNDS 1,
    BYTES (n-1)(H + 16 numel) per party, OFFLINE 8 numel (beaver_mul).
    """
    a, b = torch.broadcast_tensors(a, b)
    return b + beaver.beaver_mul(sess, bit, a - b, truncate=False)


def maximum(sess: Session, x: torch.Tensor, dim: int = -1, *, method: Method = "auto",
            bits: int = 64) -> torch.Tensor:
    """Shares of x.max(dim) (keepdim=False), exact, by a tree of max(a, b) = b + ReLU(a - b).

    Steps: per level, pair elements (0, 1), (2, 3), ... along `dim` (an odd length carries
    its last element to the next level) and compute every pair of the level with ONE
    batched relu on the differences. ceil(log2(L)) levels (L = 197: 8).
    ROUNDS levels * (1 on fss, 2 on fss_compact, 6 on adder, 7 on adder_compact; 64 bits).
    BYTES per pair per party: as `relu` (fss 8, fss_compact 16.125, adder and adder_compact
    31.625). OFFLINE per pair: as `relu`.
    |a - b| must stay below 2^(bits-1).
    """
    _check_bits(bits)
    x = x.movedim(dim, -1)
    if x.shape[-1] == 0:
        raise ValueError("maximum over an empty dimension")
    numels, length = [], x.shape[-1]
    while length > 1:
        numels.append(x[..., 0].numel() * (length // 2))
        length = (length + 1) // 2
    plan = (plan_comparison(sess, method, numels, bits, product=True) if numels
            else Plan("fss"))
    with sess.scope(plan.name):
        while x.shape[-1] > 1:
            length = x.shape[-1]
            pairs = length // 2
            left, right = x[..., 0:2 * pairs:2], x[..., 1:2 * pairs:2]
            best = right + _gate(sess, left - right, bits, None, plan)[1]
            x = torch.cat([best, x[..., -1:]], dim=-1) if length % 2 else best
    return x.squeeze(-1)
