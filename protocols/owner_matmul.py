"""One-sided products x @ W where one party (the model owner) knows the weight W in plaintext.

The generic fixed-weight product (beaver.fixed_matmul) treats W as a secret share and
opens x - A to every party per query. When W belongs to one party, only the other party's
share of x needs masking, and only towards the owner. Two parties, owner o, client c:

Once per model (`prepare_owner_weights`, all weights of a model in ONE message):
1. Dealer (`owner_mask`): a mask B (k, m) that the owner draws from its own dealer PRG
   (no payload); the dealer remembers under the request's plan index (mask id) how to
   draw B again, and draws it at each query (it does not hold every mask until its use).
2. The owner sends E = W - B to the client (one message for every weight together).
   ROUNDS 0 (send-only for the owner; the client only waits) and BYTES
   H + 8 * sum(k m) from the owner, none from the client. OFFLINE 0 payload bytes.

Per query (`owner_matmul`, `owner_matmul_many` for several products in one message):
1. Dealer (`owner_matmul_triple`): A (*batch, n, k) drawn by the client from its PRG,
   C_o (*batch, n, m) drawn by the owner from its PRG, and the client receives
   C_c = A @ B - C_o.
2. The client sends D = x_c - A to the owner only.
3. Owner: Z_o = (x_o + D) @ W + C_o.  Client: Z_c = A @ E + C_c.
   Z_o + Z_c = (x - A) @ W + A @ (W - B) + A @ B = x @ W.
   The owner's product is exact with any kernel; when every weight of the call is within
   the public bound |w| <= OWNER_WEIGHT_BOUND (real units: |W| <= 2^(f+4), f + 5 signed
   bits) it holds W as a `ring.NarrowWeight` and may use `ring.ring_matmul_narrow` (one
   limb of W: 3 GEMMs instead of 6-10 at ViT-Base's shapes). Which kernel: PRIVIT_MATMUL=
   int64 forces torch's int64 kernel, =limbs the narrow kernel (the general limb kernel if
   the weights exceed the bound), auto the cheapest that `ring.choose_matmul_method`
   predicts on this machine for the (public) shapes. The client's A @ E (E uniform) uses
   `ring.ring_matmul` as before.
4. Truncate (`truncation.truncate`; with 2 parties by default exact: 1 round for every
   product of the call together, one bit per element each way).
   ROUNDS: the client never waits (0); the owner waits for D, which counts as a round
   only if it has sent since its last wait. BYTES H + 8 * batch n k from the client only
   (half of fixed_matmul's two-way opening), + truncation. OFFLINE 8 * batch n m to the
   client (as fixed_matmul_triple).

Security (semi-honest, dealer not colluding): the client sees E = W - B with B uniform and
unknown to it; the owner sees D = x_c - A with A uniform and unknown to it, fresh per
query. Both are one-time pads over Z_2^64. With n != 2 parties use beaver.fixed_matmul.

Timing (a side channel outside the model above, docs/security.md): the owner's compute
time is visible to the client (it waits for the owner's next message). Whether the owner
uses the narrow kernel is decided ONCE per `prepare_owner_weights` call (one per model)
against the public bound, so its time reveals exactly one bit about the weights: whether
every weight of the call satisfies |w| <= OWNER_WEIGHT_BOUND. The kernel per product then
depends only on public shapes, the thread count and the machine's calibration; the
narrow plan's limb count depends on k and the public bound only, never on the values.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from privit.parties.prg import Prg
from privit.parties.session import Params, Session
from privit.protocols import ring, truncation
from privit.protocols.correlations import MaskBook

OWNER_WEIGHT_BOUND_LOG2 = 4
OWNER_WEIGHT_BOUND = 2.0**OWNER_WEIGHT_BOUND_LOG2
"""The public bound on the owner's real weights, |w| <= 16, under which its products use
the narrow kernel (the module docstring). Real ViT weights lie well within it; the
widest with 3 GEMMs at ViT-Base's k = 3072 with f = 16 (`ring.narrow_plan`)."""

