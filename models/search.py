"""MPCViT's architecture search: learn which heads keep ReLU-softmax.

In search mode (:meth:`ViTLite.set_search`) every head outputs
``alpha * RSAttn(S) + (1 - alpha) * ScaleAttn(S)`` with a continuous alpha per
head per layer.  :func:`search` trains alpha jointly with the weights under::

    loss = CE + lambda_alpha * sum |alpha|                                   (MPCViT)
              + gamma * sum_heads [alpha * c_rs + (1 - alpha) * c_scale] / c_max   (optional)

and clamps alpha to [0, 1] after every step.  The optional cost term uses
per-head MPC costs read from a *cost file* (:func:`load_cost_file`), so that
heads where ReLU-softmax is expensive are pushed towards ScaleAttn harder.
:func:`binarise` then keeps the top ``mu`` share of heads (global top-k) as
ReLU-softmax, exactly as MPCViT's retrain does.

MPCViT+ (``linear_gelu``): each block's per-token gate beta (1, N, 1) is
searched the same way (trainable, same L1 weight ``lambda_alpha``, clamped to
[0, 1]); retraining keeps GeLU on the top ``beta_keep`` share of all L x N
tokens (:func:`binarise` again) and linearises the others.

Cost file (JSON; ``privit profile`` writes it)::

    {
      "unit": "bytes",                  # optional, free text: "bytes", "seconds", "rounds"
      "model": "vit_digits",            # optional; if present it must name the searched model
      "note": "...",                    # optional, free text
      "relu_softmax": 12345.0,          # cost of ONE head's ReLU-softmax
      "scale_attn": 678.0               # cost of ONE head's ScaleAttn
    }

``relu_softmax`` and ``scale_attn`` are each a number (every head of every
layer), a list of L numbers (per layer), or a list of L lists of H numbers
(per head).  Values are finite and >= 0 in any one unit (the term is divided
by the largest value, so ``gamma`` is unit-free).  Other keys are refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from privit.models.data import ImageDataset
from privit.models.train import LossFn, PathLike, TrainResult, TrainSettings, build_model, fit
from privit.models.vit import ViTLite

__all__ = [
    "DEFAULT_LAMBDA_ALPHA",
    "HeadCosts",
    "load_cost_file",
    "parse_costs",
    "cost_penalty",
    "binarise",
    "search_loss",
    "search",
]

DEFAULT_LAMBDA_ALPHA = 1e-5
"""L1 weight on alpha, MPCViT's default."""

_COST_KEYS = ("relu_softmax", "scale_attn")
_INFO_KEYS = ("unit", "model", "note")


# ------------------------------------------------------------------- costs
@dataclass(frozen=True)
class HeadCosts:
    """Per-head costs (L, H) of ReLU-softmax and ScaleAttn, in one unit."""

    relu_softmax: torch.Tensor
    scale_attn: torch.Tensor
    unit: str | None = None

    @property
    def scale(self) -> float:
        """The largest value of both tables (the penalty's divisor)."""
        return float(torch.maximum(self.relu_softmax, self.scale_attn).max())


def _cost_table(value: Any, depth: int, heads: int, key: str) -> torch.Tensor:
    def number(x: Any) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
            raise ValueError(f"{key}: costs must be finite numbers >= 0, got {x!r}")
        return float(x)

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.full((depth, heads), number(value))
    if isinstance(value, list) and len(value) == depth:
        rows = []
        for layer, row in enumerate(value):
            if isinstance(row, list):
                if len(row) != heads:
                    raise ValueError(f"{key}[{layer}]: expected {heads} per-head costs, "
                                     f"got {len(row)}")
                rows.append([number(x) for x in row])
            else:
                rows.append([number(row)] * heads)
        return torch.tensor(rows, dtype=torch.float32)
    size = len(value) if isinstance(value, list) else type(value).__name__
    raise ValueError(f"{key}: expected a number, {depth} per-layer values or {depth} lists of "
                     f"{heads}, got {size}")


def parse_costs(obj: Any, depth: int, heads: int, model: str | None = None) -> HeadCosts:
    """Validate a decoded cost-file object (see the module docstring) into :class:`HeadCosts`."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(_COST_KEYS) - set(_INFO_KEYS))
    if unknown:
        raise ValueError(f"unknown keys {unknown}; allowed: {list(_COST_KEYS + _INFO_KEYS)}")
    missing = [k for k in _COST_KEYS if k not in obj]
    if missing:
        raise ValueError(f"missing keys {missing}")
    if model is not None and "model" in obj and obj["model"] not in (model, f"{model}_teacher"):
        raise ValueError(f"costs were measured for {obj['model']!r}, not {model!r}")
    costs = HeadCosts(_cost_table(obj["relu_softmax"], depth, heads, "relu_softmax"),
                      _cost_table(obj["scale_attn"], depth, heads, "scale_attn"),
                      str(obj["unit"]) if "unit" in obj else None)
    if costs.scale <= 0:
        raise ValueError("all costs are zero")
    return costs


def load_cost_file(path: PathLike, depth: int, heads: int, model: str | None = None) -> HeadCosts:
    """Read a cost file for a model with ``depth`` layers of ``heads`` heads.

    Raises:
        ValueError: unreadable JSON or any format problem, naming the file.
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as handle:
            obj = json.load(handle)
    except OSError as err:
        raise ValueError(f"{name}: cannot read cost file: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}: not JSON: {err}") from None
    try:
        return parse_costs(obj, depth, heads, model)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def cost_penalty(alpha: torch.Tensor, costs: HeadCosts) -> torch.Tensor:
    """``sum [alpha * c_rs + (1 - alpha) * c_scale] / c_max`` for alpha of shape (L, H)."""
    mixed = alpha * costs.relu_softmax + (1 - alpha) * costs.scale_attn
    return mixed.sum() / costs.scale


