"""Retraining a searched architecture, optionally distilled from the softmax teacher.

:func:`retrain` builds a *fresh* student, fixes its alpha to the binary
architecture that :func:`privit.models.search.binarise` derives from a search
(alpha frozen, so every head is exactly ReLU-softmax or ScaleAttn), and trains
it from scratch.  With a teacher the loss is::

    (1 - kd_alpha) * CE(student, labels)
      + kd_alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
      + token_mse_weight * MSE(student final tokens, teacher final tokens)

where the final tokens are the final-LayerNorm outputs of all N tokens
(:meth:`ViTLite.forward_features`); the token term needs equal widths and
token counts.  Without a teacher it is the plain cross-entropy.

MPCViT+ (``linear_gelu``): the search must have been run with ``linear_gelu``
too; the searched per-token beta of all L blocks (L x N values) is binarised by
the same global top-k rule, keeping GeLU on the ``beta_keep`` share of tokens
with the largest beta and making the others' MLP linear + ReLU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from privit.models.checkpoint import load_checkpoint
from privit.models.data import ImageDataset
from privit.models.search import binarise
from privit.models.train import (
    LossFn,
    PathLike,
    TrainResult,
    TrainSettings,
    build_model,
    cross_entropy_loss,
    fit,
)
from privit.models.vit import ViTLite

__all__ = ["distillation_terms", "distillation_loss", "searched_architecture", "retrain"]


def distillation_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       labels: torch.Tensor, *, temperature: float,
                       student_tokens: torch.Tensor | None = None,
                       teacher_tokens: torch.Tensor | None = None,
                       label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """The three loss terms, unweighted: 'ce', 'kl' (times T^2) and 'token_mse' (0 if no tokens)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    ce = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    kl = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                  F.log_softmax(teacher_logits / temperature, dim=-1),
                  reduction="batchmean", log_target=True) * temperature ** 2
    if student_tokens is None or teacher_tokens is None:
        token_mse = student_logits.new_zeros(())
    else:
        if student_tokens.shape != teacher_tokens.shape:
            raise ValueError(f"student tokens {tuple(student_tokens.shape)} and teacher tokens "
                             f"{tuple(teacher_tokens.shape)} differ; set token_mse_weight=0")
        token_mse = F.mse_loss(student_tokens, teacher_tokens)
    return {"ce": ce, "kl": kl, "token_mse": token_mse}


