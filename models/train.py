"""Plaintext training of ViT-Lite models: the shared loop and the softmax teacher.

:func:`fit` is the one training loop that the teacher (:func:`train_teacher`),
the architecture search (:mod:`privit.models.search`) and the retraining with
distillation (:mod:`privit.models.distill`) share:

* AdamW, per-step learning rate with linear warm-up then cosine decay to
  ``min_lr_ratio * lr``;
* simple augmentation: a random shift (±1 pixel for digits, ±4 for CIFAR,
  ±8 for Tiny-ImageNet; the border is filled with black) and, except for
  digits, a random horizontal flip;
* determinism: the shuffling and augmentation of epoch ``e`` come from a
  generator seeded with ``(seed, e)``, and the global torch seed (dropout) is
  reset per epoch, so a resumed run follows the same path as an uninterrupted one;
* after every epoch the model is evaluated on the test split and saved to
  ``out_path`` as an MPCViT checkpoint (:func:`privit.models.checkpoint.save_checkpoint`)
  with ``epoch`` (epochs done), ``metric`` (test top-1 in %), ``optimizer``
  (AdamW state), ``args`` (the run's settings, including the normalisation
  ``mean`` / ``std`` that inference must apply) and ``history`` (per-epoch numbers).
  With ``resume`` an existing ``out_path`` is continued from its epoch; a run that
  is already complete only re-evaluates.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from privit.models.checkpoint import (
    CheckpointError,
    read_checkpoint_file,
    save_checkpoint,
    validate_state_dict,
)
from privit.models.config import get_config
from privit.models.data import ImageDataset, Split
from privit.models.vit import ViTLite

__all__ = [
    "TrainSettings",
    "TrainResult",
    "LossFn",
    "build_model",
    "augment_batch",
    "lr_factor",
    "evaluate",
    "fit",
    "train_teacher",
]

PathLike = str | os.PathLike[str]
LossFn = Callable[[ViTLite, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""(model, images, labels) -> (scalar loss, logits)."""

_STEP_BAR_MIN = 50    # epochs with at least this many steps get a per-step bar too
_MAX_SHIFT = {"digits": 1, "cifar10": 4, "cifar100": 4, "tinyimagenet": 8}


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one training run.

    Attributes:
        epochs: passes over the train split.
        lr: peak learning rate of the weights.
        batch: examples per step (the last short batch of an epoch is dropped).
        seed: model init, shuffling, augmentation and dropout.
        weight_decay: AdamW decoupled weight decay (not applied to norms, biases,
            embeddings or architecture parameters).
        warmup_epochs: linear warm-up length.
        min_lr_ratio: the cosine decays to ``lr * min_lr_ratio``.
        label_smoothing: cross-entropy label smoothing.
        augment: random shift (and flip, except for digits).
        attn_dropout: dropout on attention weights while training.
        drop_path: largest stochastic-depth rate.
    """

    epochs: int
    lr: float
    batch: int
    seed: int = 0
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.0
    augment: bool = True
    attn_dropout: float = 0.0
    drop_path: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch < 1:
            raise ValueError(f"epochs and batch must be >= 1, got {self.epochs}, {self.batch}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass
class TrainResult:
    """What a finished :func:`fit` reports."""

    path: str
    top1: float                       # test top-1 accuracy, percent
    epochs: int                       # epochs done in total
    start_epoch: int                  # 0 for a fresh run, else the epoch resumed from
    seconds: float                    # wall time of this call
    history: list[dict[str, float]] = field(default_factory=list)


# ------------------------------------------------------------------- model
def build_model(config_name: str, data: ImageDataset, *, linear_gelu: bool = False,
                attn_dropout: float = 0.0, drop_path: float = 0.0, seed: int = 0) -> ViTLite:
    """A freshly initialised ViTLite for ``data`` (classes taken from the dataset).

    Seeds the global torch RNG with ``seed`` before the initialisation.

    Raises:
        ValueError: unknown model, or its input shape does not fit the images.
    """
    config = get_config(config_name, num_classes=data.num_classes, linear_gelu=linear_gelu)
    want = (config.in_chans, config.img_size, config.img_size)
    if data.image_shape != want:
        raise ValueError(f"model {config_name} takes images {want}, dataset {data.name} has "
                         f"{data.image_shape}")
    torch.manual_seed(seed)
    return ViTLite(config, attn_dropout=attn_dropout, drop_path=drop_path)


# ------------------------------------------------------------ augmentation
def augment_batch(images: torch.Tensor, max_shift: int, flip: bool, fill: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """Shift each image by a random (dy, dx) in [-max_shift, max_shift]^2, maybe flip it.

    Pixels shifted in from outside take ``fill`` (per channel, shape (C, 1, 1)).
    """
    b, c, h, w = images.shape
    out = images
    if max_shift > 0:
        s = max_shift
        padded = fill.to(images.dtype).expand(b, c, h + 2 * s, w + 2 * s).clone()
        padded[:, :, s:s + h, s:s + w] = images
        dy = torch.randint(0, 2 * s + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * s + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]        # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]        # (B, 1, 1, W)
        out = padded[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                     rows, cols]
    if flip:
        mirrored = torch.rand(b, generator=generator) < 0.5
        out = torch.where(mirrored[:, None, None, None], out.flip(-1), out)
    return out


# ---------------------------------------------------------------- schedule
def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def weight_groups(model: ViTLite, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the trainable weights: decayed matrices, undecayed norms/biases/embeddings.

    Architecture parameters (alpha, beta) are never included here.
    """
    decay: list[torch.nn.Parameter] = []
    plain: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad or name.endswith((".alpha", ".beta")):
            continue
        is_matrix = param.ndim >= 2 and not name.endswith(("_emb",))
        (decay if is_matrix else plain).append(param)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": plain, "weight_decay": 0.0, "name": "no_decay"}]


