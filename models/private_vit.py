"""The private executor: MPCViT's ViT-Lite on additive shares, 2 (or more) parties + dealer.

The same computation as models/vit.py (`ViTLite.forward`), with the owner's weights
folded as in models/private_weights.py:

    embed:   t = unfold(img) @ W_patch;  x = [0; t] + embed                  (N = P + 1 rows)
    layer l: h = LN(x) (no affine: folded into qkv);  q, k, v = h @ W_qkv + b_qkv
             per head: ReLU-softmax (alpha 1), ScaleAttn (alpha 0) or softmax (teacher)
             x = x + ctx @ W_proj + b_proj;  x = LN_1(x) * g + b;  x = x + MLP(x)
    head:    logits = LN(x_cls) @ W_head + b_head                           (affine folded)

Who inputs what: the weight owner (party 0) shares the folded weights; matrices become
one-sided `OwnerWeight`s (protocols/owner_matmul.py: E = W - B sent once per model, in
the scope `weights`) and vectors are shared with zero communication. The data owner
(party 1) shares the images (zero communication). With more than 2 parties the
matrices use the generic fixed-weight product (beaver.fixed_matmul).

Batching (one message per step): all weights' masks in one message; per layer Q, K and
V come from one product; every head's first product (QK^T for ReLU-softmax/softmax
heads, QK^T or K^T V for ScaleAttn heads) is one opening, and every head's second
product (AV, or Q (K^T V)) another. ScaleAttn heads need no non-linearity: the cheaper
order is chosen per shape (`scale_order`). In the last block only the cls token's row
is needed after K and V: its queries, attention, MLP and norms run on that row alone.

Online cost per layer (2 parties, local truncation), B images, N tokens, n_q query rows
(N, or 1 in the last block), d width, hidden MLP width, H heads of width dh:
  ROUNDS  LN + 1 (QK^T-like) + normalisation + 1 (AV-like) + LN_1 + GeLU, where the
          one-sided products add no round of their own on the client.
  BYTES   client -> owner: 8 B (N d + n_q d + n_q d + n_q hidden) + 4 headers;
          both ways: 8 B H (2 N dh) + 8 B H (n_q N + N dh) for QK^T, AV (or the
          K^T V / Q M counterparts), plus the non-linear protocols' bytes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from privit.models.attention import RELU_SOFTMAX_EPS, AttnMode
from privit.models.config import ViTConfig
from privit.models.private_options import PrivateOptions
from privit.models.private_weights import (
    EncodedWeights,
    PlainWeights,
    PrivateArch,
    encode_weights,
    score_scale,
    weight_layout,
)
from privit.parties.session import Session
from privit.protocols import beaver, ring, sharing
from privit.protocols import products as batched
from privit.protocols.approx_config import precision_configs
from privit.protocols.owner_matmul import OwnerWeight, owner_matmul, prepare_owner_weights
from privit.protocols.softmax import scale_attention

LN_EPS = 1e-5



class NonLinearOps(Protocol):
    """The non-linear steps the executor needs (protocols/ implements them)."""

    def layer_norm(self, sess: Session, x: torch.Tensor, gamma: torch.Tensor | None,
                   beta: torch.Tensor | None) -> torch.Tensor: ...

    def gelu(self, sess: Session, x: torch.Tensor) -> torch.Tensor: ...

    def relu(self, sess: Session, x: torch.Tensor) -> torch.Tensor: ...

    def softmax(self, sess: Session, s: torch.Tensor) -> torch.Tensor: ...

    def relu_softmax(self, sess: Session, s: torch.Tensor) -> torch.Tensor: ...


class ProtocolOps:
    """`NonLinearOps` from the protocols package, configured by `PrivateOptions`."""

    def __init__(self, options: PrivateOptions) -> None:
        self.options = options
        self.configs = precision_configs(options.precision).with_method(options.compare)

    def layer_norm(self, sess: Session, x: torch.Tensor, gamma: torch.Tensor | None,
                   beta: torch.Tensor | None) -> torch.Tensor:
        from privit.protocols.layernorm import layer_norm

        return layer_norm(sess, x, gamma, beta, eps=LN_EPS, cfg=self.configs.layer_norm)

    def gelu(self, sess: Session, x: torch.Tensor) -> torch.Tensor:
        from privit.protocols.gelu import gelu

        return gelu(sess, x, kind=self.options.gelu, cfg=self.configs.gelu)

    def relu(self, sess: Session, x: torch.Tensor) -> torch.Tensor:
        from privit.protocols.compare import relu

        return relu(sess, x, method=self.options.compare)

    def softmax(self, sess: Session, s: torch.Tensor) -> torch.Tensor:
        from privit.protocols import softmax as sm
        from privit.protocols.approx_config import TwoQuadConfig

        if self.options.softmax == "2quad":
            return sm.two_quad(sess, s, cfg=TwoQuadConfig(method=self.options.compare))
        return sm.softmax(sess, s, dim=-1, cfg=self.configs.softmax)

    def relu_softmax(self, sess: Session, s: torch.Tensor) -> torch.Tensor:
        """ReLU(S) / (sum ReLU(S) + eps): softmax.relu_softmax, or with Circa's stochastic
        ReLU in place of the exact one (softmax.stochastic_relu_softmax)."""
        from privit.protocols import circa
        from privit.protocols import softmax as sm
        cfg = self.configs.relu_softmax
        if self.options.relu == "exact":
            return sm.relu_softmax(sess, s, eps=RELU_SOFTMAX_EPS, cfg=cfg)
        k, m = circa.default_params(sess.frac_bits)
        k = self.options.circa_k if self.options.circa_k is not None else k
        m = self.options.circa_m if self.options.circa_m is not None else m
        return sm.stochastic_relu_softmax(sess, s, k, m, eps=RELU_SOFTMAX_EPS, cfg=cfg)


# -- weights on shares -----------------------------------------------------------------------
@dataclass
class SharedLinear:
    """A prepared weight (one-sided or generic) and the share of its bias."""

    weight: OwnerWeight | beaver.FixedOperand
    bias: torch.Tensor | None

    def __call__(self, sess: Session, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.weight, OwnerWeight):
            y = owner_matmul(sess, x, self.weight)
        else:
            y = beaver.fixed_matmul(sess, x, self.weight)
        return y if self.bias is None else y + self.bias


@dataclass
class SharedModel:
    """Every weight of the model as shares / prepared operands."""

    linears: dict[str, SharedLinear] = field(default_factory=dict)
    vectors: dict[str, torch.Tensor] = field(default_factory=dict)


def _bias_of(matrix: str) -> str:
    return {"patch": "", "head": "head_b"}.get(matrix, matrix + "_b")


def share_weights(sess: Session, config: ViTConfig, weights: PlainWeights | EncodedWeights | None,
                  owner: int, use_owner_matmul: bool) -> SharedModel:
    """Input the owner's weights. 2 parties with `use_owner_matmul`: one message of every
    E = W - B (owner -> client), ROUNDS 0. Otherwise: share W (0 bytes) and open every
    fixed mask in ONE opening, ROUNDS 1, BYTES (n-1)(H + 8 sum(k m)) per party.
    Vectors: one zero-communication `share_input` of their concatenation.
    """
    mine = sess.party_id == owner and not sess.is_tracing
    encoded: EncodedWeights | None = None
    if mine:
        if weights is None:
            raise ValueError(f"party {owner} owns the weights but has none")
        encoded = (weights if isinstance(weights, EncodedWeights)
                   else encode_weights(weights, config, sess.frac_bits))
        if encoded.frac_bits != sess.frac_bits:
            raise ValueError(f"weights encoded with f = {encoded.frac_bits}, the run uses "
                             f"f = {sess.frac_bits}")
    mats, vecs = weight_layout(config)
    total = sum(int(torch.Size(s).numel()) for _, s in vecs)
    flat_share = sharing.share_input(sess, owner, encoded.vectors if encoded else None, (total,))
    vectors: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in vecs:
        size = int(torch.Size(shape).numel())
        vectors[name] = flat_share[offset:offset + size].reshape(shape)
        offset += size
    plain: list[torch.Tensor | None] = list(encoded.matrices) if encoded else [None] * len(mats)
    shapes = [(int(s[0]), int(s[1])) for _, s in mats]
    prepared: list[OwnerWeight | beaver.FixedOperand]
    if use_owner_matmul and sess.n == 2:
        prepared = list(prepare_owner_weights(sess, owner, plain, shapes, label="weights"))
    else:
        prepared = list(_fixed_operands(sess, owner, plain, shapes))
    model = SharedModel(vectors=vectors)
    for (name, _), w in zip(mats, prepared, strict=True):
        bias = _bias_of(name)
        model.linears[name] = SharedLinear(w, vectors[bias] if bias else None)
    return model


def _fixed_operands(sess: Session, owner: int, encoded: Sequence[torch.Tensor | None],
                    shapes: Sequence[tuple[int, int]]) -> list[beaver.FixedOperand]:
    """Generic fixed weights (any n): share each W, take its mask, open all masks at once."""
    shares, mats, ids = [], [], []
    for w, (k, m) in zip(encoded, shapes, strict=True):
        shares.append(sharing.share_input(sess, owner, w, (k, m)))
        ids.append(_request_index(sess))
        mats.append(sess.correlation("fixed_mask", (ids[-1], k, m)))
    opened = sharing.open_many(sess, [s - mat["b"] for s, mat in zip(shares, mats, strict=True)],
                               label="weights")
    return [beaver.FixedOperand(i, s, e) for i, s, e in zip(ids, shares, opened, strict=True)]


def _request_index(sess: Session) -> int:
    if sess.trace is not None:
        return len(sess.trace)
    assert sess.prepared is not None
    return len(sess.prepared) - sess.prepared.remaining


# -- the executor ----------------------------------------------------------------------------
def scale_order(n_q: int, n_k: int, dh: int, choice: str = "auto") -> str:
    """'qk' ((Q K^T) V) or 'kv' (Q (K^T V)) for a ScaleAttn head with n_q queries, n_k keys.

    Elements opened per head (Beaver, both operands of both products):
    qk: n_q dh + dh n_k (Q K^T) + n_q n_k + n_k dh (S V);  kv: 2 n_k dh (K^T V) + n_q dh + dh^2.
    """
    if choice != "auto":
        return choice
    qk = n_q * dh + dh * n_k + n_q * n_k + n_k * dh
    kv = 2 * n_k * dh + n_q * dh + dh * dh
    return "kv" if kv < qk else "qk"


class PrivateViT:
    """Runs a `PrivateArch` on shares. Parties call `infer` with the same arguments, except
    that only the weight owner passes `weights` and only the data owner passes `images`."""

    def __init__(self, arch: PrivateArch, options: PrivateOptions | None = None,
                 ops: NonLinearOps | None = None, *, weight_owner: int = 0,
                 data_owner: int = 1) -> None:
        self.arch = arch
        self.config = arch.config
        self.options = options or PrivateOptions()
        self.ops: NonLinearOps = ops or ProtocolOps(self.options)
        self.weight_owner = weight_owner
        self.data_owner = data_owner

    # -- entry point ---------------------------------------------------------------------
    def infer(self, sess: Session, weights: PlainWeights | EncodedWeights | None,
              images: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Opened logits (batch, classes) as float64 on every party. `weights` (owner
        only) may be encoded beforehand (`encode_weights`) to keep that out of the online
        phase."""
        c = self.config
        shape = (batch, c.in_chans, c.img_size, c.img_size)
        total = c.depth + 2
        sess.report_progress(0, total, "weights")
        with sess.scope("weights"):
            model = share_weights(sess, c, weights, self.weight_owner,
                                  self.options.owner_matmul)
        with sess.scope("input"):
            value = None
            if sess.party_id == self.data_owner and not sess.is_tracing:
                if images is None or tuple(images.shape) != shape:
                    got = None if images is None else tuple(images.shape)
                    raise ValueError(f"the data owner needs images of shape {shape}, got {got}")
                value = ring.encode(images.to(torch.float64), sess.frac_bits)
            img = sharing.share_input(sess, self.data_owner, value, shape)
        logits = self.forward(sess, model, img)
        with sess.scope("output"):
            opened = sharing.open_all(sess, logits, label="logits")
        sess.report_progress(total, total, "done")
        return ring.decode(opened, sess.frac_bits)

    def forward(self, sess: Session, model: SharedModel, img: torch.Tensor) -> torch.Tensor:
        """Shares of the logits (B, classes) from shares of the images (B, C, S, S)."""
        c = self.config
        total = c.depth + 2
        sess.report_progress(0, total, "embed")
        with sess.scope("embed"):
            x = self.embed(sess, model, img)
        for l in range(c.depth):
            sess.report_progress(l + 1, total, f"layer {l}")
            last = l == c.depth - 1
            with sess.scope(f"layer{l}"):
                x = self.block(sess, model, l, x, last)
        sess.report_progress(c.depth + 1, total, "head")
        with sess.scope("head"):
            cls = x[:, 0:1, :]
            with sess.scope("norm"):
                n = self.ops.layer_norm(sess, cls, None, None)
            with sess.scope("fc"):
                return model.linears["head"](sess, n)[:, 0, :]

    # -- pieces ----------------------------------------------------------------------------
    def embed(self, sess: Session, model: SharedModel, img: torch.Tensor) -> torch.Tensor:
        c = self.config
        b, p, g = img.shape[0], c.patch_size, c.grid_size
        # (B, C, g, p, g, p) -> (B, g, g, C, p, p): conv weight order (C, kh, kw), patches row-major
        patches = img.reshape(b, c.in_chans, g, p, g, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(b, c.n_patches, c.in_chans * p * p)
        t = model.linears["patch"](sess, patches)
        x = torch.cat([torch.zeros(b, 1, c.dim, dtype=torch.int64), t], dim=1)
        return x + model.vectors["embed"]

    def block(self, sess: Session, model: SharedModel, l: int, x: torch.Tensor,
              last: bool) -> torch.Tensor:
        lin, vec = model.linears, model.vectors
        with sess.scope("attn"):
            with sess.scope("norm"):
                h = self.ops.layer_norm(sess, x, None, None)
            ctx = self.attention(sess, model, l, h, last)
            with sess.scope("proj"):
                out = lin[f"l{l}.proj"](sess, ctx)
        x = (x[:, :1] if last else x) + out
        with sess.scope("norm1"):
            x = self.ops.layer_norm(sess, x, vec[f"l{l}.norm1_g"], vec[f"l{l}.norm1_b"])
        with sess.scope("mlp"):
            x = x + self.mlp(sess, model, l, x, last)
        return x

    def attention(self, sess: Session, model: SharedModel, l: int, h: torch.Tensor,
                  last: bool) -> torch.Tensor:
        """Context vectors (B, n_q, d) before the output projection."""
        c = self.config
        b, n, d, heads, dh = h.shape[0], h.shape[1], c.dim, c.heads, c.head_dim
        with sess.scope("qkv"):
            qkv = model.linears[f"l{l}.qkv"](sess, h)
        qkv = qkv.reshape(b, n, 3, heads, dh).permute(2, 0, 3, 1, 4)   # (3, B, H, N, dh)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if last:
            q = q[:, :, :1]
        n_q = q.shape[2]
        modes = self.arch.modes[l]
        groups = {mode: [i for i, m in enumerate(modes) if m == mode] for mode in AttnMode}
        norm_modes = [m for m in (AttnMode.RELU_SOFTMAX, AttnMode.SOFTMAX) if groups[m]]
        scale_heads = groups[AttnMode.SCALE]
        order = scale_order(n_q, n, dh, self.options.scale_order)
        if scale_heads and self.options.scale_order == "auto":
            # for the report; the order depends on shapes only, so any network picks it
            sess.counters.note_choice("scale_order", {net: order for net in ("run", "lan", "wan")})

        def pick(t: torch.Tensor, idx: list[int]) -> torch.Tensor:
            return t if len(idx) == heads else t[:, idx]

        # step 1: every head's first product, one opening. Scores carry the 2^-e of the
        # attention scale (r is in the query weights); K^T V does not.
        e_bits, _ = score_scale(dh)
        first = [(pick(q, groups[m]), pick(k, groups[m]).transpose(-2, -1)) for m in norm_modes]
        shifts = [e_bits] * len(first)
        if scale_heads:
            qs, ks, vs = pick(q, scale_heads), pick(k, scale_heads), pick(v, scale_heads)
            first.append((qs, ks.transpose(-2, -1)) if order == "qk" else (ks.transpose(-2, -1), vs))
            shifts.append(e_bits if order == "qk" else 0)
        with sess.scope("scores"):
            products = batched.beaver_matmul_many(sess, [(x.contiguous(), y.contiguous()) for x, y in first],
                                          label="attn_first", extra_bits=shifts)
        # step 2: normalise (ReLU-softmax, softmax); ScaleAttn divides by N (local)
        weights: list[torch.Tensor] = []
        for m, s in zip(norm_modes, products, strict=False):
            with sess.scope("relu_softmax" if m == AttnMode.RELU_SOFTMAX else "softmax"):
                weights.append(self.ops.relu_softmax(sess, s) if m == AttnMode.RELU_SOFTMAX
                               else self.ops.softmax(sess, s))
        second = [(a, pick(v, groups[m])) for a, m in zip(weights, norm_modes, strict=True)]
        shifts = [0] * len(second)
        if scale_heads:
            scaled = scale_attention(sess, products[-1], n)
            second.append((scaled, vs) if order == "qk" else (qs, scaled))
            shifts.append(0 if order == "qk" else e_bits)
        # step 3: every head's second product, one opening
        with sess.scope("context"):
            outs = batched.beaver_matmul_many(sess, [(x.contiguous(), y.contiguous()) for x, y in second],
                                      label="attn_second", extra_bits=shifts)
        ctx = torch.empty((b, heads, n_q, dh), dtype=torch.int64)
        for m, o in zip(norm_modes, outs, strict=False):
            ctx[:, groups[m]] = o
        if scale_heads:
            ctx[:, scale_heads] = outs[-1]
        return ctx.transpose(1, 2).reshape(b, n_q, d)

    def mlp(self, sess: Session, model: SharedModel, l: int, x: torch.Tensor,
            last: bool) -> torch.Tensor:
        """W2 GELU(W1 x), with MPCViT+ gating: GeLU only on tokens with beta = 1, ReLU after
        W2 only on tokens with beta = 0."""
        lin = model.linears
        with sess.scope("fc1"):
            h = lin[f"l{l}.fc1"](sess, x)
        betas = None
        if self.arch.betas is not None:
            betas = self.arch.betas[l][:1] if last else self.arch.betas[l]
        with sess.scope("gelu"):
            if betas is None:
                h = self.ops.gelu(sess, h)
            else:
                on = [t for t, v in enumerate(betas) if v == 1]
                if on:
                    h = h.clone()
                    h[:, on] = self.ops.gelu(sess, h[:, on].contiguous())
        with sess.scope("fc2"):
            y = lin[f"l{l}.fc2"](sess, h)
        if betas is not None:
            off = [t for t, v in enumerate(betas) if v == 0]
            if off:
                with sess.scope("relu"):
                    y = y.clone()
                    y[:, off] = self.ops.relu(sess, y[:, off].contiguous())
        return y
