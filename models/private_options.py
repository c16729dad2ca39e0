"""How the private executor computes each non-linear step (`PrivateOptions`).

Plain data with no heavy imports, so that the command line can offer and check the
choices before torch is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

from privit.parties.config import PRECISION_FRAC_BITS

GELU_KINDS = ("poly", "quad", "erf")
RELU_KINDS = ("exact", "stochastic")
COMPARE_METHODS = ("auto", "fss", "fss_compact", "adder", "adder_compact")
SOFTMAX_KINDS = ("exact", "2quad")
SCALE_ORDERS = ("auto", "qk", "kv")
PRECISIONS = tuple(PRECISION_FRAC_BITS)  # their bits and truncation: parties/config.py


@dataclass(frozen=True)
class PrivateOptions:
    """How the private executor computes each non-linear step.

    gelu: kind for protocols.gelu.gelu ("erf", the default, within 8.1e-5 of the erf GeLU;
      "poly" within 2.1e-3 for about 0.6x the GeLU's online bytes; "quad" the MPCFormer
      quad). The default keeps vit_7_4_32's logits within 1e-3 of plaintext.
    relu: the ReLU inside ReLU-softmax heads: "exact" or Circa's "stochastic" ReLU with
      `circa_k` low bits dropped and `circa_m` magnitude bits (None: circa.default_params,
      k = f - 6 and m = f + 6).
    compare: comparison method for every ReLU/DReLU ("auto", "fss", "fss_compact", "adder",
      "adder_compact"; compare.py's module docstring).
    softmax: the teacher's heads: "exact" softmax or MPCFormer's "2quad".
    scale_order: ScaleAttn product order, "qk" = (Q K^T) V, "kv" = Q (K^T V), "auto" =
      the one opening fewer elements for the shape.
    owner_matmul: one-sided products for the owner's weights (2 parties only).
    precision: "default" or "precise", the configs of LayerNorm, GeLU, softmax and
      ReLU-softmax (protocols/approx_config.precision_configs); the run config also takes
      the level's fractional bits and truncation from it unless they are named
      (parties/config.py: PRECISION_FRAC_BITS, precision_truncation).
      "precise" keeps vit_7_4_32_teacher's logits within 1e-4 of plaintext.
    """

    gelu: str = "erf"
    relu: str = "exact"
    circa_k: int | None = None
    circa_m: int | None = None
    compare: str = "auto"
    softmax: str = "exact"
    scale_order: str = "auto"
    owner_matmul: bool = True
    precision: str = "default"

    def __post_init__(self) -> None:
        for name, value, allowed in (("gelu", self.gelu, GELU_KINDS), ("relu", self.relu, RELU_KINDS),
                                     ("compare", self.compare, COMPARE_METHODS),
                                     ("softmax", self.softmax, SOFTMAX_KINDS),
                                     ("scale_order", self.scale_order, SCALE_ORDERS),
                                     ("precision", self.precision, PRECISIONS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.circa_k is not None and not 0 <= self.circa_k <= 40:
            raise ValueError(f"circa_k must be in [0, 40], got {self.circa_k}")
