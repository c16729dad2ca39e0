"""The `vit` job: private inference of a ViT-Lite (MPCViT) model, checked against plaintext.

Parameters (JobSpec params; `privit run` fills them from its options):
  checkpoint   path of an MPCViT .pth.tar (default: the embedded digits model, see
               `default_checkpoint`; "none" forces a seeded random model)
  model        registry name (vit_7_4_32, vit_9_12_64, vit_digits, *_teacher); with a
               checkpoint it overrides the file's arch, without one it picks the random model
  mu | alpha   random students only: share of ReLU-softmax heads (seeded pattern), or an
               explicit pattern "1100,0011,..." (one group of head digits per layer)
  init         random models only: "unit" (default, unit-scale activations) or "vit"
               (ViTLite's own initialisation), see `random_model`
  batch        images per inference (default: every image of `images`, else 1, or 16
               for digits test images)
  images       path of a torch file holding a float tensor (B, C, H, W), or a dict with
               "images" and optionally "labels" (read with weights_only=True)
  offset       first digits test image (default 0)
  gelu, relu, circa_k, circa_m, compare, softmax, scale_order, owner_matmul
               `PrivateOptions` (models/private_vit.py)
Images: `images` if given; else, for a digits model, scikit-learn's digits test split
(labels known); else seeded N(0, 1) images. Weights come from party 0, images from
party 1. Outputs: `logits` (B, classes) and, when labels are known, `labels`.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from privit.launch.jobs import DATA_OWNER, JOBS, WEIGHT_OWNER, Job
from privit.models.checkpoint import load_checkpoint
from privit.models.config import ViTConfig, get_config
from privit.models.private_vit import PrivateOptions, PrivateViT
from privit.models.private_weights import (
    EncodedWeights,
    PrivateArch,
    alpha_from_mu,
    encode_weights,
    export_weights,
    parse_alpha,
)
from privit.models.vit import ViTLite
from privit.parties.config import RunConfig
from privit.parties.session import Session

DEFAULT_ASSET = "vit_digits_mu0.5.pth.tar"
DIGITS_BATCH = 16
DEFAULT_MU = 0.5
RANDOM_INITS = ("unit", "vit")


def assets_dir() -> Path:
    return Path(str(resources.files("privit.models"))) / "assets"


def default_checkpoint() -> Path | None:
    """The embedded model: assets/vit_digits_mu0.5.pth.tar, else any vit_digits checkpoint
    in assets/ (sorted by name), else None (a seeded random vit_digits is used)."""
    folder = assets_dir()
    preferred = folder / DEFAULT_ASSET
    if preferred.is_file():
        return preferred
    found = sorted(folder.glob("vit_digits*.pth.tar")) if folder.is_dir() else []
    return found[0] if found else None


def random_model(config: ViTConfig, alpha: list[list[int]] | None, seed: int,
                 init: str = "unit") -> ViTLite:
    """A seeded random ViTLite (the global RNG is left untouched).

    init "vit": ViTLite's own initialisation (linear std 0.02: near-uniform attention and
    logits that hardly depend on the image); "unit" (default): every linear weight
    N(0, 1/fan_in) and bias N(0, 0.1^2), so activations, attention scores and logits have
    the unit scale of a trained model and the argmax depends on the image.
    """
    if init not in RANDOM_INITS:
        raise ValueError(f"vit: init must be one of {', '.join(RANDOM_INITS)}, got {init!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ViTLite(config)
        if init == "unit":
            with torch.no_grad():
                for module in model.modules():
                    if isinstance(module, nn.Linear):
                        module.weight.normal_(0.0, module.in_features ** -0.5)
                        if module.bias is not None:
                            module.bias.normal_(0.0, 0.1)
    if alpha is not None:
        model.set_alpha(alpha)
    return model.eval()


def load_images(path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images (B, C, H, W) float64, labels (B,) int64 or None) from a torch file."""
    if not os.path.isfile(path):
        raise ValueError(f"images: no such file {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    labels = None
    if isinstance(obj, dict):
        if "images" not in obj:
            raise ValueError(f"{path}: a dict of tensors needs an 'images' entry")
        images, labels = obj["images"], obj.get("labels")
    else:
        images = obj
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"{path}: expected a float tensor (B, C, H, W)")
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1]:
            raise ValueError(f"{path}: labels must be a tensor of shape ({images.shape[0]},)")
        labels = labels.to(torch.int64)
    return images.to(torch.float64), labels


