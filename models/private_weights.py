"""The public architecture of a private ViT and the owner's plaintext weights, folded.

What every role knows (`PrivateArch`): the shapes (`ViTConfig`), each head's attention
mode (from alpha) and, for MPCViT+, each block's per-token beta gate. These are the
model's architecture, public in MPCViT's threat model; the weights are not.

What only the model owner holds (`PlainWeights`): float64 matrices and vectors in the
order of `weight_layout`, with every affine map that can be merged into a neighbouring
linear layer merged by the owner in plaintext (so it costs nothing online):
- pre_norm's gamma and beta into the qkv weight (qkv = n g Wqkv^T + b Wqkv^T, which gives
  qkv a bias); of the attention scale dh^-1/2 = r 2^-e (`score_scale`) only r in [1, 2)
  goes into the query columns, 2^-e is a truncation of the scores (scaling q itself down
  would cost its fixed-point precision: 8x larger score errors for dh = 64);
- the final norm's gamma and beta into the classifier;
- the cls token, the positional embedding and the patch conv's bias into one (N, d)
  addend of the embedding.
norm1's affine map stays: the residual stream itself is normalised (CCT block).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from privit.models.attention import AttnMode
from privit.models.config import ViTConfig
from privit.models.vit import ViTLite
from privit.protocols import ring

Shape = tuple[int, ...]


class ArchitectureMismatch(ValueError):
    """Two roles hold different public architectures; the text names both (one line)."""


class ArchitectureError(ValueError):
    """An announced public architecture that is malformed or too large (one line)."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"bad public architecture: {problem}")


# Bounds on an announced architecture, well above ViT-Base (d 768, MLP 3072, 12 layers,
# 12 heads, 197 tokens, 1000 classes) and below what would exhaust a role's memory.
ARCH_LIMITS = {"img_size": 1024, "in_chans": 16, "patch_size": 1024, "dim": 4096, "depth": 64,
               "heads": 64, "mlp_hidden": 16384, "num_classes": 100_000, "tokens": 4097}