# -------------------------------------------------------------- evaluation
def evaluate(model: ViTLite, data: ImageDataset | Split, batch: int = 1000) -> float:
    """Top-1 accuracy in percent on ``data`` (an ImageDataset means its test split)."""
    split = data.test if isinstance(data, ImageDataset) else data
    if len(split) == 0:
        raise ValueError("cannot evaluate on an empty split")
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in split.batches(batch):
            correct += int((model(images).argmax(dim=-1) == labels).sum())
    model.train(was_training)
    return 100.0 * correct / len(split)


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    """The plain classification loss as a :data:`LossFn`."""
    def loss(model: ViTLite, images: torch.Tensor,
             labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(images)
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing), logits
    return loss


# ------------------------------------------------------------------ resume
def _try_resume(path: str, model: ViTLite, optimizer: torch.optim.Optimizer,
                identity: Mapping[str, Any], search: bool) -> tuple[int, list[dict[str, float]]]:
    """Load model + optimizer from ``path``; return (epochs done, history).

    Raises:
        CheckpointError: the file is not a resumable run of the same kind.
    """
    obj = read_checkpoint_file(path)
    args = obj.get("args") if isinstance(obj, dict) else None
    if not isinstance(args, argparse.Namespace) or not isinstance(obj.get("optimizer"), dict):
        raise CheckpointError(f"{path}: not a resumable privit training checkpoint "
                              "(no args/optimizer); use --no-resume to overwrite it")
    stored = vars(args)
    for key, want in identity.items():
        if stored.get(key) != want:
            raise CheckpointError(f"{path}: was written with {key}={stored.get(key)!r}, this run "
                                  f"has {want!r}; use --no-resume to overwrite it")
    try:
        live, _ = validate_state_dict(obj["state_dict"], model.config, search=search)
        model.load_state_dict(live, strict=True)
        optimizer.load_state_dict(obj["optimizer"])
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot resume: {err}") from None
    history = obj.get("history") if isinstance(obj.get("history"), list) else []
    return int(obj.get("epoch", 0)), list(history)


