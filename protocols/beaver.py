"""Products of shared values with dealer (Beaver) triples: elementwise, square, matmul,
and matmul with a fixed secret weight whose mask is opened once per model.

Beaver, "Efficient multiparty protocols using circuit randomization", CRYPTO 1991; the
matrix form as in SecureML (Mohassel & Zhang 2017) and CrypTen's TTP provider.

Costs below are per party; H is a message header (sharing.py), numel counts elements of
the operands, and "+ trunc" adds `truncation.truncate`'s cost (exact, the 2-party default:
1 round, H + ceil(numel_out / 8) bytes online, 2 numel_out offline bytes at f <= 16; local:
0 rounds, 0 bytes; dealer: 1 round, (n-1)(H + 8 numel_out) bytes online, 16 numel_out
offline bytes) unless truncate=False. Offline bytes go to party n-1 only (correlations.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from privit.parties.session import Session
from privit.protocols import ring, truncation
from privit.protocols.sharing import open_all, open_many


def _finish(sess: Session, z: torch.Tensor, truncate: bool) -> torch.Tensor:
    return truncation.truncate(sess, z) if truncate else z


def beaver_mul(
    sess: Session, x: torch.Tensor, y: torch.Tensor, truncate: bool = True
) -> torch.Tensor:
    """Shares of x * y (elementwise, broadcasting), truncated by f unless truncate=False.

    1. Take a triple (a, b, c = ab) of the broadcast shape.
    2. Open d = x - a and e = y - b together, in one message.
    3. z_i = c_i + d * (b_i + [i = 0] e) + e * a_i, so that sum z_i = (d + a)(e + b) = xy.
    4. Truncate.
    ROUNDS 1 + trunc. BYTES (n-1)(H + 16 numel) + trunc. OFFLINE 8 numel to party n-1.
    """
    x, y = ring.as_ring(x), ring.as_ring(y)
    shape = ring.broadcast_shape(x.shape, y.shape)
    x, y = x.expand(shape), y.expand(shape)
    mat = sess.correlation("triple", tuple(shape))
    d, e = open_many(sess, [x - mat["a"], y - mat["b"]], label="beaver_mul")
    b = mat["b"] + e if sess.party_id == 0 else mat["b"]
    z = mat["c"] + d * b + e * mat["a"]
    return _finish(sess, z, truncate)


def beaver_square(sess: Session, x: torch.Tensor, truncate: bool = True) -> torch.Tensor:
    """Shares of x * x with a square pair (a, a2 = a^2).

    1. Take a square pair of x's shape. 2. Open d = x - a.
    3. z_i = a2_i + 2 d a_i + [i = 0] d^2, so that sum z_i = (d + a)^2.  4. Truncate.
    ROUNDS 1 + trunc. BYTES (n-1)(H + 8 numel) + trunc. OFFLINE 8 numel to party n-1.
    """
    x = ring.as_ring(x)
    mat = sess.correlation("square", tuple(x.shape))
    d = open_all(sess, x - mat["a"], label="beaver_square")
    z = mat["a2"] + 2 * d * mat["a"]
    if sess.party_id == 0:
        z += d * d
    return _finish(sess, z, truncate)


def beaver_matmul(
    sess: Session, x: torch.Tensor, y: torch.Tensor, truncate: bool = True
) -> torch.Tensor:
    """Shares of x @ y for x (*batch, n, k), y (*batch, k, m) (same batch dims).

    1. Take a matmul triple A, B, C = A @ B of these shapes.
    2. Open D = x - A and E = y - B together, in one message.
    3. Z_i = C_i + D @ (B_i + [i = 0] E) + A_i @ E  (sum = (D + A) @ (E + B)).
    4. Truncate.
    ROUNDS 1 + trunc. BYTES (n-1)(H + 8 batch (nk + km)) + trunc.
    OFFLINE 8 batch nm to party n-1.
    """
    x, y = ring.as_ring(x), ring.as_ring(y)
    if x.dim() < 2 or y.dim() < 2 or x.shape[:-2] != y.shape[:-2] or x.shape[-1] != y.shape[-2]:
        raise ValueError(f"beaver_matmul needs (*b, n, k) @ (*b, k, m), got "
                         f"{tuple(x.shape)} @ {tuple(y.shape)}")
    params = (*x.shape[:-2], x.shape[-2], x.shape[-1], y.shape[-1])
    mat = sess.correlation("matmul_triple", tuple(int(d) for d in params))
    d, e = open_many(sess, [x - mat["a"], y - mat["b"]], label="beaver_matmul")
    b = mat["b"] + e if sess.party_id == 0 else mat["b"]
    z = mat["c"] + ring.ring_matmul(d, b) + ring.ring_matmul(mat["a"], e)
    return _finish(sess, z, truncate)


@dataclass(frozen=True)
class FixedOperand:
    """A secret weight W (k, m) prepared for many products x @ W.

    mask_id: the plan index of its `fixed_mask` request; w_share: this party's share of W;
    masked: the public E = W - B, B the dealer's mask, opened once.
    """

    mask_id: int
    w_share: torch.Tensor
    masked: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        k, m = self.w_share.shape
        return int(k), int(m)



def prepare_fixed_matmul(sess: Session, w: torch.Tensor) -> FixedOperand:
    """Open the mask of a fixed secret weight W (k, m), once per model.

    1. Take a `fixed_mask` B (k, m), identified by its plan index.
    2. Open E = W - B.
    ROUNDS 1. BYTES (n-1)(H + 8 km). OFFLINE 0 payload bytes (B is random).
    """
    w = ring.as_ring(w)
    if w.dim() != 2:
        raise ValueError(f"a fixed weight is a (k, m) matrix, got {tuple(w.shape)}")
    k, m = (int(d) for d in w.shape)
    mask_id = sess.next_request_index()
    mat = sess.correlation("fixed_mask", (mask_id, k, m))
    masked = open_all(sess, w - mat["b"], label="fixed_mask")
    return FixedOperand(mask_id, w.clone(), masked)


def fixed_matmul(
    sess: Session, x: torch.Tensor, weight: FixedOperand, truncate: bool = True
) -> torch.Tensor:
    """Shares of x @ W for x (*batch, n, k) and a prepared fixed weight W (k, m).

    1. Take a `fixed_matmul_triple`: fresh A (*batch, n, k), C = A @ B for W's mask B.
    2. Open D = x - A (only x's mask: W's was opened at preparation).
    3. Z_i = C_i + D @ W_i + A_i @ E  (sum = D @ W + A @ (E + B) = (D + A) @ W).
    4. Truncate.
    ROUNDS 1 + trunc. BYTES (n-1)(H + 8 batch nk) + trunc. OFFLINE 8 batch nm to party n-1.
    """
    x = ring.as_ring(x)
    k, m = weight.shape
    if x.dim() < 2 or x.shape[-1] != k:
        raise ValueError(f"fixed_matmul: {tuple(x.shape)} @ ({k}, {m})")
    params = (weight.mask_id, *(int(d) for d in x.shape[:-1]), k, m)
    mat = sess.correlation("fixed_matmul_triple", params)
    d = open_all(sess, x - mat["a"], label="fixed_matmul")
    z = mat["c"] + ring.ring_matmul(d, weight.w_share) + ring.ring_matmul(mat["a"], weight.masked)
    return _finish(sess, z, truncate)
