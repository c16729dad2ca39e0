"""Architecture configurations of the ViT-Lite models that privit runs.

A :class:`ViTConfig` fixes every shape of a model: image and patch size, width,
depth, heads, MLP width, classes, and two variant flags (softmax teacher,
MPCViT+ linearised GeLU).  ``MODEL_CONFIGS`` maps the registry names used in
MPCViT checkpoints (``arch``) to their configurations; ``vit_digits`` is a
small model for 8x8 grayscale sklearn digits used in quick experiments and tests.

The per-head attention choice (ReLU-softmax or ScaleAttn) is *not* part of the
configuration: it lives in the model's ``alpha`` tensors, as in MPCViT.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "ViTConfig",
    "MODEL_CONFIGS",
    "DATASET_NORMALIZATION",
    "get_config",
]


@dataclass(frozen=True)
class ViTConfig:
    """Shapes of one ViT-Lite model (CCT block, cls token, learnable positions).

    Attributes:
        name: registry name, written as ``arch`` in checkpoints.
        img_size: input height = width in pixels.
        in_chans: input channels (3 for RGB, 1 for grayscale).
        patch_size: side of the square patches (conv kernel = stride).
        dim: embedding width d.
        depth: number of transformer blocks L.
        heads: attention heads H per block.
        mlp_hidden: hidden width of the block's MLP.
        num_classes: classifier outputs.
        teacher: True for the all-softmax teacher (no ``alpha`` tensors).
        linear_gelu: True for MPCViT+ (a per-token ``beta`` gate in every block).
    """

    name: str
    img_size: int
    in_chans: int
    patch_size: int
    dim: int
    depth: int
    heads: int
    mlp_hidden: int
    num_classes: int
    teacher: bool = False
    linear_gelu: bool = False

    def __post_init__(self) -> None:
        for field in ("img_size", "in_chans", "patch_size", "dim", "depth",
                      "heads", "mlp_hidden", "num_classes"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"ViTConfig {self.name!r}: {field} must be a positive int, "
                                 f"got {value!r}")
        if self.dim % self.heads != 0:
            raise ValueError(f"ViTConfig {self.name!r}: dim {self.dim} is not divisible by "
                             f"heads {self.heads}")
        if self.img_size % self.patch_size != 0:
            raise ValueError(f"ViTConfig {self.name!r}: img_size {self.img_size} is not "
                             f"divisible by patch_size {self.patch_size}")
        if self.teacher and self.linear_gelu:
            raise ValueError(f"ViTConfig {self.name!r}: linear_gelu (MPCViT+) exists only "
                             "for student models, not for the softmax teacher")

    @property
    def grid_size(self) -> int:
        """Patches per image side."""
        return self.img_size // self.patch_size

    @property
    def n_patches(self) -> int:
        """Number of patch tokens, (img / patch)^2."""
        return self.grid_size ** 2

    @property
    def n_tokens(self) -> int:
        """Sequence length N including the cls token (the ScaleAttn divisor)."""
        return self.n_patches + 1

    @property
    def head_dim(self) -> int:
        """Width of one head, d / H."""
        return self.dim // self.heads

    def with_overrides(self, *, num_classes: int | None = None,
                       linear_gelu: bool | None = None) -> ViTConfig:
        """Return a copy with another class count and/or MPCViT+ flag (validated)."""
        return dataclasses.replace(
            self,
            num_classes=self.num_classes if num_classes is None else num_classes,
            linear_gelu=self.linear_gelu if linear_gelu is None else linear_gelu,
        )


def _registry() -> dict[str, ViTConfig]:
    bases = [
        # name, img, chans, patch, dim, depth, heads, mlp, classes
        ("vit_7_4_32", 32, 3, 4, 256, 7, 4, 512, 10),
        ("vit_9_12_64", 64, 3, 4, 192, 9, 12, 384, 200),
        ("vit_digits", 8, 1, 2, 32, 2, 4, 64, 10),
        # ViT-Base/16 at 224 x 224 (197 tokens, 86 M parameters), ImageNet's 1000 classes:
        # no MPCViT checkpoint; it runs with seeded random weights to measure cost at scale.
        ("vit_base_16", 224, 3, 16, 768, 12, 12, 3072, 1000),
    ]
    out: dict[str, ViTConfig] = {}
    for name, img, chans, patch, dim, depth, heads, mlp, classes in bases:
        for teacher in (False, True):
            full = f"{name}_teacher" if teacher else name
            out[full] = ViTConfig(name=full, img_size=img, in_chans=chans, patch_size=patch,
                                  dim=dim, depth=depth, heads=heads, mlp_hidden=mlp,
                                  num_classes=classes, teacher=teacher)
    return out


MODEL_CONFIGS: Mapping[str, ViTConfig] = MappingProxyType(_registry())
"""Registry name -> configuration with its default class count (read-only)."""

DATASET_NORMALIZATION: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = \
    MappingProxyType({
        "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        "cifar100": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        "tinyimagenet": ((0.480, 0.448, 0.397), (0.272, 0.265, 0.274)),
    })
"""Per-channel (mean, std) used by the MPCViT training configs for each dataset."""


def get_config(name: str, *, num_classes: int | None = None,
               linear_gelu: bool = False) -> ViTConfig:
    """Look up a registry configuration, optionally changing classes / MPCViT+ flag.

    Raises:
        ValueError: unknown name, or an override that makes the config invalid.
    """
    try:
        base = MODEL_CONFIGS[name]
    except KeyError:
        known = ", ".join(sorted(MODEL_CONFIGS))
        raise ValueError(f"unknown model {name!r}; known models: {known}") from None
    return base.with_overrides(num_classes=num_classes, linear_gelu=linear_gelu or None)
