"""The `vit` job: private inference of a ViT-Lite (MPCViT) model, checked against plaintext.

Role inputs (`RoleInputs`, never shared, never hashed): party 0's `checkpoint` (an MPCViT
.pth.tar; default: the embedded digits model, see `default_checkpoint`), party 1's `images`,
and a public `arch` file any role may pin.
Parameters (JobSpec params, the same on every role, typed and checked by `VitSpec` in
launch/vit_spec.py, where each is one field; `privit run|party|dealer` offer them as options):
  model        registry name (vit_7_4_32, vit_9_12_64, vit_digits, vit_base_16, *_teacher); with a
               checkpoint it overrides the file's arch, without one it picks the random model
  mu | alpha   random students only: share of ReLU-softmax heads (seeded pattern), or an
               explicit pattern "1100,0011,..." (one group of head digits per layer)
  init         random models only: "unit" (default, unit-scale activations) or "vit"
               (ViTLite's own initialisation), see `random_model`
  batch        images per inference (default: every image of `images`, else 1, or 16
               for digits test images)
  offset       first digits test image (default 0)
  gelu, relu, circa_k, circa_m, compare, softmax, scale_order, owner_matmul
               `PrivateOptions` (models/private_options.py)
Images (party 1's file: a torch file holding a float tensor (B, C, H, W), or a dict with
"images" and optionally "labels", read with weights_only=True): the file if given; else,
for a digits model, scikit-learn's digits test split (labels known); else seeded N(0, 1)
images. Weights come from party 0, images from party 1. Outputs: `logits` (B, classes);
the labels stay with party 1 (and the reference).
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from privit.launch.jobs import ALL_INPUTS, DATA_OWNER, WEIGHT_OWNER, Job, RoleInputs
from privit.launch.vit_spec import RANDOM_INITS, VitSpec
from privit.models.checkpoint import load_checkpoint
from privit.models.config import ViTConfig, get_config
from privit.models.private_vit import PrivateViT
from privit.models.private_weights import (
    ArchitectureError,
    ArchitectureMismatch,
    EncodedWeights,
    PrivateArch,
    alpha_from_mu,
    encode_weights,
    export_weights,
    parse_alpha,
    weight_layout,
)
from privit.models.vit import ViTLite
from privit.parties.config import RunConfig
from privit.parties.session import Session
from privit.protocols.owner_matmul import WEIGHT_PIECE_ELEMENTS

DEFAULT_ASSET = "vit_digits_mu0.5.pth.tar"
DIGITS_TEST_ASSET = "digits_test.pt"
DIGITS_BATCH = 16
# A party's resident set during its widest nonlinear step, per element of that step: at
# ViT-Base (batch 1, the 197 x 3072 GeLU) party 1 peaked ~580 MB above its weights, window
# and prepared material, ~940 B per element (BENCHMARKS.md, "Memory at ViT-Base").
WORKING_BYTES_PER_ELEMENT = 1024
MAX_BATCH = 4096  # images per inference a role accepts from party 1's announcement
DEFAULT_MU = 0.5


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


def digits_test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The digits test split (normalised as in training) and its labels: from the shipped
    assets/digits_test.pt (what `models.data.digits_test_asset` writes; a test checks it
    equals scikit-learn's split), else from scikit-learn, whose import alone takes ~1-2 s."""
    asset = assets_dir() / DIGITS_TEST_ASSET
    if asset.is_file():
        saved = torch.load(asset, weights_only=True)
        return saved["images"], saved["labels"]
    from privit.models.data import load_digits

    test = load_digits().test
    return test.images, test.labels


