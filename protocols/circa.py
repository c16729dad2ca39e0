"""Circa's stochastic ReLU: the sign of only the top bits of x (Ghodsi, Jha, Reagen, Garg,
"Circa: Stochastic ReLUs for Private Deep Learning", NeurIPS 2021), in Z_2^64.

Spec (docs/design.md, "Circa stochastic ReLU"): inputs satisfy |x| < 2^m (ring units, i.e.
m = f + log2 of the largest real magnitude). Each party drops the k low bits of its
share locally and keeps j = m - k + 2 bits, a_i = (x_i >> k) mod 2^j; the sign of x is
the top bit of (a_0 + a_1) mod 2^j, computed by a j-bit comparison (compare.py, either
path) instead of a 64-bit one.

Why: a_0 + a_1 = floor(x / 2^k) - c mod 2^j, where c = [low_k(x_0) + low_k(x_1) >= 2^k]
is the carry the parties dropped (c = 1 with probability 1 - (low_k(x) + 1)/2^k over the
uniform share low_k(x_0)). floor(x / 2^k) - c lies in [-2^(m-k) - 1, 2^(m-k)), which j
bits hold as a signed value (hence +2 and not +1). Its sign differs from x's only when
0 <= x < 2^k and c = 1:
- floor mode: PosZero faults only, P = 1 - (x + 1)/2^k for 0 <= x < 2^k;
- ceil mode (party 0 adds 2^k - 1 first): NegPass faults only, a negative x > -2^k
  passes with P = 1 - |x|/2^k.
For x ~ N(0, sigma^2) in real units the expected fault rate is about
2^k / (2 sigma 2^f sqrt(2 pi)) (the density at 0 times the mean fault mass 2^k / 2).

stochastic_relu is relu_gate(a, x): DReLU of the j-bit a times the full 64-bit x, one
round on the FSS path (opening j + 64 bits per element per party), log2(P_j) rounds on
the adder path, one more on "adder_compact" (the XOR ending + bit_select). Savings against
exact ReLU at 64 bits: see `circa_costs` and docs/comparison.md.
"""
from __future__ import annotations

import math

import torch

from privit.parties.session import Session
from privit.protocols import compare
from privit.protocols.cost_model import OpCost, adder_costs, fss_costs

MODES = ("floor", "ceil")
# Default: drop k = f - 6 bits (f = 16: k = 10, fault rate 0.31 % on N(0, 1)), keep
# m = f + 6 (|x| < 64 in real units): j = 14 bits compared instead of 64.
DEFAULT_K_BELOW_FRAC = 6
DEFAULT_M_ABOVE_FRAC = 6


def default_params(frac_bits: int) -> tuple[int, int]:
    """The documented default (k, m) for f fractional bits: (f - 6, f + 6)."""
    return frac_bits - DEFAULT_K_BELOW_FRAC, frac_bits + DEFAULT_M_ABOVE_FRAC


def compared_bits(k: int, m: int) -> int:
    """j = m - k + 2, the bits the comparison sees."""
    _check(k, m)
    return m - k + 2


def _check(k: int, m: int) -> None:
    if k < 0 or m < 0 or not 1 <= m - k + 2 or m + 2 > 64:
        raise ValueError(f"need 0 <= k, 1 <= j = m - k + 2 and m <= 62; got k={k}, m={m}")


