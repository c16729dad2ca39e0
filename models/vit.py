"""Plaintext reference ViT-Lite (CCT block) matching MPCViT checkpoints.

Parameter names and the order of ``state_dict()`` keys are those of MPCViT's
``ViTLite`` (see docs/checkpoint_format.md), so its checkpoints load as they
are.  Forward, in eval mode::

    t = Conv2d(k=patch, stride=patch)(img).flatten(2).transpose(1, 2)   # (B, P, d)
    x = cat([cls, t], 1) + positional_emb                               # cls first
    per block:  x = x + Attn(LN_pre(x));  x = LN_1(x);  x = x + W2(GELU(W1 x))
    logits = fc(LN_final(x)[:, 0])

Note the CCT block: ``norm1`` normalises the residual stream itself; the MLP has
no norm of its own.  MPCViT's own forward returns a tuple
``(logits, [final_tokens])``; :meth:`ViTLite.forward` returns only the logits
tensor, and :meth:`ViTLite.forward_features` gives the final tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from privit.models.attention import AttnMode, MPCAttention
from privit.models.config import ViTConfig

__all__ = ["GELU_VARIANTS", "ViTLite", "TransformerBlock"]


def gelu_erf(x: torch.Tensor) -> torch.Tensor:
    """Exact GeLU, x * Phi(x) with erf (what MPCViT uses)."""
    return F.gelu(x)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of GeLU (moves MPCViT logits by about 1e-3)."""
    return F.gelu(x, approximate="tanh")