@dataclass(frozen=True)
class PrivateArch:
    """The public part of a model: shapes, attention mode per head, MPCViT+ gates.

    modes[l][h] is the mode of head h in layer l; betas[l][t] in {0, 1} is the gate of
    token t in layer l (None unless config.linear_gelu).
    """

    config: ViTConfig
    modes: tuple[tuple[AttnMode, ...], ...]
    betas: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        c = self.config
        if len(self.modes) != c.depth or any(len(m) != c.heads for m in self.modes):
            raise ValueError(f"{c.name}: need {c.depth} layers x {c.heads} head modes")
        for row in self.modes:
            for mode in row:
                if c.teacher != (mode == AttnMode.SOFTMAX):
                    raise ValueError(f"{c.name}: head mode {mode.value} does not fit a "
                                     f"{'teacher' if c.teacher else 'student'} model")
        if c.linear_gelu != (self.betas is not None):
            raise ValueError(f"{c.name}: betas must be given exactly for MPCViT+ models")
        if self.betas is not None:
            if len(self.betas) != c.depth or any(len(b) != c.n_tokens for b in self.betas):
                raise ValueError(f"{c.name}: need {c.depth} layers x {c.n_tokens} betas")
            if any(v not in (0, 1) for b in self.betas for v in b):
                raise ValueError("betas must be 0 or 1")

    @staticmethod
    def from_model(model: ViTLite) -> PrivateArch:
        modes = tuple(tuple(row) for row in model.attention_modes())
        betas = None
        if model.config.linear_gelu:
            rows = []
            for block in model.blocks:
                assert block.beta is not None
                values = block.beta.detach().reshape(-1).tolist()
                if any(v not in (0.0, 1.0) for v in values):
                    raise ValueError("MPCViT+ beta must be exactly 0 or 1 per token")
                rows.append(tuple(int(v) for v in values))
            betas = tuple(rows)
        return PrivateArch(model.config, modes, betas)

    @staticmethod
    def from_alpha(config: ViTConfig, alpha: Sequence[Sequence[int]] | None) -> PrivateArch:
        """Modes from an (L, H) 0/1 pattern (1 = ReLU-softmax); teachers take None."""
        if config.teacher:
            if alpha is not None:
                raise ValueError(f"{config.name} is a softmax teacher: it has no alpha")
            return PrivateArch(config, tuple((AttnMode.SOFTMAX,) * config.heads
                                             for _ in range(config.depth)))
        if alpha is None:
            raise ValueError(f"{config.name} needs an alpha pattern")
        modes = tuple(tuple(AttnMode.RELU_SOFTMAX if int(a) == 1 else AttnMode.SCALE for a in row)
                      for row in alpha)
        betas = None
        if config.linear_gelu:
            betas = tuple((1,) * config.n_tokens for _ in range(config.depth))
        return PrivateArch(config, modes, betas)

    # -- the public architecture as data: what party 0 announces, what `privit arch` prints
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: the config's fields, one mode per head, the MPCViT+ gates."""
        return {"config": dataclasses.asdict(self.config),
                "modes": [[m.value for m in row] for row in self.modes],
                "betas": None if self.betas is None else [list(b) for b in self.betas]}

    @staticmethod
    def from_dict(data: Any) -> PrivateArch:
        """The inverse of `to_dict`, strict: it comes from another role. Exact types, and
        sizes within ARCH_LIMITS (a party 0 announcing an absurd model must not make the
        others allocate it); anything else is an ArchitectureError naming the field."""
        if not isinstance(data, dict) or set(data) != {"config", "modes", "betas"}:
            raise ArchitectureError("expected the fields config, modes, betas")
        raw = data["config"]
        if not isinstance(raw, dict) or set(raw) != {f.name for f in dataclasses.fields(ViTConfig)}:
            raise ArchitectureError(
                f"config needs exactly the fields {[f.name for f in dataclasses.fields(ViTConfig)]}")
        for name, value in raw.items():
            want: type = str if name == "name" else bool if name in ("teacher", "linear_gelu") else int
            if type(value) is not want:
                raise ArchitectureError(f"config.{name} must be {want.__name__}, got {value!r:.40}")
            if type(value) is int and not 1 <= value <= ARCH_LIMITS[name]:
                raise ArchitectureError(f"config.{name} = {value} is outside [1, {ARCH_LIMITS[name]}]")
        try:
            config = ViTConfig(**raw)
        except ValueError as exc:
            raise ArchitectureError(str(exc)) from None
        if config.n_tokens > ARCH_LIMITS["tokens"]:
            raise ArchitectureError(f"{config.n_tokens} tokens exceed {ARCH_LIMITS['tokens']}")
        rows = data["modes"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise ArchitectureError("modes must be lists of head modes")
        try:
            modes = tuple(tuple(AttnMode(m) for m in row) for row in rows)
        except (TypeError, ValueError):
            raise ArchitectureError(
                f"modes must be lists of {[m.value for m in AttnMode]}") from None
        betas = data["betas"]
        if betas is not None:
            if not isinstance(betas, list) or not all(
                    isinstance(r, list) and all(type(v) is int for v in r) for r in betas):
                raise ArchitectureError("betas must be lists of the integers 0 and 1")
            betas = tuple(tuple(row) for row in betas)
        try:
            return PrivateArch(config, modes, betas)
        except ValueError as exc:
            raise ArchitectureError(str(exc)) from None

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """sha256 of the canonical JSON (hex, 16 characters): the architecture's name."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def summary(self) -> str:
        """One line for messages: model name, heads, the alpha pattern."""
        c = self.config
        pattern = self.alpha_string() or "softmax teacher"
        return f"{c.name} (d={c.dim}, L={c.depth}, H={c.heads}, alpha {pattern})"

    def alpha_string(self) -> str:
        """The pattern as 'layer,layer,...' of head digits (1 = ReLU-softmax), '' for teachers."""
        if self.config.teacher:
            return ""
        return ",".join("".join("1" if m == AttnMode.RELU_SOFTMAX else "0" for m in row)
                        for row in self.modes)


def parse_alpha(text: str, config: ViTConfig) -> list[list[int]]:
    """'1100,0011,...' (one group of head digits per layer) -> (L, H) list of 0/1."""
    rows = [r.strip() for r in text.split(",") if r.strip()]
    if len(rows) != config.depth or any(len(r) != config.heads or set(r) - {"0", "1"}
                                        for r in rows):
        raise ValueError(f"alpha pattern {text!r} must have {config.depth} groups of "
                         f"{config.heads} digits 0/1 (1 = ReLU-softmax)")
    return [[int(ch) for ch in r] for r in rows]


def alpha_from_mu(config: ViTConfig, mu: float, seed: int) -> list[list[int]]:
    """A seeded pattern with round(mu * L * H) ReLU-softmax heads (for random models)."""
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"mu must be in [0, 1], got {mu}")
    total = config.depth * config.heads
    keep = round(mu * total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed + 7919))
    flat = torch.zeros(total, dtype=torch.int64)
    flat[order[:keep]] = 1
    return flat.reshape(config.depth, config.heads).tolist()


# -- the owner's weights --------------------------------------------------------------------
def weight_layout(config: ViTConfig) -> tuple[list[tuple[str, Shape]], list[tuple[str, Shape]]]:
    """(matrices, vectors): the names and shapes of everything the owner inputs, in order.

    Matrices are right operands (k, m) of x @ W; vectors are added or multiplied
    elementwise and broadcast over tokens.
    """
    c = config
    d, hid = c.dim, c.mlp_hidden
    mats: list[tuple[str, Shape]] = [("patch", (c.in_chans * c.patch_size ** 2, d))]
    vecs: list[tuple[str, Shape]] = [("embed", (c.n_tokens, d))]
    for l in range(c.depth):
        mats += [(f"l{l}.qkv", (d, 3 * d)), (f"l{l}.proj", (d, d)),
                 (f"l{l}.fc1", (d, hid)), (f"l{l}.fc2", (hid, d))]
        vecs += [(f"l{l}.qkv_b", (3 * d,)), (f"l{l}.proj_b", (d,)), (f"l{l}.norm1_g", (d,)),
                 (f"l{l}.norm1_b", (d,)), (f"l{l}.fc1_b", (hid,)), (f"l{l}.fc2_b", (d,))]
    mats.append(("head", (d, c.num_classes)))
    vecs.append(("head_b", (c.num_classes,)))
    return mats, vecs


@dataclass(frozen=True)
class PlainWeights:
    """The owner's folded float64 weights, keyed as in `weight_layout`."""

    matrices: dict[str, torch.Tensor]
    vectors: dict[str, torch.Tensor]

    def check(self, config: ViTConfig) -> None:
        mats, vecs = weight_layout(config)
        for table, layout in ((self.matrices, mats), (self.vectors, vecs)):
            for name, shape in layout:
                if name not in table or tuple(table[name].shape) != shape:
                    got = tuple(table[name].shape) if name in table else None
                    raise ValueError(f"weight {name}: expected shape {shape}, got {got}")


@dataclass(frozen=True)
class EncodedWeights:
    """`PlainWeights` in fixed point (int64 ring values), ready to share: the matrices in
    layout order and every vector concatenated in layout order."""

    frac_bits: int
    matrices: tuple[torch.Tensor, ...]
    vectors: torch.Tensor


def encode_weights(weights: PlainWeights, config: ViTConfig, frac_bits: int, *,
                   consume: bool = False) -> EncodedWeights:
    """Encode the owner's weights once (before the online phase). With `consume`, each
    float64 matrix leaves `weights` as it is encoded, so that memory holds one of them at
    a time besides the encoded ones."""
    weights.check(config)
    mats, vecs = weight_layout(config)
    flat = torch.cat([weights.vectors[n].reshape(-1) for n, _ in vecs])
    encoded = []
    for name, _ in mats:
        matrix = weights.matrices.pop(name) if consume else weights.matrices[name]
        encoded.append(ring.encode(matrix, frac_bits))
        del matrix
    return EncodedWeights(frac_bits, tuple(encoded), ring.encode(flat, frac_bits))


def score_scale(head_dim: int) -> tuple[int, float]:
    """(e, r) with dh^-1/2 = r 2^-e, e = ceil(log2 sqrt(dh)), r in [1, 2): r is folded into
    the query weights, the scores are truncated by e extra bits."""
    root = math.sqrt(head_dim)
    e = max(0, math.ceil(math.log2(root) - 1e-12))
    return e, 2.0 ** e / root


class _Float64View:
    """A state dict read as float64 (a converted copy per read; never written through)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.tensors[key].to(torch.float64)


def export_weights(model: ViTLite) -> PlainWeights:
    """Fold and reshape a plaintext ViTLite's parameters for the private executor."""
    c = model.config
    d, dh = c.dim, c.head_dim
    # float64 one tensor at a time, as each is read: the model's own dtype stays the only
    # full copy in memory (ViT-Base: 0.35 GB float32, not another 0.7 GB of float64).
    sd = _Float64View({k: v.detach() for k, v in model.state_dict().items()})
    conv_w = sd["tokenizer.conv_layers.0.0.weight"]              # (d, C, p, p)
    mats: dict[str, torch.Tensor] = {"patch": conv_w.reshape(d, -1).t().contiguous()}
    embed = sd["classifier.positional_emb"][0].clone()            # (N, d)
    embed[0] += sd["classifier.class_emb"][0, 0]
    embed[1:] += sd["tokenizer.conv_layers.0.0.bias"]
    vecs: dict[str, torch.Tensor] = {"embed": embed}
    _, scale = score_scale(dh)
    for l in range(c.depth):
        p = f"classifier.blocks.{l}."
        g, b = sd[p + "pre_norm.weight"], sd[p + "pre_norm.bias"]
        wqkv = sd[p + "self_attn.qkv.weight"].t()                  # (d, 3d)
        qkv_w = g[:, None] * wqkv
        qkv_b = b @ wqkv
        qkv_w[:, :d] *= scale
        qkv_b[:d] *= scale
        mats[f"l{l}.qkv"] = qkv_w.contiguous()
        vecs[f"l{l}.qkv_b"] = qkv_b
        mats[f"l{l}.proj"] = sd[p + "self_attn.proj.weight"].t().contiguous()
        vecs[f"l{l}.proj_b"] = sd[p + "self_attn.proj.bias"]
        vecs[f"l{l}.norm1_g"] = sd[p + "norm1.weight"]
        vecs[f"l{l}.norm1_b"] = sd[p + "norm1.bias"]
        mats[f"l{l}.fc1"] = sd[p + "linear1.weight"].t().contiguous()
        vecs[f"l{l}.fc1_b"] = sd[p + "linear1.bias"]
        mats[f"l{l}.fc2"] = sd[p + "linear2.weight"].t().contiguous()
        vecs[f"l{l}.fc2_b"] = sd[p + "linear2.bias"]
    g, b = sd["classifier.norm.weight"], sd["classifier.norm.bias"]
    wfc = sd["classifier.fc.weight"].t()                           # (d, classes)
    mats["head"] = (g[:, None] * wfc).contiguous()
    vecs["head_b"] = b @ wfc + sd["classifier.fc.bias"]
    out = PlainWeights(mats, vecs)
    out.check(c)
    return out
