"""Products of XOR-shared bits with one arithmetic value, in ONE opening (as SIGMA's select).

The compact DReLU (dcf_bit.py, `drelu_bit_fss`) leaves its bits in XOR shares; a consumer
whose next step multiplies those bits by a value x pays nothing more in rounds if the
conversion rides in that product's opening. Here: K bits b_k (XOR shares) times one x
(additive shares in Z_2^64), and optionally x^2 from the same opening.

Dealer material (`bit_select`, params (K, N, square)): a random bit rho_k per product, in
XOR shares (derived by each party from its PRG) and in additive shares; a mask R of x
(additive, derived); additive shares of rho_k R and, for the square, of R^2. Party 0
derives all of its material; party 1 receives its shares of rho_k, rho_k R (and R^2):
OFFLINE 16 K N (+ 8 N) bytes, to party 1 only.

Steps (party i):
1. send e_i = b_i xor rho_i (K N bits, packed) and x_i + R_i (N int64) in ONE message;
2. e = b xor rho and x_hat = x + R are public;
3. [b] = [i = 0] e + (1 - 2 e) [rho] and [b R] = e [R] + (1 - 2 e) [rho R], so
   [b x] = x_hat [b] - [b R]  (b = e xor rho = e + rho - 2 e rho);
   [x^2] = [i = 0] x_hat^2 - 2 x_hat [R] + [R^2].
ROUNDS 1. BYTES per party: ceil(K N / 8) + 8 N + one header. No truncation here: bits are
unscaled, so b x keeps x's scale; x^2 has twice the fractional bits.
The arithmetic shares [b] of step 3 come out of the same opening at no cost (`open_bits`),
for a consumer that needs the bits themselves in a later product (the erf GeLU selects
its coefficients with them).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from privit.parties.prg import Prg
from privit.parties.session import Params, Session
from privit.protocols.correlations import owned_tensor

BIT_SELECT = "bit_select"
U64 = np.dtype("<u8")


def _params(params: Params) -> tuple[int, int, bool]:
    if (len(params) != 3 or not all(isinstance(p, int) and not isinstance(p, bool) for p in params)
            or params[0] < 1 or params[1] < 0 or params[2] not in (0, 1)):
        raise ValueError(f"{BIT_SELECT}: params are (K >= 1, N >= 0, square 0/1), got {params!r}")
    return int(params[0]), int(params[1]), bool(params[2])


def _u64(prg: Prg, count: int) -> np.ndarray:
    return prg.bytes(8 * count).view(U64)



class BitSelect:
    """`bit_select`: the material of `bit_products` (see the module docstring).

    Draw order per party: R share (8 N), rho XOR bits (K N bytes, low bit); party 0 also
    its additive shares of rho (8 K N), rho R (8 K N) and, with square, R^2 (8 N).
    Material: r_share (N,), rho_bits (K, N) uint8, rho, rho_r (K, N) and r2 (N,) int64.
    """

    name = BIT_SELECT

    @staticmethod
    def _draw(prg: Prg, party: int, k: int, n: int, square: bool) -> dict[str, np.ndarray]:
        out = {"r_share": _u64(prg, n), "rho_bits": (prg.bytes(k * n) & np.uint8(1)).reshape(k, n)}
        if party == 0:
            out["rho"] = _u64(prg, k * n).reshape(k, n)
            out["rho_r"] = _u64(prg, k * n).reshape(k, n)
            if square:
                out["r2"] = _u64(prg, n)
        return out

    def deal(self, params: Params, prgs: Sequence[Prg]) -> list[list[np.ndarray]]:
        k, n, square = _params(params)
        if len(prgs) != 2:
            raise NotImplementedError(f"{BIT_SELECT}: 2 parties only")
        draws = [self._draw(prg, party, k, n, square) for party, prg in enumerate(prgs)]
        big_r = draws[0]["r_share"] + draws[1]["r_share"]
        rho = (draws[0]["rho_bits"] ^ draws[1]["rho_bits"]).astype(U64)
        to_party1 = [rho - draws[0]["rho"], rho * big_r - draws[0]["rho_r"]]
        if square:
            to_party1.append(big_r * big_r - draws[0]["r2"])
        return [[], to_party1]

    def expand(self, params: Params, party: int, n_parties: int, prg: Prg,
               payload: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        k, n, square = _params(params)
        if n_parties != 2:
            raise NotImplementedError(f"{BIT_SELECT}: 2 parties only")
        drawn = self._draw(prg, party, k, n, square)
        if party == 1:
            shapes = [(k, n), (k, n)] + ([(n,)] if square else [])
            if len(payload) != len(shapes):
                raise ValueError(f"{BIT_SELECT}: {len(payload)} payload arrays for party 1")
            for name, array, shape in zip(("rho", "rho_r", "r2"), payload, shapes, strict=False):
                if array.dtype != U64 or tuple(array.shape) != shape:
                    raise ValueError(f"{BIT_SELECT}: {name} is {array.dtype}{list(array.shape)}, "
                                     f"expected uint64{list(shape)}")
                drawn[name] = array
        elif payload:
            raise ValueError(f"{BIT_SELECT}: party 0 gets no payload, got {len(payload)} arrays")
        return {name: owned_tensor(value) for name, value in drawn.items()}

    def zeros(self, params: Params) -> dict[str, torch.Tensor]:
        _params(params)
        return {}


@dataclass(frozen=True)
class OpenedBits:
    """What ONE `bit_select` opening gives (int64 shares, x's shape): the bits b_k in
    arithmetic shares (0/1, unscaled), the products b_k x (x's scale) and, when asked,
    x^2 (raw: 2 f fractional bits)."""

    bits: list[torch.Tensor]
    products: list[torch.Tensor]
    square: torch.Tensor | None


def bit_products(sess: Session, bits: torch.Tensor, x: torch.Tensor, *, square: bool,
                 label: str) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Shares of b_k * x for every row k of `bits` (uint8 (K, *x.shape), XOR shares, 0/1)
    and, with square, of x^2 (raw: 2 f fractional bits), from ONE opening (module
    docstring). ROUNDS 1, BYTES ceil(K N / 8) + 8 N + H per party, OFFLINE 16 K N (+ 8 N)."""
    opened = open_bits(sess, bits, x, square=square, label=label)
    return opened.products, opened.square


def open_bits(sess: Session, bits: torch.Tensor, x: torch.Tensor, *, square: bool,
              label: str) -> OpenedBits:
    """`bit_products`, and the rows of `bits` in arithmetic shares too (step 3 of the
    module docstring computes them anyway). Costs as `bit_products`."""
    if sess.n != 2:
        raise NotImplementedError(f"bit_products: 2 parties only, not {sess.n}")
    k, n = int(bits.shape[0]), x.numel()
    if tuple(bits.shape[1:]) != tuple(x.shape):
        raise ValueError(f"bit_products: bits {tuple(bits.shape)} do not match x {tuple(x.shape)}")
    mat = sess.correlation(BIT_SELECT, (k, n, int(square)))
    if sess.is_tracing:
        zero = torch.zeros(x.shape, dtype=torch.int64)
        return OpenedBits([zero.clone() for _ in range(k)], [zero.clone() for _ in range(k)],
                          zero.clone() if square else None)
    me, other = sess.party_id, 1 - sess.party_id
    r_share = mat["r_share"].numpy()
    masked_bits = bits.reshape(k, n).numpy() ^ mat["rho_bits"].numpy()
    packed = np.packbits(masked_bits.reshape(-1), bitorder="little")
    masked_x = x.reshape(-1).contiguous().numpy().view(U64) + r_share
    mine = np.concatenate([packed, masked_x.view(np.uint8)])
    sess.send(other, mine, label)
    theirs = sess.recv(other, label, mine.shape, torch.uint8).numpy()
    opened = np.unpackbits(packed ^ theirs[:packed.size], count=k * n, bitorder="little")
    x_hat = masked_x + theirs[packed.size:].view(U64)
    b_share, products = _select(me, opened.reshape(k, n), x_hat, r_share, mat["rho"].numpy(),
                                mat["rho_r"].numpy())
    sq = None
    if square:
        sq_share = x_hat * r_share
        sq_share *= np.uint64(2)
        np.subtract(mat["r2"].numpy(), sq_share, out=sq_share)
        if me == 0:
            sq_share += x_hat * x_hat
        sq = torch.from_numpy(sq_share.view(np.int64).reshape(x.shape))
    return OpenedBits(_rows(b_share, x.shape), _rows(products, x.shape), sq)


_FLIP = np.array([1, (1 << 64) - 1], dtype=U64)  # 1 - 2e in Z_2^64 for e = 0, 1
# Elements per slice of step 3: a slice's passes stay in the core's cache.
_SLICE = 1 << 15


def _select(me: int, e: np.ndarray, x_hat: np.ndarray, r_share: np.ndarray, rho: np.ndarray,
            rho_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 3 for the opened bits e (K, N): ([b], [b x]) with [b] = [i = 0] e + (1 - 2 e)
    [rho], [b R] = e [R] + (1 - 2 e) [rho R] and [b x] = x_hat [b] - [b R], slice by slice."""
    k, n = e.shape
    b_share, products = np.empty((k, n), dtype=U64), np.empty((k, n), dtype=U64)
    for start in range(0, n, _SLICE):
        s = slice(start, start + _SLICE)
        es = e[:, s]
        flip = _FLIP[es]
        b = b_share[:, s]
        np.multiply(flip, rho[:, s], out=b)
        if me == 0:
            b += es
        br = flip  # becomes [b R]
        br *= rho_r[:, s]
        np.add(br, r_share[s], out=br, where=es.view(np.bool_))
        prod = products[:, s]
        np.multiply(b, x_hat[s], out=prod)
        prod -= br
    return b_share, products


def _rows(values: np.ndarray, shape: torch.Size) -> list[torch.Tensor]:
    """The rows of a fresh (K, N) uint64 array as int64 tensors of x's shape (views: each
    row is its own contiguous block)."""
    return list(torch.from_numpy(values.view(np.int64)).reshape(values.shape[0], *shape).unbind(0))