def truncated_share(sess: Session, x: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    """a_i = x_i >> k (party 0 adds 2^k - 1 first in ceil mode); local, 0 rounds."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "ceil" and sess.party_id == 0 and k > 0:
        x = x + ((1 << k) - 1)
    return x >> k


def stochastic_drelu(sess: Session, x: torch.Tensor, *, k: int, m: int, mode: str = "floor",
                     method: compare.Method = "auto") -> torch.Tensor:
    """Shares of Circa's stochastic DReLU(x) (0/1); |x| < 2^m, faults as in the module doc.

    Steps: 1. a_i = truncated_share(x_i) (local); 2. compare.drelu(a, bits=j).
    ROUNDS fss 1, adder log2(P_j) ("adder_compact" runs "adder": no XOR consumer here).
    BYTES per element per party: fss wire_itemsize(j), adder cost_model.adder_costs(j).
    OFFLINE per element: fss 48 j - 24, adder (see adder_costs). j = m - k + 2.
    """
    j = compared_bits(k, m)
    return compare.drelu(sess, truncated_share(sess, x, k, mode), method=method, bits=j)


def stochastic_relu(sess: Session, x: torch.Tensor, *, k: int, m: int, mode: str = "floor",
                    method: compare.Method = "auto") -> torch.Tensor:
    """Shares of x * stochastic_DReLU(x) (fixed point, exact where the sign is right).

    Steps: 1. a_i = truncated_share(x_i) (local); 2. compare.relu_gate(a, x, bits=j):
    fss opens a + r mod 2^j and x + R (one message), adder folds the product into its
    last round. ROUNDS fss 1, adder log2(P_j) (j = 14: 4; 3 with 4-bit leaves).
    BYTES per element per party: fss wire_itemsize(j) + 8 (j = 14: 10), adder
    adder_costs(j, product) (j = 14: 19.6). OFFLINE per element: fss 64 j - 16 (j = 14:
    880, against 4080 for exact ReLU), adder adder_costs (j = 14: 115.5 against 127.5).
    fss_compact (compare._gate_fss_compact): 2 rounds, wire_itemsize(j) + 8.125 B per
    element per party (j = 14: 10.125), OFFLINE 2 bit_dcf_cw_bytes(j - 1) + 16.125
    (j = 14: 242.125, against 1854.125 for the exact ReLU on it at 64 bits).
    adder_compact (compare._gate_adder_compact): log2(P_j) + 1 rounds (j = 14: 5; 4 with
    4-bit leaves), adder_costs(j, product, compact) (j = 14: 13.625 B, as "adder"),
    OFFLINE the tree's products + 1/8 + 16 (j = 14: 19.625, against 31.625 for the exact
    ReLU on the same path and 127.5 on "adder": 1.6x and 6.5x fewer).
    """
    j = compared_bits(k, m)
    a = truncated_share(sess, x, k, mode)
    return compare.relu_gate(sess, a, x, bits=j, method=method)[1]


def circa_costs(method: str, numel: int, k: int, m: int, leaf: int = 2) -> OpCost:
    """Rounds and bytes of stochastic_relu on `numel` elements (cost_model formulas;
    leaf: the adder's leaf width)."""
    j = compared_bits(k, m)
    if method in ("fss", "fss_compact"):
        return fss_costs(numel, j, product=True, shared_mask=False,
                         compact=method == "fss_compact")
    if method not in ("adder", "adder_compact"):
        raise ValueError(f"unknown comparison method {method!r}")
    return adder_costs(numel, j, product=True, leaf=leaf, compact=method == "adder_compact")


def fault_probability(x: torch.Tensor, k: int, mode: str) -> torch.Tensor:
    """P[the stochastic DReLU of ring value x is wrong], per element (float64)."""
    xf = x.to(torch.float64)
    scale = float(2**k)
    if mode == "floor":
        inside = (x >= 0) & (x < 2**k)
        return torch.where(inside, 1 - (xf + 1) / scale, torch.zeros_like(xf))
    if mode == "ceil":
        inside = (x < 0) & (x > -(2**k))
        return torch.where(inside, 1 - xf.abs() / scale, torch.zeros_like(xf))
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def gaussian_fault_rate(sigma: float, frac_bits: int, k: int) -> float:
    """Expected fault rate for x ~ N(0, sigma^2) (real units): 2^k / (2 sigma 2^f sqrt(2 pi))."""
    return 2.0**k / (2.0 * sigma * 2.0**frac_bits * math.sqrt(2.0 * math.pi))