OWNER_MASK = "owner_mask"
OWNER_MATMUL_TRIPLE = "owner_matmul_triple"


# -- correlations --------------------------------------------------------------------------
def _nonneg_ints(params: Params, what: str) -> tuple[int, ...]:
    out = []
    for p in params:
        if not isinstance(p, int) or isinstance(p, bool) or p < 0:
            raise ValueError(f"{what}: parameter {p!r} is not a non-negative int")
        out.append(p)
    return tuple(out)


def _owner_params(params: Params, what: str, min_len: int) -> tuple[int, int, tuple[int, ...]]:
    """(mask_id, owner, rest) with owner in {0, 1}."""
    dims = _nonneg_ints(params, what)
    if len(dims) < min_len:
        raise ValueError(f"{what}: expected at least {min_len} parameters, got {params!r}")
    if dims[1] not in (0, 1):
        raise ValueError(f"{what}: owner must be party 0 or 1, got {dims[1]}")
    return dims[0], dims[1], dims[2:]


class OwnerMask:
    """B (k, m), known to the owner only. params = (mask_id, owner, k, m). No payload."""

    name = OWNER_MASK

    def __init__(self, book: MaskBook) -> None:
        self.book = book

    def _shape(self, params: Params) -> tuple[int, int, tuple[int, int]]:
        mask_id, owner, rest = _owner_params(params, self.name, 4)
        if len(rest) != 2:
            raise ValueError(f"{self.name}: params are (mask_id, owner, k, m), got {params!r}")
        return mask_id, owner, (rest[0], rest[1])

    def deal(self, params: Params, prgs: Sequence[Prg]) -> list[list[np.ndarray]]:
        if len(prgs) != 2:
            raise ValueError(f"{self.name} needs exactly 2 parties, got {len(prgs)}")
        mask_id, owner, shape = self._shape(params)
        # B is the first draw of the owner's stream for this request: drawn again at each
        # query rather than kept from the weights step to the matmul.
        prg = prgs[owner]
        self.book.put_drawn(mask_id, shape, lambda: prg.restarted().ring(shape))
        return [[], []]

    def expand(self, params: Params, party: int, n_parties: int, prg: Prg,
               payload: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        _, owner, shape = self._shape(params)
        if n_parties != 2 or payload:
            raise ValueError(f"{self.name}: 2 parties and no payload expected")
        return {"b": prg.ring(shape)} if party == owner else {}

    def zeros(self, params: Params) -> dict[str, torch.Tensor]:
        _, _, shape = self._shape(params)
        return {"b": torch.zeros(shape, dtype=torch.int64)}


class OwnerMatmulTriple:
    """One query: A (*batch, n, k) for the client, C_o + C_c = A @ B for the mask `mask_id`.
    params = (mask_id, owner, *batch, n, k, m). Payload: C_c (8 batch n m bytes) to the client."""

    name = OWNER_MATMUL_TRIPLE

    def __init__(self, book: MaskBook) -> None:
        self.book = book

    def _shapes(self, params: Params) -> tuple[int, int, tuple[int, ...], tuple[int, ...], int, int]:
        mask_id, owner, rest = _owner_params(params, self.name, 5)
        batch, n, k, m = rest[:-3], rest[-3], rest[-2], rest[-1]
        return mask_id, owner, (*batch, n, k), (*batch, n, m), k, m

    def deal(self, params: Params, prgs: Sequence[Prg]) -> list[list[np.ndarray]]:
        if len(prgs) != 2:
            raise ValueError(f"{self.name} needs exactly 2 parties, got {len(prgs)}")
        mask_id, owner, a_shape, c_shape, k, m = self._shapes(params)
        client = 1 - owner
        b = self.book.get(mask_id, k, m)
        a = prgs[client].ring(a_shape)
        c_owner = prgs[owner].ring(c_shape)
        c_client = ring.ring_matmul(a, b) - c_owner
        out: list[list[np.ndarray]] = [[], []]
        out[client] = [c_client.contiguous().numpy()]
        return out

    def expand(self, params: Params, party: int, n_parties: int, prg: Prg,
               payload: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        _, owner, a_shape, c_shape, _, _ = self._shapes(params)
        if n_parties != 2:
            raise ValueError(f"{self.name} needs exactly 2 parties")
        if party == owner:
            if payload:
                raise ValueError(f"{self.name}: the owner expects no payload")
            return {"c": prg.ring(c_shape)}
        if len(payload) != 1:
            raise ValueError(f"{self.name}: expected 1 payload array, got {len(payload)}")
        arr = payload[0]
        if arr.dtype != np.int64 or tuple(arr.shape) != c_shape:
            raise ValueError(f"{self.name}: payload is {arr.dtype}{list(arr.shape)}, "
                             f"expected int64{list(c_shape)}")
        a = prg.ring(a_shape)
        return {"a": a, "c": torch.from_numpy(np.array(arr, dtype=np.int64, copy=True))}

    def zeros(self, params: Params) -> dict[str, torch.Tensor]:
        _, _, a_shape, c_shape, _, _ = self._shapes(params)
        return {"a": torch.zeros(a_shape, dtype=torch.int64),
                "c": torch.zeros(c_shape, dtype=torch.int64)}


def owner_kinds() -> dict[str, OwnerMask | OwnerMatmulTriple]:
    """Fresh instances of the two kinds, sharing one dealer `MaskBook`."""
    book = MaskBook()
    return {OWNER_MASK: OwnerMask(book), OWNER_MATMUL_TRIPLE: OwnerMatmulTriple(book)}


# -- protocol --------------------------------------------------------------------------------
@dataclass(frozen=True)
class OwnerWeight:
    """A weight W (k, m) of `owner`, prepared for one-sided products x @ W.

    On the owner `plain` is W (ring), or, when every weight of its `prepare_owner_weights`
    call is within the public bound, `narrow` holds W instead (checked: `ring.narrow_weight`);
    on the client `masked` is E = W - B. The other fields are None.
    """

    owner: int
    mask_id: int
    k: int
    m: int
    plain: torch.Tensor | None
    masked: torch.Tensor | None
    narrow: ring.NarrowWeight | None = None


def owner_weight_bits(frac_bits: int) -> int:
    """Signed bits of a fixed-point weight within the public bound: |W| <= 2^(f+4)."""
    return frac_bits + OWNER_WEIGHT_BOUND_LOG2 + 1



def _check_two(sess: Session, owner: int) -> None:
    if sess.n != 2:
        raise ValueError(f"one-sided products need exactly 2 parties, got {sess.n}; "
                         "use beaver.fixed_matmul")
    if owner not in (0, 1):
        raise ValueError(f"owner must be party 0 or 1, got {owner}")


def prepare_owner_weights(
    sess: Session, owner: int, weights: Sequence[torch.Tensor | None],
    shapes: Sequence[tuple[int, int]], label: str = "owner_weights",
) -> list[OwnerWeight]:
    """Prepare several weights of `owner` at once (steps 1-2 of the per-model part).

    `weights` holds ring tensors (k, m) on the owner (zeros are used while tracing) and is
    ignored elsewhere. The owner decides here, once for all of them, whether its products
    use the narrow kernel (every W within the public bound: the module docstring).
    ROUNDS 0. BYTES 8 * sum(k m) plus one header H per message from the owner to the
    client: one message up to WEIGHT_PIECE_ELEMENTS elements, else pieces of at most that
    many (`_pieces`); OFFLINE 0.
    """
    _check_two(sess, owner)
    if sess.party_id == owner and len(weights) != len(shapes):
        raise ValueError(f"{len(weights)} weights for {len(shapes)} shapes")
    client = 1 - owner
    prepared: list[tuple[int, int, int, torch.Tensor | None]] = []
    total = sum(int(k) * int(m) for k, m in shapes)
    pieces = _pieces(total)
    # The owner writes each E = W - B straight into the outgoing pieces (no per-weight
    # parts to concatenate) and sends each piece as soon as it is full, so that at most a
    # piece or two is in flight besides the weights (at ViT-Base the whole message, and
    # CURVE's encrypted copy of it, were 0.69 GB each).
    masked = _MaskedPieces(sess, client, label, pieces) if sess.party_id == owner else None
    bits = owner_weight_bits(sess.frac_bits)
    narrow = not sess.is_tracing  # the trace multiplies nothing (`_product`)
    plains: list[torch.Tensor] = []
    for i, (k, m) in enumerate(shapes):
        mask_id = sess.next_request_index()
        mat = sess.correlation(OWNER_MASK, (mask_id, owner, int(k), int(m)))
        w: torch.Tensor | None = None
        if sess.party_id == owner:
            w = weights[i]
            if w is None:
                if not sess.is_tracing:
                    raise ValueError(f"party {owner} owns weight {i} but passed none")
                # one zero seen as (k, m): the trace holds no weight-sized tensors
                w = torch.zeros((), dtype=torch.int64).expand(k, m)
            w = ring.as_ring(w)
            if tuple(w.shape) != (k, m):
                raise ValueError(f"weight {i} has shape {tuple(w.shape)}, declared {(k, m)}")
            assert masked is not None
            masked.write((w - mat["b"]).reshape(-1))
            fits = ring.within_bits(w, bits)  # every weight checked: no early exit to time
            narrow = narrow and fits
            plains.append(w)
        prepared.append((mask_id, int(k), int(m), w))
    if sess.party_id == owner:
        if narrow:
            return [OwnerWeight(owner, mid, k, m, None, None, ring.narrow_weight(w, bits))
                    for (mid, k, m, _), w in zip(prepared, plains, strict=True)]
        return [OwnerWeight(owner, mid, k, m, w, None) for mid, k, m, w in prepared]
    flat = torch.empty(total, dtype=torch.int64)
    start = 0
    for size in pieces:
        flat[start:start + size] = sess.recv(owner, label, (size,))
        start += size
    out, offset = [], 0
    for mid, k, m, _ in prepared:
        out.append(OwnerWeight(owner, mid, k, m, None, flat[offset:offset + k * m].reshape(k, m)))
        offset += k * m
    return out


WEIGHT_PIECE_ELEMENTS = 1 << 20  # 8 MiB of int64 per message of masked weights (64 MiB
# pieces held ~250 MiB more at party 0 with ViT-Base: CURVE's copies of each piece in flight)


def _pieces(total: int) -> list[int]:
    """The sizes of the messages that carry `total` masked weight elements: one message up
    to WEIGHT_PIECE_ELEMENTS (every model up to ~1 M parameters), then equal-sized pieces."""
    count = -(-total // WEIGHT_PIECE_ELEMENTS)
    return [total // count + (1 if i < total % count else 0) for i in range(count)]


class _MaskedPieces:
    """The owner's outgoing masked weights: filled in order, each piece sent when full."""

    def __init__(self, sess: Session, client: int, label: str, pieces: list[int]) -> None:
        self.sess, self.client, self.label = sess, client, label
        self.pieces = list(pieces)
        self.buffer = torch.empty(self.pieces[0] if self.pieces else 0, dtype=torch.int64)
        self.filled = 0

    def write(self, values: torch.Tensor) -> None:
        start = 0
        while start < values.numel():
            take = min(values.numel() - start, self.buffer.numel() - self.filled)
            self.buffer[self.filled:self.filled + take] = values[start:start + take]
            self.filled += take
            start += take
            if self.filled == self.buffer.numel():
                self.sess.send(self.client, self.buffer, self.label)
                self.pieces.pop(0)
                self.buffer = torch.empty(self.pieces[0] if self.pieces else 0, dtype=torch.int64)
                self.filled = 0


def owner_matmul_many(
    sess: Session, xs: Sequence[torch.Tensor], weights: Sequence[OwnerWeight],
    truncate: bool = True, label: str = "owner_matmul",
) -> list[torch.Tensor]:
    """Shares of x_i @ W_i for every pair, the client's masked inputs in ONE message.

    x_i: shares (*batch, n, k_i). ROUNDS 0 for the client, <= 1 for the owner (see the
    module docstring). BYTES H + 8 * sum(batch n k) from the client only, + truncation.
    """
    if len(xs) != len(weights) or not xs:
        raise ValueError(f"owner_matmul_many needs as many inputs as weights, got "
                         f"{len(xs)} and {len(weights)}")
    owner = weights[0].owner
    _check_two(sess, owner)
    if any(w.owner != owner for w in weights):
        raise ValueError("every weight of one owner_matmul_many call must have the same owner")
    mats = []
    for x, w in zip(xs, weights, strict=True):
        x = ring.as_ring(x)
        if x.dim() < 2 or x.shape[-1] != w.k:
            raise ValueError(f"owner_matmul: {tuple(x.shape)} @ ({w.k}, {w.m})")
        params = (w.mask_id, owner, *(int(d) for d in x.shape[:-1]), w.k, w.m)
        mats.append(sess.correlation(OWNER_MATMUL_TRIPLE, params))
    out: list[torch.Tensor] = []
    if sess.party_id == owner:
        sizes = [x.numel() for x in xs]
        flat = sess.recv(1 - owner, label, (sum(sizes),))
        offset = 0
        for x, w, mat, size in zip(xs, weights, mats, sizes, strict=True):
            d = flat[offset:offset + size].reshape(x.shape)
            offset += size
            out.append(_owner_product(sess, d + x, w) + mat["c"])
    else:
        sess.send(owner, torch.cat([(ring.as_ring(x) - mat["a"]).reshape(-1)
                                    for x, mat in zip(xs, mats, strict=True)]), label)
        for w, mat in zip(weights, mats, strict=True):
            assert w.masked is not None
            out.append(_product(sess, mat["a"], w.masked) + mat["c"])
    if truncate and sess.n == 2 and sess.cfg.truncation == "exact":  # every product, one round
        return truncation.truncate_exact_many(sess, out, [sess.frac_bits] * len(out),
                                              label="truncate")
    return [truncation.truncate(sess, z) if truncate else z for z in out]


def _product(sess: Session, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """a @ w in the ring; in a trace, where every value is zero, zeros of the product's
    shape (the trace learns the plan; it need not multiply weight-sized zeros)."""
    if sess.is_tracing:
        return torch.zeros((*a.shape[:-1], w.shape[-1]), dtype=torch.int64)
    return ring.ring_matmul(a, w)


def _owner_product(sess: Session, a: torch.Tensor, w: OwnerWeight) -> torch.Tensor:
    """(x_o + D) @ W on the owner: the narrow kernel when W is narrow and the choice
    (`ring.choose_matmul_method` with its bits: public shapes and bound only) takes it."""
    if w.narrow is None:  # also in a trace, which never prepares narrow weights
        assert w.plain is not None
        return _product(sess, a, w.plain)
    method = ring.choose_matmul_method(a.shape, (w.k, w.m), torch.get_num_threads(),
                                       w_bits=w.narrow.bits)
    if method == "narrow":
        return ring.ring_matmul_narrow(a, w.narrow)
    return ring.ring_matmul(a, w.narrow.values, method)


def owner_matmul(sess: Session, x: torch.Tensor, weight: OwnerWeight,
                 truncate: bool = True) -> torch.Tensor:
    """Shares of x @ W for one prepared weight (see `owner_matmul_many` for the costs)."""
    return owner_matmul_many(sess, [x], [weight], truncate)[0]
