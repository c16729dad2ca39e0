"""Plaintext attention of MPCViT: ReLU-softmax, ScaleAttn and softmax heads.

Scores are ``S = (Q K^T) * dh**-0.5`` per head (python-float scale, as in
MPCViT).  Each head of a student block turns S into attention weights A by one
of two MPC-friendly maps, chosen by the head's architecture parameter alpha:

* alpha = 1, ReLU-softmax (RSAttn): ``A = relu(S) / (sum_row relu(S) + 1e-5)``;
  the epsilon is added after the row sum, so a row with no positive score
  gives an all-zero row, never a division by zero.
* alpha = 0, ScaleAttn: ``A = S / N`` with N the number of keys *including*
  the cls token (65 for vit_7_4_32, 257 for vit_9_12_64).

The softmax teacher uses ``softmax(S)`` in every head and has no alpha.

Search relaxation: while alpha is being searched it is continuous, and the head
output is the mix ``alpha * RSAttn(S) + (1 - alpha) * ScaleAttn(S)`` (this is
what MPCViT trains).  Only in search mode is a non-binary alpha accepted; in
normal (inference / retrain) mode, every alpha must be exactly 0 or 1, and a
head is computed by exactly one of the two maps.
"""

from __future__ import annotations

import enum

import torch
from torch import nn

__all__ = [
    "RELU_SOFTMAX_EPS",
    "AttnMode",
    "relu_softmax",
    "scale_attention",
    "softmax_attention",
    "MPCAttention",
]

RELU_SOFTMAX_EPS = 1e-5
"""Added to the ReLU row sum (MPCViT's value; the older code used 1e-8)."""


class AttnMode(enum.StrEnum):
    """How one head normalises its scores."""

    RELU_SOFTMAX = "relu_softmax"
    SCALE = "scale"
    SOFTMAX = "softmax"


def relu_softmax(scores: torch.Tensor, eps: float = RELU_SOFTMAX_EPS) -> torch.Tensor:
    """ReLU-softmax over the last dim: ``relu(S) / (sum relu(S) + eps)``."""
    positive = torch.relu(scores)
    return positive / (positive.sum(dim=-1, keepdim=True) + eps)


def scale_attention(scores: torch.Tensor) -> torch.Tensor:
    """ScaleAttn: divide by the number of keys N (the last dim, cls included)."""
    return scores / scores.shape[-1]


def softmax_attention(scores: torch.Tensor) -> torch.Tensor:
    """Plain softmax over the last dim (teacher heads)."""
    return scores.softmax(dim=-1)


def is_binary(t: torch.Tensor) -> bool:
    """True when every element of ``t`` is exactly 0.0 or 1.0."""
    return bool(((t == 0) | (t == 1)).all())


class MPCAttention(nn.Module):
    """Multi-head self-attention with per-head RSAttn / ScaleAttn (or softmax).

    Parameters (state_dict order): ``alpha`` (1, H, 1, 1) for students only,
    ``qkv.weight`` (3d, d) without bias, ``proj.weight`` (d, d), ``proj.bias`` (d,).
    Rows 0..d-1 of the qkv weight give q, d..2d-1 give k, 2d..3d-1 give v; in
    each, head h owns rows h*dh..(h+1)*dh-1.
    """

    def __init__(self, dim: int, heads: int, *, teacher: bool = False,
                 attn_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.teacher = teacher
        self.search = False
        # Registered before the children so the key precedes qkv/proj in state_dict.
        self.alpha: nn.Parameter | None
        if teacher:
            self.alpha = None
        else:
            self.alpha = nn.Parameter(torch.ones(1, heads, 1, 1), requires_grad=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.proj = nn.Linear(dim, dim)

    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(S, v)``: scaled scores (B, H, N, N) and values (B, H, N, dh)."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        return (q @ k.transpose(-2, -1)) * self.scale, v

    def attention_weights(self, scores: torch.Tensor) -> torch.Tensor:
        """Map scaled scores to attention weights according to alpha / teacher."""
        if self.alpha is None:
            return softmax_attention(scores)
        rs = relu_softmax(scores)
        sc = scale_attention(scores)
        if self.search:
            return self.alpha * rs + (1 - self.alpha) * sc
        self.check_binary_alpha()
        return torch.where(self.alpha == 1, rs, sc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        s, v = self.scores(x)
        a = self.attn_drop(self.attention_weights(s))
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))

    def alpha_parameter(self) -> nn.Parameter:
        """The head-wise alpha (1, H, 1, 1) of a student; a teacher has none."""
        if self.alpha is None:
            raise ValueError("a softmax teacher's attention has no alpha")
        return self.alpha

    def check_binary_alpha(self) -> None:
        """Raise ValueError if alpha holds a value other than exactly 0 or 1."""
        if self.alpha is not None and not is_binary(self.alpha.detach()):
            values = self.alpha.detach().flatten().tolist()
            raise ValueError(f"alpha must be exactly 0 or 1 per head outside search mode, "
                             f"got {values}")

    def attention_modes(self) -> list[AttnMode]:
        """Per-head mode; raises ValueError for a non-binary alpha."""
        if self.alpha is None:
            return [AttnMode.SOFTMAX] * self.heads
        self.check_binary_alpha()
        return [AttnMode.RELU_SOFTMAX if a == 1 else AttnMode.SCALE
                for a in self.alpha.detach().flatten().tolist()]