# -------------------------------------------------------------- binarise
def binarise(alpha: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
             mu: float) -> torch.Tensor:
    """Binary architecture from searched alpha (L, H): global top-k, as MPCViT's retrain.

    Flatten layer-major (layer, then head), sort ascending, and set to 1 the
    entries at sorted positions ``int((1 - mu) * L * H)`` onwards; the rest are 0.
    So ``mu`` is the share of heads kept as ReLU-softmax (mu = 0: none, mu = 1:
    all; the count follows MPCViT's float rounding, e.g. mu = 0.9 of 10 heads
    keeps 10).  Ties: MPCViT calls ``np.argsort`` (quicksort, which may break
    ties differently on different CPUs); this uses the *stable* sort, which
    gives the same result whenever the values are distinct, and among equal
    values makes the later heads (layer-major order) the ones kept.

    Returns:
        float32 tensor (L, H) of 0.0 / 1.0.

    Raises:
        ValueError: mu outside [0, 1], alpha not 2-d, or NaN in alpha.
    """
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"mu must be in [0, 1], got {mu}")
    values = np.asarray(torch.as_tensor(alpha, dtype=torch.float32).detach().cpu())
    if values.ndim != 2:
        raise ValueError(f"alpha must have shape (L, H), got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("alpha contains NaN or Inf")
    flat = values.reshape(-1)
    order = np.argsort(flat, kind="stable")
    binary = np.zeros(flat.size, dtype=np.float32)
    binary[order[int((1 - mu) * flat.size):]] = 1.0
    return torch.from_numpy(binary.reshape(values.shape))


# ---------------------------------------------------------------- search
def _arch_parameters(model: ViTLite) -> list[torch.nn.Parameter]:
    params = [b.self_attn.alpha for b in model.blocks if b.self_attn.alpha is not None]
    params += [b.beta for b in model.blocks if b.beta is not None]
    return params


def _clamp_arch(model: ViTLite) -> None:
    with torch.no_grad():
        for param in _arch_parameters(model):
            param.clamp_(0.0, 1.0)


def search_loss(lambda_alpha: float, costs: HeadCosts | None = None, gamma: float = 0.0,
                label_smoothing: float = 0.0) -> LossFn:
    """The search objective as a :data:`~privit.models.train.LossFn` (see the module doc)."""
    def loss(model: ViTLite, images: torch.Tensor,
             labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(images)
        total = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        arch = _arch_parameters(model)
        total = total + lambda_alpha * sum(p.abs().sum() for p in arch)
        if costs is not None and gamma:
            alpha = torch.stack([b.self_attn.alpha_parameter().reshape(-1)
                                 for b in model.blocks])
            total = total + gamma * cost_penalty(alpha, costs)
        return total, logits
    return loss


def search(config_name: str, data: ImageDataset, epochs: int, lr: float, batch: int, seed: int,
           out_path: PathLike, *, lambda_alpha: float = DEFAULT_LAMBDA_ALPHA,
           alpha_lr: float | None = None, cost_file: PathLike | None = None,
           gamma: float = 0.0, linear_gelu: bool = False, resume: bool = True,
           progress: bool = True, provenance: Mapping[str, Any] | None = None,
           **options: Any) -> tuple[ViTLite, TrainResult]:
    """Search alpha (and MPCViT+ beta) jointly with the weights of a fresh student.

    Args:
        config_name: a student registry name (e.g. ``vit_digits``).
        data, epochs, lr, batch, seed: as for :func:`privit.models.train.train_teacher`.
        out_path: the search checkpoint (continuous alpha: load it with ``search=True``).
        lambda_alpha: L1 weight on alpha (and beta).
        alpha_lr: peak learning rate of alpha/beta (default: ``lr``); no weight decay.
        cost_file: per-head MPC costs; used only when ``gamma`` > 0.
        gamma: weight of the cost term.
        linear_gelu: search MPCViT+'s per-token beta too.
        resume, progress, provenance, **options: as for :func:`~privit.models.train.fit` /
            :class:`~privit.models.train.TrainSettings`.

    Returns:
        (the model in search mode, eval; the :class:`TrainResult`)
    """
    if lambda_alpha < 0 or gamma < 0:
        raise ValueError(f"lambda_alpha and gamma must be >= 0, got {lambda_alpha}, {gamma}")
    settings = TrainSettings(epochs=epochs, lr=lr, batch=batch, seed=seed, **options)
    model = build_model(config_name, data, linear_gelu=linear_gelu,
                        attn_dropout=settings.attn_dropout, drop_path=settings.drop_path,
                        seed=seed)
    if model.config.teacher:
        raise ValueError(f"{config_name} is a softmax teacher; search needs a student model")
    costs = None
    if gamma > 0:
        if cost_file is None:
            raise ValueError("gamma > 0 needs a cost file")
        costs = load_cost_file(cost_file, model.config.depth, model.config.heads, config_name)
    model.set_search(True)
    for block in model.blocks:
        if block.beta is not None:
            block.beta.requires_grad_(True)
    group = {"params": _arch_parameters(model), "lr": alpha_lr or lr, "weight_decay": 0.0,
             "name": "arch"}
    identity = {"mode": "search", "lambda_alpha": lambda_alpha, "gamma": gamma,
                "cost_file": os.fspath(cost_file) if costs is not None and cost_file else None}
    result = fit(model, data, settings, out_path,
                 loss_fn=search_loss(lambda_alpha, costs, gamma, settings.label_smoothing),
                 extra_groups=[group], after_step=_clamp_arch, identity=identity, search=True,
                 resume=resume, progress=progress, desc=f"search {config_name}",
                 provenance=provenance)
    return model, result