# -------------------------------------------------------------------- loop
def fit(model: ViTLite, data: ImageDataset, settings: TrainSettings, out_path: PathLike, *,
        loss_fn: LossFn, extra_groups: Sequence[dict[str, Any]] = (),
        after_step: Callable[[ViTLite], None] | None = None,
        identity: Mapping[str, Any] | None = None, search: bool = False,
        resume: bool = True, progress: bool = True, desc: str = "train",
        provenance: Mapping[str, Any] | None = None) -> TrainResult:
    """Train ``model`` on ``data.train``, checkpointing to ``out_path`` after every epoch.

    Args:
        loss_fn: computes (loss, logits) for a batch.
        extra_groups: further AdamW parameter groups (e.g. alpha); each may set
            ``lr`` (peak, scheduled like the weights) and ``weight_decay``.
        after_step: called after every optimizer step (e.g. to clamp alpha).
        identity: settings stored in ``args`` that a resumed checkpoint must match
            (model, dataset, mode, ...).
        search: the checkpoint holds continuous architecture parameters.
        resume: continue from ``out_path`` if it exists (else it is overwritten).
        progress: show tqdm bars.
        provenance: stored as the checkpoint's ``provenance`` entry (how the file was
            made: command, seed, versions; see :mod:`privit.models.provenance`).

    Raises:
        CheckpointError: ``resume`` and ``out_path`` is an incompatible file.
    """
    start_time = time.perf_counter()
    path = os.fspath(out_path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    groups = weight_groups(model, settings.weight_decay) + [dict(g) for g in extra_groups]
    base_lrs = [float(g.get("lr", settings.lr)) for g in groups]
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, betas=(0.9, 0.999))
    identity = {"model": model.config.name, "dataset": data.name,
                "num_classes": model.config.num_classes,
                "linear_gelu": model.config.linear_gelu, **(identity or {})}
    args = argparse.Namespace(img_size=model.config.img_size, mean=list(data.mean),
                              std=list(data.std), **asdict(settings), **identity)

    start_epoch = 0
    history: list[dict[str, float]] = []
    if resume and os.path.exists(path):
        start_epoch, history = _try_resume(path, model, optimizer, identity, search)
    steps_per_epoch = max(1, len(data.train) // settings.batch)
    total_steps = settings.epochs * steps_per_epoch
    warmup_steps = min(settings.warmup_epochs * steps_per_epoch, total_steps // 2)
    fill = data.background()
    max_shift = _MAX_SHIFT.get(data.name, 0) if settings.augment else 0
    flip = settings.augment and data.name != "digits"
    top1 = history[-1]["top1"] if history else float("nan")

    epochs = range(start_epoch, settings.epochs)
    bar = tqdm(epochs, desc=desc, unit="epoch", disable=not progress, dynamic_ncols=True,
               initial=start_epoch, total=settings.epochs)
    for epoch in bar:
        epoch_start = time.perf_counter()
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch)
        torch.manual_seed(settings.seed * 1_000_003 + epoch)
        order = torch.randperm(len(data.train), generator=generator)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        steps = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}", unit="step",
                     leave=False, dynamic_ncols=True,
                     disable=not progress or steps_per_epoch < _STEP_BAR_MIN)
        for i in steps:
            index = order[i * settings.batch:(i + 1) * settings.batch]
            images, labels = data.train.images[index], data.train.labels[index]
            if max_shift or flip:
                images = augment_batch(images, max_shift, flip, fill, generator)
            factor = lr_factor(epoch * steps_per_epoch + i, total_steps, warmup_steps,
                               settings.min_lr_ratio)
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * factor
            loss, logits = loss_fn(model, images, labels)
            if not bool(torch.isfinite(loss.detach())):
                raise FloatingPointError(f"{desc}: loss is {loss.item()} at epoch {epoch + 1}, "
                                         f"step {i + 1}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step(model)
            loss_sum += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(-1) == labels).sum())
            seen += len(labels)
        top1 = evaluate(model, data.test)
        history.append({"epoch": float(epoch + 1), "loss": loss_sum / max(seen, 1),
                        "train_acc": 100.0 * correct / max(seen, 1), "top1": top1,
                        "seconds": time.perf_counter() - epoch_start})
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", top1=f"{top1:.2f}")
        save_checkpoint(path, model, extra={
            "epoch": epoch + 1, "metric": top1, "optimizer": optimizer.state_dict(),
            "args": args, "history": history,
            **({"provenance": dict(provenance)} if provenance is not None else {})})
    if math.isnan(top1):
        top1 = evaluate(model, data.test)
    model.eval()
    return TrainResult(path=path, top1=top1, epochs=settings.epochs, start_epoch=start_epoch,
                       seconds=time.perf_counter() - start_time, history=history)


# ----------------------------------------------------------------- teacher
def train_teacher(config_name: str, data: ImageDataset, epochs: int, lr: float, batch: int,
                  seed: int, out_path: PathLike, resume: bool = True, progress: bool = True,
                  provenance: Mapping[str, Any] | None = None,
                  **options: Any) -> tuple[ViTLite, TrainResult]:
    """Train the all-softmax teacher (e.g. ``vit_digits_teacher``) from scratch.

    Args:
        config_name: a ``*_teacher`` registry name.
        data: the dataset (its class count sets the classifier width).
        epochs, lr, batch, seed: see :class:`TrainSettings`.
        out_path: the checkpoint, rewritten after every epoch.
        resume: continue an interrupted run at ``out_path``.
        progress: tqdm bars.
        provenance: the checkpoint's ``provenance`` entry (see :func:`fit`).
        **options: further :class:`TrainSettings` fields (weight_decay,
            label_smoothing, warmup_epochs, augment, attn_dropout, drop_path, ...).

    Returns:
        (the trained model in eval mode, the run's :class:`TrainResult`)
    """
    settings = TrainSettings(epochs=epochs, lr=lr, batch=batch, seed=seed, **options)
    model = build_model(config_name, data, attn_dropout=settings.attn_dropout,
                        drop_path=settings.drop_path, seed=seed)
    if not model.config.teacher:
        raise ValueError(f"{config_name} is not a softmax teacher (use a '*_teacher' model)")
    result = fit(model, data, settings, out_path,
                 loss_fn=cross_entropy_loss(settings.label_smoothing),
                 identity={"mode": "teacher"}, resume=resume, progress=progress,
                 desc=f"teacher {config_name}", provenance=provenance)
    return model, result