def digits_test_images(offset: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits test images [offset, offset + count) (normalised as in training) and labels."""
    from privit.models.data import load_digits

    test = load_digits().test
    if not 0 <= offset or offset + count > len(test):
        raise ValueError(f"digits test split has {len(test)} images; asked for "
                         f"[{offset}, {offset + count})")
    return (test.images[offset:offset + count].to(torch.float64),
            test.labels[offset:offset + count].clone())


def options_from_params(params: dict[str, Any]) -> PrivateOptions:
    k, m = params.get("circa_k"), params.get("circa_m")
    return PrivateOptions(
        gelu=str(params.get("gelu", "poly")), relu=str(params.get("relu", "exact")),
        circa_k=None if k in (None, "") else int(k), circa_m=None if m in (None, "") else int(m),
        compare=str(params.get("compare", "auto")), softmax=str(params.get("softmax", "exact")),
        scale_order=str(params.get("scale_order", "auto")),
        owner_matmul=bool(int(params.get("owner_matmul", 1))),
    )


KNOWN_PARAMS = {"checkpoint", "model", "mu", "alpha", "init", "batch", "images", "offset", "gelu",
                "relu", "circa_k", "circa_m", "compare", "softmax", "scale_order",
                "owner_matmul"}


class VitJob(Job):
    """Private ViT inference; reference = models/vit.py on the same weights and images."""

    name = "vit"
    description = "private ViT-Lite inference (MPCViT); default: embedded digits model"

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        params = dict(cfg.job.params)
        unknown = sorted(set(params) - KNOWN_PARAMS)
        if unknown:
            raise ValueError(f"vit: unknown parameters {unknown}; known: {sorted(KNOWN_PARAMS)}")
        self.options = options_from_params(params)
        self.model, self.checkpoint = self._load_model(params)
        self.arch = PrivateArch.from_model(self.model)
        self.image_source = "random"
        self.images, self.labels = self._load_images(params)
        self.batch = int(self.images.shape[0])
        c = self.model.config
        want = (c.in_chans, c.img_size, c.img_size)
        if tuple(self.images.shape[1:]) != want:
            raise ValueError(f"{c.name} takes images (B, {', '.join(map(str, want))}), got "
                             f"{tuple(self.images.shape)}")
        # Folded and encoded now, before any online phase (the owner's plaintext work).
        self.weights: EncodedWeights = encode_weights(export_weights(self.model), c,
                                                      cfg.frac_bits)

    # -- inputs ------------------------------------------------------------------------------
    def _load_model(self, params: dict[str, Any]) -> tuple[ViTLite, str | None]:
        path = params.get("checkpoint")
        name = params.get("model")
        if path in (None, "") and name in (None, ""):
            found = default_checkpoint()
            path = str(found) if found else "none"
        if path not in (None, "", "none"):
            if "mu" in params or "alpha" in params:
                raise ValueError("vit: mu/alpha apply to random models; a checkpoint has its own")
            model, _ = load_checkpoint(str(path), model_name=name or None)
            return model.eval(), str(path)
        config = get_config(str(name or "vit_digits"))
        alpha = None
        if not config.teacher:
            if "alpha" in params:
                alpha = parse_alpha(str(params["alpha"]), config)
            else:
                alpha = alpha_from_mu(config, float(params.get("mu", DEFAULT_MU)), self.cfg.seed)
        elif "mu" in params or "alpha" in params:
            raise ValueError(f"vit: {config.name} is a softmax teacher: no mu/alpha")
        return random_model(config, alpha, self.cfg.seed, str(params.get("init", "unit"))), None

    def _load_images(self, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        c = self.model.config
        batch = params.get("batch")
        if batch is not None and int(batch) < 1:
            raise ValueError(f"vit: batch must be >= 1, got {batch}")
        if params.get("images"):
            images, labels = load_images(str(params["images"]))
            self.image_source = "file"
            if batch is not None:
                if int(batch) > images.shape[0]:
                    raise ValueError(f"vit: batch {batch} but the images file holds "
                                     f"{images.shape[0]}")
                images = images[:int(batch)]
                labels = None if labels is None else labels[:int(batch)]
            return images, labels
        if c.name.startswith("vit_digits"):
            self.image_source = "digits"
            return digits_test_images(int(params.get("offset", 0)),
                                      int(batch or DIGITS_BATCH))
        gen = torch.Generator().manual_seed(self.cfg.seed + 1)
        shape = (int(batch or 1), c.in_chans, c.img_size, c.img_size)
        return torch.randn(shape, generator=gen, dtype=torch.float64), None

    # -- Job -----------------------------------------------------------------------------------
    def run(self, sess: Session) -> dict[str, torch.Tensor]:
        executor = PrivateViT(self.arch, self.options, weight_owner=WEIGHT_OWNER,
                              data_owner=DATA_OWNER)
        owner = sess.party_id == WEIGHT_OWNER and not sess.is_tracing
        client = sess.party_id == DATA_OWNER and not sess.is_tracing
        logits = executor.infer(sess, self.weights if owner else None,
                                self.images if client else None, self.batch)
        out = {"logits": logits}
        if self.labels is not None:
            out["labels"] = self.labels.to(torch.float64)
        return out

    def reference(self) -> dict[str, torch.Tensor]:
        model = self.model.double()
        with torch.no_grad():
            logits = model(self.images)
        out = {"logits": logits}
        if self.labels is not None:
            out["labels"] = self.labels.to(torch.float64)
        return out


def materialize_images(cfg: RunConfig, folder: Path) -> dict[str, Any]:
    """The job's params made explicit for the roles: the embedded checkpoint's path when
    none was named (so the report says which model ran), and default digits test images
    written once to `folder`, so that the roles read a small tensor file instead of each
    importing scikit-learn (~1 s)."""
    params = dict(cfg.job.params)
    job = VitJob(cfg)
    if job.checkpoint and not params.get("checkpoint"):
        params["checkpoint"] = job.checkpoint
    if job.image_source == "digits":
        target = folder / "digits_test_images.pt"
        assert job.labels is not None
        torch.save({"images": job.images, "labels": job.labels}, target)
        params.pop("offset", None)
        params["images"] = str(target)
    return params


JOBS[VitJob.name] = VitJob