def digits_test_images(offset: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits test images [offset, offset + count) (normalised as in training) and labels."""
    images, labels = digits_test_split()
    if not 0 <= offset or offset + count > len(images):
        raise ValueError(f"digits test split has {len(images)} images; asked for "
                         f"[{offset}, {offset + count})")
    return (images[offset:offset + count].to(torch.float64),
            labels[offset:offset + count].clone())


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_arch_file(path: str) -> PrivateArch:
    """A public architecture written by `privit arch --out` (JSON)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the architecture file {path}: {exc}") from None
    if isinstance(data, dict) and "arch" in data:
        data = data["arch"]
    try:
        return PrivateArch.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


class VitJob(Job):
    """Private ViT inference; reference = models/vit.py on the same weights and images.

    Each role holds only its own secret (`RoleInputs`): party 0 loads the model (a
    checkpoint, or a seeded random model from the public params) and announces its public
    architecture (`PrivateArch`: shapes, a mode per head, MPCViT+ gates) in its hello;
    party 1 loads the images once it knows the architecture and announces the batch size;
    the dealer loads neither and traces the plan from the architecture and the batch.
    With `inputs.role` None (one user holds all: `privit run`'s reference, tests) the job
    loads both and can compute the plaintext reference.
    """

    name = "vit"
    description = "private ViT-Lite inference (MPCViT); default: embedded digits model"
    spec_class = VitSpec
    client_announces = True

    spec: VitSpec

    def parse_spec(self, params: dict[str, Any]) -> VitSpec:
        return VitSpec.from_params(params)

    def __init__(self, cfg: RunConfig, inputs: RoleInputs = ALL_INPUTS) -> None:
        super().__init__(cfg, inputs)
        self.options = self.spec.private_options()
        self.expected_arch = load_arch_file(inputs.arch) if inputs.arch else None
        self.model: ViTLite | None = None
        self.checkpoint: str | None = None
        self.checkpoint_sha256: str | None = None
        self.weights: EncodedWeights | None = None
        self.arch: PrivateArch | None = None
        self.images: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.image_source = "none"
        self.batch: int | None = None
        self._reference: dict[str, torch.Tensor] | None = None
        holds_weights = inputs.role in (None, WEIGHT_OWNER)
        if holds_weights:
            self.model, self.checkpoint = self._load_model()
            if self.checkpoint is not None:
                self.checkpoint_sha256 = file_sha256(self.checkpoint)
            self._set_arch(PrivateArch.from_model(self.model), "this role's model")
            if inputs.role is not None:
                # Folded and encoded now, before any online phase (the owner's plaintext
                # work). A party process needs only the encoded weights (the plaintext
                # reference is the coordinator's): free the model before encoding.
                config, plain = self.model.config, export_weights(self.model)
                self.model = None
                self.weights = encode_weights(plain, config, cfg.frac_bits, consume=True)
        elif inputs.checkpoint:
            raise ValueError(f"vit: only party 0 reads a checkpoint, not role {inputs.role}")
        if inputs.role not in (None, DATA_OWNER) and inputs.images:
            raise ValueError(f"vit: only party 1 reads images, not role {inputs.role}")
        if inputs.role is None:
            self._load_images()

    # -- the public architecture -------------------------------------------------------------
    def _set_arch(self, arch: PrivateArch, source: str) -> None:
        if self.expected_arch is not None and arch.digest() != self.expected_arch.digest():
            raise ArchitectureMismatch(
                f"architecture mismatch: {source} is {arch.summary()} [{arch.digest()}], the "
                f"architecture file says {self.expected_arch.summary()} "
                f"[{self.expected_arch.digest()}]")
        self.arch = arch

    def own_public(self) -> dict[str, Any] | None:
        if self.inputs.role == WEIGHT_OWNER and self.arch is not None:
            return {"arch": self.arch.to_dict()}
        return None

    def client_public(self) -> dict[str, Any]:
        self._load_images()
        assert self.batch is not None
        return {"batch": self.batch}

    def bind_public(self, owner: dict[str, Any] | None, client: dict[str, Any] | None) -> None:
        if self.inputs.role != WEIGHT_OWNER:
            if not isinstance(owner, dict) or "arch" not in owner:
                raise ArchitectureError("party 0 announced none")
            arch = PrivateArch.from_dict(owner["arch"])
            if self.spec.model and arch.config.name != self.spec.model:
                raise ArchitectureMismatch(f"architecture mismatch: party 0's model is "
                                           f"{arch.summary()}, the run names {self.spec.model}")
            self._set_arch(arch, "party 0's model")
        if self.inputs.role == DATA_OWNER:
            self._load_images()
        elif client is not None:
            batch = client.get("batch")
            if type(batch) is not int or not 1 <= batch <= MAX_BATCH:
                raise ValueError(f"party 1 announced a bad batch size {batch!r:.20} "
                                 f"(1..{MAX_BATCH})")
            if self.spec.batch is not None and batch != self.spec.batch:
                raise ValueError(f"party 1 announced a batch of {batch}, the run says "
                                 f"{self.spec.batch}")
            self.batch = batch

    def reserved_bytes(self) -> int:
        """Party 1 will receive every masked weight matrix (8 bytes per parameter, kept for
        the whole run); party 0 has its weights already and keeps up to two outgoing pieces
        of them in flight. Both need the online working set of the widest nonlinear step
        (`WORKING_BYTES_PER_ELEMENT` per element of the batch's MLP hidden layer or attention
        scores). Known before the hello only from a pinned architecture (`--arch`, which
        `privit run` passes) or a registry `--model`; otherwise 0. The batch is --batch, or
        party 1's images, or 1 for party 0 without --batch."""
        known = self.arch or self.expected_arch
        arch = known.config if known is not None else None
        if arch is None and self.spec.model:
            arch = get_config(self.spec.model)
        if arch is None or self.inputs.role not in (WEIGHT_OWNER, DATA_OWNER):
            return 0
        matrices, _ = weight_layout(arch)
        elements = sum(int(k) * int(m) for _, (k, m) in matrices)
        if self.inputs.role == WEIGHT_OWNER:
            elements = min(elements, 2 * WEIGHT_PIECE_ELEMENTS)
        batch = self.spec.batch or self.batch or 1
        widest = batch * arch.n_tokens * max(arch.mlp_hidden, arch.heads * arch.n_tokens)
        return 8 * elements + WORKING_BYTES_PER_ELEMENT * widest

    def report_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if self.arch is not None:
            fields["arch_hash"] = self.arch.digest()
            fields["model"] = self.arch.config.name
        if self.checkpoint_sha256 is not None:
            fields["checkpoint_sha256"] = self.checkpoint_sha256
        if self.inputs.role in (None, DATA_OWNER):
            fields["image_source"] = self.image_source
        return fields

    # -- inputs ------------------------------------------------------------------------------
    def _load_model(self) -> tuple[ViTLite, str | None]:
        spec = self.spec
        path = self.inputs.checkpoint
        if not path and not spec.model:
            found = default_checkpoint()
            path = str(found) if found else None
        random_only = spec.mu is not None or spec.alpha is not None
        if path:
            if random_only:
                raise ValueError("vit: mu/alpha apply to random models; a checkpoint has its own")
            model, _ = load_checkpoint(str(path), model_name=spec.model or None)
            return model.eval(), str(path)
        config = get_config(spec.model or "vit_digits")
        alpha = None
        if not config.teacher:
            if spec.alpha is not None:
                alpha = parse_alpha(spec.alpha, config)
            else:
                alpha = alpha_from_mu(config, DEFAULT_MU if spec.mu is None else spec.mu,
                                      self.cfg.seed)
        elif random_only:
            raise ValueError(f"vit: {config.name} is a softmax teacher: no mu/alpha")
        return random_model(config, alpha, self.cfg.seed, spec.init), None

    def _load_images(self) -> None:
        """Party 1's images (once): its file, else digits test images for a digits model,
        else seeded N(0, 1) images; checked against the architecture's input shape."""
        if self.images is not None:
            return
        if self.arch is None:
            raise ValueError("vit: the images are loaded after the architecture is known")
        c = self.arch.config
        batch = self.spec.batch
        if self.inputs.images:
            images, labels = load_images(str(self.inputs.images))
            self.image_source = "file"
            if batch is not None:
                if int(batch) > images.shape[0]:
                    raise ValueError(f"vit: batch {batch} but the images file holds "
                                     f"{images.shape[0]}")
                images = images[:int(batch)]
                labels = None if labels is None else labels[:int(batch)]
        elif c.name.startswith("vit_digits"):
            self.image_source = "digits"
            images, labels = digits_test_images(self.spec.offset,
                                                int(batch or DIGITS_BATCH))
        else:
            self.image_source = "random"
            gen = torch.Generator().manual_seed(self.cfg.seed + 1)
            shape = (int(batch or 1), c.in_chans, c.img_size, c.img_size)
            images, labels = torch.randn(shape, generator=gen, dtype=torch.float64), None
        want = (c.in_chans, c.img_size, c.img_size)
        if tuple(images.shape[1:]) != want:
            raise ValueError(f"{c.name} takes images (B, {', '.join(map(str, want))}), got "
                             f"{tuple(images.shape)}")
        self.images, self.labels = images, labels
        self.batch = int(images.shape[0])

    # -- Job -----------------------------------------------------------------------------------
    def run(self, sess: Session) -> dict[str, torch.Tensor]:
        if self.arch is None or self.batch is None:
            raise RuntimeError("vit: run before the public architecture and batch were bound")
        executor = PrivateViT(self.arch, self.options, weight_owner=WEIGHT_OWNER,
                              data_owner=DATA_OWNER)
        owner = sess.party_id == WEIGHT_OWNER and not sess.is_tracing
        client = sess.party_id == DATA_OWNER and not sess.is_tracing
        if owner and self.weights is None and self.model is not None:
            # one process holds every input (in-memory runs): encoded at first use, so
            # that `privit run`'s coordinator, which only needs the reference, never does
            self.weights = encode_weights(export_weights(self.model), self.model.config,
                                          self.cfg.frac_bits, consume=True)
        logits = executor.infer(sess, self.weights if owner else None,
                                self.images if client else None, self.batch)
        return {"logits": logits}

    def reference(self) -> dict[str, torch.Tensor]:
        """The plaintext logits (float64), computed once."""
        if self._reference is None:
            if self.model is None or self.images is None:
                raise RuntimeError("vit: the plaintext reference needs both the model and the "
                                   "images")
            model = self.model.double()
            with torch.no_grad():
                logits = model(self.images)
            self._reference = {"logits": logits}
            if self.labels is not None:
                self._reference["labels"] = self.labels.to(torch.float64)
        return self._reference

    def release_plaintext(self) -> None:
        """Let the model go (ViT-Base: 0.35 GB float32, 0.69 GB once made float64 for the
        reference); the reference computed before stays."""
        self.model = None


def prepare_local_run(cfg: RunConfig, inputs: RoleInputs, folder: Path) -> tuple[RoleInputs, VitJob]:
    """For `privit run`, where one user holds everything: load the model and the images
    once (the job returned computes the plaintext reference), write the public
    architecture to `folder` for every role to pin, name the embedded checkpoint when none
    was given, and write default digits test images there so that party 1 reads a small
    tensor file instead of importing scikit-learn (~1 s)."""
    job = VitJob(cfg, inputs)
    assert job.arch is not None
    arch_path = folder / "arch.json"
    arch_path.write_text(json.dumps({"arch": job.arch.to_dict(), "arch_hash": job.arch.digest()}))
    images = inputs.images
    if job.image_source == "digits":
        target = folder / "digits_test_images.pt"
        assert job.labels is not None
        torch.save({"images": job.images, "labels": job.labels}, target)
        images = str(target)
    return RoleInputs(checkpoint=job.checkpoint, images=images, arch=str(arch_path)), job