GELU_VARIANTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "erf": gelu_erf,
    "tanh": gelu_tanh,
}
"""GeLU choices for the plaintext reference; 'erf' matches the checkpoints."""


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample with prob. p."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class TransformerBlock(nn.Module):
    """One CCT encoder block; MPCViT+ adds a per-token gate ``beta`` (1, N, 1).

    With beta the MLP is ``h = beta*GELU(W1 x) + (1-beta)*W1 x``, then
    ``h = (1-beta)*relu(W2 h) + beta*W2 h``: beta=1 keeps GeLU, beta=0 makes the
    token's MLP linear followed by a ReLU.
    """

    def __init__(self, config: ViTConfig, *, gelu: str = "erf", attn_dropout: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.beta: nn.Parameter | None
        if config.linear_gelu:
            # First in the block's state_dict; not trained by gradient (as in MPCViT+).
            self.beta = nn.Parameter(torch.ones(1, config.n_tokens, 1), requires_grad=False)
        else:
            self.beta = None
        self.pre_norm = nn.LayerNorm(config.dim)
        self.self_attn = MPCAttention(config.dim, config.heads, teacher=config.teacher,
                                      attn_dropout=attn_dropout)
        self.linear1 = nn.Linear(config.dim, config.mlp_hidden)
        self.norm1 = nn.LayerNorm(config.dim)
        self.linear2 = nn.Linear(config.mlp_hidden, config.dim)
        self.gelu = GELU_VARIANTS[gelu]
        self.drop_path = drop_path

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP branch (without the residual)."""
        if self.beta is None:
            return self.linear2(self.gelu(self.linear1(x)))
        h = self.linear1(x)
        h = self.beta * self.gelu(h) + (1 - self.beta) * h
        h = self.linear2(h)
        return (1 - self.beta) * torch.relu(h) + self.beta * h

    def beta_parameter(self) -> nn.Parameter:
        """MPCViT+'s per-token gate (1, N, 1); only models built with linear_gelu have it."""
        if self.beta is None:
            raise ValueError("this block has no beta (the model was built without linear_gelu)")
        return self.beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + _drop_path(self.self_attn(self.pre_norm(x)), self.drop_path, self.training)
        x = self.norm1(x)
        return x + _drop_path(self.mlp(x), self.drop_path, self.training)


class Tokenizer(nn.Module):
    """Patch embedding: one strided conv, nested so its key is ``conv_layers.0.0``."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        conv = nn.Conv2d(config.in_chans, config.dim, kernel_size=config.patch_size,
                         stride=config.patch_size, padding=0, bias=True)
        self.conv_layers = nn.Sequential(nn.Sequential(conv))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.conv_layers(img).flatten(2, 3).transpose(-2, -1)


class TransformerClassifier(nn.Module):
    """cls token, learnable positions (cls row included), blocks, final norm, fc."""

    def __init__(self, config: ViTConfig, *, gelu: str, attn_dropout: float,
                 drop_path: float) -> None:
        super().__init__()
        self.class_emb = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.positional_emb = nn.Parameter(torch.zeros(1, config.n_tokens, config.dim))
        rates = torch.linspace(0, drop_path, config.depth).tolist()
        self.blocks = nn.ModuleList(
            TransformerBlock(config, gelu=gelu, attn_dropout=attn_dropout, drop_path=rate)
            for rate in rates)
        self.norm = nn.LayerNorm(config.dim)
        self.fc = nn.Linear(config.dim, config.num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, P, d) -> final normalised tokens (B, N, d)."""
        x = torch.cat([self.class_emb.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        x = x + self.positional_emb
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class ViTLite(nn.Module):
    """MPCViT's ViT-Lite student (or softmax teacher) as a plain torch module.

    Args:
        config: the architecture.
        gelu: 'erf' (exact, default, matches checkpoints) or 'tanh'.
        attn_dropout: dropout on attention weights in training (MPCViT trains with 0.1).
        drop_path: largest stochastic-depth rate, linear over blocks (MPCViT: 0.1).

    Alpha is frozen (``requires_grad=False``) and must be binary unless
    :meth:`set_search` enables the search relaxation.
    """

    def __init__(self, config: ViTConfig, *, gelu: str = "erf", attn_dropout: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        if gelu not in GELU_VARIANTS:
            raise ValueError(f"unknown gelu {gelu!r}; choose one of {sorted(GELU_VARIANTS)}")
        self.config = config
        self.gelu = gelu
        self.tokenizer = Tokenizer(config)
        self.classifier = TransformerClassifier(config, gelu=gelu, attn_dropout=attn_dropout,
                                                drop_path=drop_path)
        self.reset_parameters()

    # ----------------------------------------------------------------- init
    def reset_parameters(self) -> None:
        """Fresh init: trunc-normal linears, unit norms, alpha = beta = 1."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.classifier.class_emb.zero_()
            nn.init.trunc_normal_(self.classifier.positional_emb, std=0.2)
            for block in self.blocks:
                if block.self_attn.alpha is not None:
                    block.self_attn.alpha.fill_(1.0)
                if block.beta is not None:
                    block.beta.fill_(1.0)

    # -------------------------------------------------------------- forward
    def forward_features(self, img: torch.Tensor) -> torch.Tensor:
        """Images (B, C, S, S) -> final LayerNormed tokens (B, N, d)."""
        return self.classifier(self.tokenizer(img))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Images (B, C, S, S) -> logits (B, classes) from the cls token.

        (MPCViT returns ``(logits, [tokens])``; this returns the logits alone.)
        """
        return self.classifier.fc(self.forward_features(img)[:, 0])

    # --------------------------------------------------------- architecture
    @property
    def blocks(self) -> Sequence[TransformerBlock]:
        """The transformer blocks, in order."""
        return list(self.classifier.blocks)  # type: ignore[arg-type]

    def _require_student(self) -> None:
        if self.config.teacher:
            raise ValueError(f"{self.config.name} is a softmax teacher and has no alpha")

    def get_alpha(self) -> torch.Tensor:
        """All alphas as an (L, H) tensor (a detached copy)."""
        self._require_student()
        return torch.stack([b.self_attn.alpha_parameter().detach().reshape(-1).clone()
                            for b in self.blocks])

    def set_alpha(self, alpha: torch.Tensor | Sequence[Sequence[float]]) -> None:
        """Copy an (L, H) alpha (or L x (1, H, 1, 1)) into the blocks.

        Binary values are not required here (search may set any value); inference
        checks them in forward and :meth:`check_binary_alpha`.
        """
        self._require_student()
        values = torch.as_tensor(alpha, dtype=torch.float32)
        expected = (self.config.depth, self.config.heads)
        if values.numel() != expected[0] * expected[1]:
            raise ValueError(f"alpha must have shape {expected}, got {tuple(values.shape)}")
        values = values.reshape(expected)
        if not bool(torch.isfinite(values).all()):
            raise ValueError("alpha contains NaN or Inf")
        with torch.no_grad():
            for block, row in zip(self.blocks, values, strict=True):
                block.self_attn.alpha_parameter().copy_(row.reshape(1, -1, 1, 1))

    def check_binary_alpha(self) -> None:
        """Raise ValueError naming the first layer whose alpha is not all 0/1."""
        for index, block in enumerate(self.blocks):
            try:
                block.self_attn.check_binary_alpha()
            except ValueError as err:
                raise ValueError(f"layer {index}: {err}") from None

    def attention_modes(self) -> list[list[AttnMode]]:
        """Per layer, per head: RELU_SOFTMAX, SCALE or SOFTMAX (binary alpha required)."""
        self.check_binary_alpha()
        return [block.self_attn.attention_modes() for block in self.blocks]

    def set_search(self, enabled: bool) -> None:
        """Enable/disable the search relaxation; alpha is trainable exactly when enabled.

        In search mode each head outputs ``alpha*RSAttn + (1-alpha)*ScaleAttn`` for
        any real alpha, so gradients reach alpha.  Outside it alpha must be binary.
        """
        self._require_student()
        for block in self.blocks:
            block.self_attn.search = enabled
            block.self_attn.alpha_parameter().requires_grad_(enabled)

    @property
    def search(self) -> bool:
        """True while the search relaxation is enabled."""
        return any(block.self_attn.search for block in self.blocks)
