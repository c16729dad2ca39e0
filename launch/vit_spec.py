"""The vit job's public parameters as one typed spec (`VitSpec`).

Every field is public: the same on every role and hashed into the handshake (the model
and the images are role inputs, launch/role_inputs.py). A field's metadata makes it a
command-line option of `privit run`, `privit party` and `privit dealer` too, so a new
ViT option is one field here. `--param KEY=VALUE` sets any field as well (strings are
converted by the field's type). No heavy imports: the command line reads this before
torch is loaded.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from privit.launch.job_spec import field_converter, spec_from_params, spec_to_params
from privit.models.private_options import (
    COMPARE_METHODS,
    GELU_KINDS,
    PRECISIONS,
    RELU_KINDS,
    SCALE_ORDERS,
    SOFTMAX_KINDS,
    PrivateOptions,
)

RANDOM_INITS = ("unit", "vit")
# Role inputs, never parameters: a role's own file stays with that role (role_inputs.py).
ROLE_INPUT_PARAMS = {"checkpoint": "party 0's --checkpoint", "images": "party 1's --images"}


def _option(help_text: str, choices: tuple[str, ...] | None = None,
            value_range: tuple[float, float | None] | None = None, cli: bool = True) -> dict[str, Any]:
    return {"help": help_text, "choices": choices, "range": value_range, "cli": cli}


@dataclass(frozen=True)
class VitSpec:
    """The vit job's public parameters (defaults in brackets in `--help`)."""

    model: str | None = field(default=None, metadata=_option(
        "vit: registry name (vit_7_4_32, vit_9_12_64, vit_digits, vit_base_16, *_teacher); "
        "without a checkpoint a seeded random model"))
    mu: float | None = field(default=None, metadata=_option(
        "vit, random student: share of ReLU-softmax heads", value_range=(0.0, 1.0)))
    alpha: str | None = field(default=None, metadata=_option(
        "vit, random student: head pattern '1100,0011,...' (1 = ReLU-softmax)", cli=False))
    init: str = field(default="unit", metadata=_option(
        "vit, random model: weight initialisation", RANDOM_INITS, cli=False))
    batch: int | None = field(default=None, metadata=_option(
        "vit: images per inference [all of the images file; 16 digits; 1 random]",
        value_range=(1, None)))
    offset: int = field(default=0, metadata=_option(
        "vit: first digits test image", value_range=(0, None), cli=False))
    gelu: str = field(default="erf", metadata=_option(
        "vit: GeLU approximation (erf: within 8.1e-5 of GeLU; poly: 2.1e-3, ~40% fewer GeLU bytes)",
        GELU_KINDS))
    relu: str = field(default="exact", metadata=_option(
        "vit: ReLU of the ReLU-softmax heads; stochastic = Circa", RELU_KINDS))
    circa_k: int | None = field(default=None, metadata=_option(
        "vit: low bits Circa's stochastic ReLU drops [f - 6]", value_range=(0, 40)))
    circa_m: int | None = field(default=None, metadata=_option(
        "vit: magnitude bits of Circa's comparison [f + 6]", value_range=(1, 62), cli=False))
    compare: str = field(default="auto", metadata=_option(
        "vit: comparison protocol", COMPARE_METHODS))
    softmax: str = field(default="exact", metadata=_option("vit: the teacher's softmax", SOFTMAX_KINDS))
    scale_order: str = field(default="auto", metadata=_option(
        "vit: ScaleAttn product order", SCALE_ORDERS, cli=False))
    owner_matmul: bool = field(default=True, metadata=_option(
        "vit: one-sided products for party 0's weights", cli=False))
    precision: str = field(default="default", metadata=_option(
        "vit: precise = max logit error <= 1e-4 on vit_7_4_32_teacher (f = 20, dealer "
        "truncation, finer LayerNorm, softmaxes and GeLU; docs/nonlinear.md) for 1.6x the online "
        "rounds, 1.5x its bytes; --frac-bits and --truncation default to the level's", PRECISIONS))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            choices, bounds = f.metadata["choices"], f.metadata["range"]
            if choices and value not in choices:
                raise ValueError(f"vit: {f.name} must be one of {', '.join(choices)}, got {value!r}")
            if bounds is not None:
                low, high = bounds
                if value < low or (high is not None and value > high):
                    top = "" if high is None else f", at most {high:g}"
                    raise ValueError(f"vit: {f.name} must be at least {low:g}{top}, got {value!r}")

    @staticmethod
    def from_params(params: Mapping[str, Any]) -> VitSpec:
        """A spec from JobSpec params (typed values, or strings from --param)."""
        misplaced = sorted(set(params) & set(ROLE_INPUT_PARAMS))
        if misplaced:
            raise ValueError(f"vit: {misplaced[0]} is not a shared parameter but "
                             f"{ROLE_INPUT_PARAMS[misplaced[0]]} (only that role reads it)")
        return spec_from_params(VitSpec, params, "vit")

    def to_params(self) -> dict[str, Any]:
        """The fields that differ from their defaults, typed (the hashed form)."""
        return spec_to_params(self)

    def private_options(self) -> PrivateOptions:
        return PrivateOptions(gelu=self.gelu, relu=self.relu, circa_k=self.circa_k,
                              circa_m=self.circa_m, compare=self.compare, softmax=self.softmax,
                              scale_order=self.scale_order, owner_matmul=self.owner_matmul,
                              precision=self.precision)


CLI_FIELDS = tuple(f.name for f in dataclasses.fields(VitSpec) if f.metadata["cli"])


def click_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """A click option per command-line field of VitSpec (--model, --mu, --batch, ...)."""
    for f in reversed(dataclasses.fields(VitSpec)):
        if not f.metadata["cli"]:
            continue
        kind: Any = None
        choices, bounds = f.metadata["choices"], f.metadata["range"]
        convert = field_converter(f)
        if choices:
            kind = click.Choice(list(choices))
        elif bounds is not None:
            low, high = bounds
            kind = (click.FloatRange(low, high) if convert is float
                    else click.IntRange(int(low), None if high is None else int(high)))
        default = "" if f.default is None else f" [{f.default}]"
        flag = "--" + f.name.replace("_", "-")
        func = click.option(flag, f.name, type=kind, default=None,
                            help=f.metadata["help"] + default)(func)
    return func