def distillation_loss(teacher: ViTLite, kd_alpha: float, temperature: float,
                      token_mse_weight: float, label_smoothing: float = 0.0) -> LossFn:
    """The KD objective (module docstring) as a :data:`~privit.models.train.LossFn`."""
    if not 0.0 <= kd_alpha <= 1.0 or token_mse_weight < 0:
        raise ValueError(f"kd_alpha must be in [0, 1] and token_mse_weight >= 0, got "
                         f"{kd_alpha}, {token_mse_weight}")
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    use_tokens = token_mse_weight > 0

    def loss(model: ViTLite, images: torch.Tensor,
             labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            t_tokens = teacher.forward_features(images)
            t_logits = teacher.classifier.fc(t_tokens[:, 0])
        s_tokens = model.forward_features(images)
        s_logits = model.classifier.fc(s_tokens[:, 0])
        terms = distillation_terms(s_logits, t_logits, labels, temperature=temperature,
                                   student_tokens=s_tokens if use_tokens else None,
                                   teacher_tokens=t_tokens if use_tokens else None,
                                   label_smoothing=label_smoothing)
        total = ((1 - kd_alpha) * terms["ce"] + kd_alpha * terms["kl"]
                 + token_mse_weight * terms["token_mse"])
        return total, s_logits
    return loss


def searched_architecture(searched: PathLike | ViTLite
                          ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The continuous (alpha (L, H), beta (L, N) or None) of a search checkpoint or model."""
    model = searched if isinstance(searched, ViTLite) else load_checkpoint(searched,
                                                                           search=True)[0]
    beta = None
    if model.config.linear_gelu:
        beta = torch.stack([b.beta_parameter().detach().reshape(-1)
                            for b in model.blocks])
    return model.get_alpha(), beta


def retrain(config_name: str, data: ImageDataset, searched: PathLike | ViTLite, mu: float,
            epochs: int, lr: float, batch: int, seed: int, out_path: PathLike, *,
            teacher_path: PathLike | None = None, kd_alpha: float = 0.5,
            kd_temperature: float = 4.0, token_mse_weight: float = 0.0,
            linear_gelu: bool = False, beta_keep: float = 0.5, resume: bool = True,
            progress: bool = True, provenance: Mapping[str, Any] | None = None,
            **options: Any) -> tuple[ViTLite, TrainResult]:
    """Train a fresh student with the binarised searched architecture, optionally with KD.

    Args:
        config_name: the student registry name (must match the search's depth and heads).
        data, epochs, lr, batch, seed: as for :func:`privit.models.train.train_teacher`.
        searched: the search checkpoint (or the searched model itself).
        mu: share of heads kept as ReLU-softmax (:func:`binarise`).
        out_path: the final MPCViT checkpoint (binary alpha; loads with ``load_checkpoint``).
        teacher_path: a teacher checkpoint; None trains without distillation.
        kd_alpha: weight of the KL term (CE gets ``1 - kd_alpha``).
        kd_temperature: softening temperature T.
        token_mse_weight: weight of the final-token MSE term.
        linear_gelu: MPCViT+; needs a search run with ``linear_gelu``.
        beta_keep: MPCViT+ share of tokens that keep GeLU.
        resume, progress, provenance, **options: as for :func:`~privit.models.train.fit`.

    Returns:
        (the trained model, eval mode; the :class:`TrainResult`)
    """
    settings = TrainSettings(epochs=epochs, lr=lr, batch=batch, seed=seed, **options)
    alpha, beta = searched_architecture(searched)
    model = build_model(config_name, data, linear_gelu=linear_gelu,
                        attn_dropout=settings.attn_dropout, drop_path=settings.drop_path,
                        seed=seed)
    if model.config.teacher:
        raise ValueError(f"{config_name} is a softmax teacher; retrain needs a student model")
    want = (model.config.depth, model.config.heads)
    if tuple(alpha.shape) != want:
        raise ValueError(f"the search has alpha of shape {tuple(alpha.shape)}, "
                         f"{config_name} needs {want}")
    binary = binarise(alpha, mu)
    model.set_alpha(binary)
    binary_beta = None
    if linear_gelu:
        if beta is None:
            raise ValueError("linear_gelu needs a search run with linear_gelu (no beta found)")
        binary_beta = binarise(beta, beta_keep)
        with torch.no_grad():
            for block, row in zip(model.blocks, binary_beta, strict=True):
                block.beta_parameter().copy_(row.reshape(1, -1, 1))

    if teacher_path is not None:
        teacher, _ = load_checkpoint(teacher_path)
        if teacher.config.num_classes != data.num_classes:
            raise ValueError(f"teacher {teacher_path} has {teacher.config.num_classes} classes, "
                             f"the dataset {data.num_classes}")
        loss_fn = distillation_loss(teacher, kd_alpha, kd_temperature, token_mse_weight,
                                    settings.label_smoothing)
    else:
        loss_fn = cross_entropy_loss(settings.label_smoothing)
    identity = {
        "mode": "retrain", "mu": mu, "alpha": binary.tolist(),
        "beta": binary_beta.tolist() if binary_beta is not None else None,
        "teacher": os.fspath(teacher_path) if teacher_path is not None else None,
        "kd_alpha": kd_alpha if teacher_path is not None else None,
        "kd_temperature": kd_temperature if teacher_path is not None else None,
        "token_mse_weight": token_mse_weight if teacher_path is not None else None,
    }
    result = fit(model, data, settings, out_path, loss_fn=loss_fn, identity=identity,
                 resume=resume, progress=progress, desc=f"retrain {config_name} mu={mu}",
                 provenance=provenance)
    model.check_binary_alpha()
    return model, result
