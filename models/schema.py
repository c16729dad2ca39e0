"""The state_dict key schema of MPCViT ViT-Lite checkpoints, from a config alone.

:func:`describe_keys` lists every key with its shape, in the order
``state_dict()`` returns them.  Live keys are those :class:`ViTLite` has;
teacher checkpoints also carry *dead* parameters (leftovers of experiments in
MPCViT's teacher classes that its forward never reads).  Those are listed here
with their exact names and shapes so that a loader can drop exactly them and
nothing else.  Some dead shapes are hard-coded in MPCViT whatever the width:
``self_attn.W`` is always (1, 256, 64, 64) and ``self_attn.dw_conv.weight``
always (256, 1, 3, 3).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from privit.models.config import MODEL_CONFIGS, ViTConfig

__all__ = ["KeySpec", "describe_keys", "dead_teacher_keys", "count_elements",
           "format_key_table", "documented_configs"]

Shape = tuple[int, ...]


class KeySpec(NamedTuple):
    """One state_dict entry: its key, its shape, and whether forward uses it."""

    name: str
    shape: Shape
    live: bool = True


def _block_keys(config: ViTConfig, layer: int, include_dead: bool) -> list[KeySpec]:
    d, h, hid = config.dim, config.heads, config.mlp_hidden
    p = f"classifier.blocks.{layer}."
    out: list[KeySpec] = []
    dead = config.teacher and include_dead

    def add(name: str, shape: Shape, live: bool = True) -> None:
        out.append(KeySpec(p + name, shape, live))

    if config.linear_gelu:
        add("beta", (1, config.n_tokens, 1))
    add("pre_norm.weight", (d,))
    add("pre_norm.bias", (d,))
    if not config.teacher:
        add("self_attn.alpha", (1, h, 1, 1))
    if dead:
        add("self_attn.W", (1, 256, 64, 64), False)
        add("self_attn.kernel_s", (h, 1, 3, 3), False)
        add("self_attn.kernel_o", (1, 1, 3, 3), False)
    add("self_attn.qkv.weight", (3 * d, d))
    add("self_attn.proj.weight", (d, d))
    add("self_attn.proj.bias", (d,))
    if dead:
        add("self_attn.qkv_expand.0.weight", (6 * d, d), False)
        add("self_attn.qkv_expand.1.weight", (3 * d, 6 * d), False)
        add("self_attn.proj_expand.0.weight", (4 * d, d), False)
        add("self_attn.proj_expand.0.bias", (4 * d,), False)
        add("self_attn.proj_expand.1.weight", (d, 4 * d), False)
        add("self_attn.proj_expand.1.bias", (d,), False)
        add("self_attn.dw_conv.weight", (256, 1, 3, 3), False)
    add("linear1.weight", (hid, d))
    add("linear1.bias", (hid,))
    add("norm1.weight", (d,))
    add("norm1.bias", (d,))
    add("linear2.weight", (d, hid))
    add("linear2.bias", (d,))
    if dead:
        add("linear_expand.0.weight", (2 * d, d), False)
        add("linear_expand.0.bias", (2 * d,), False)
        add("linear_expand.1.weight", (hid, 2 * d), False)
        add("linear_expand.1.bias", (hid,), False)
    return out


def describe_keys(config: ViTConfig, *, include_dead: bool = False) -> list[KeySpec]:
    """All state_dict keys of ``config`` in ``state_dict()`` order.

    With ``include_dead`` (teachers only) the dead parameters of MPCViT's teacher
    classes are interleaved at their original positions (``live=False``).
    """
    d, c = config.dim, config.num_classes
    out = [
        KeySpec("tokenizer.conv_layers.0.0.weight",
                (d, config.in_chans, config.patch_size, config.patch_size)),
        KeySpec("tokenizer.conv_layers.0.0.bias", (d,)),
        KeySpec("classifier.class_emb", (1, 1, d)),
        KeySpec("classifier.positional_emb", (1, config.n_tokens, d)),
    ]
    for layer in range(config.depth):
        out.extend(_block_keys(config, layer, include_dead))
    out += [
        KeySpec("classifier.norm.weight", (d,)),
        KeySpec("classifier.norm.bias", (d,)),
        KeySpec("classifier.fc.weight", (c, d)),
        KeySpec("classifier.fc.bias", (c,)),
    ]
    if config.teacher and include_dead:
        out += [
            KeySpec("classifier.fc_expand.0.weight", (2 * d, d), False),
            KeySpec("classifier.fc_expand.0.bias", (2 * d,), False),
            KeySpec("classifier.fc_expand.1.weight", (c, 2 * d), False),
            KeySpec("classifier.fc_expand.1.bias", (c,), False),
        ]
    return out


def dead_teacher_keys(config: ViTConfig) -> dict[str, Shape]:
    """Exact name -> shape of the dead teacher parameters a loader may drop (empty for students)."""
    if not config.teacher:
        return {}
    return {k.name: k.shape for k in describe_keys(config, include_dead=True) if not k.live}


def count_elements(specs: list[KeySpec]) -> int:
    """Total number of scalars in the listed tensors."""
    return sum(math.prod(k.shape) for k in specs)


def format_key_table(config: ViTConfig, *, include_dead: bool = True,
                     compact: bool = True) -> str:
    """A markdown table of the keys of ``config`` (used to write docs/checkpoint_format.md).

    With ``compact`` the blocks are shown once, as ``classifier.blocks.{l}.*`` for
    l = 0..depth-1, instead of once per layer.
    """
    specs = describe_keys(config, include_dead=include_dead)
    live = [k for k in specs if k.live]
    lines = [f"`{config.name}` ({config.num_classes} classes"
             f"{', MPCViT+' if config.linear_gelu else ''}): {len(specs)} keys, "
             f"{count_elements(specs):,} elements; live: {len(live)} keys, "
             f"{count_elements(live):,} elements", "",
             "| key | shape | elements | used |", "|---|---|---|---|"]
    block0 = "classifier.blocks.0."
    for k in specs:
        name = k.name
        if compact and name.startswith("classifier.blocks."):
            if not name.startswith(block0):
                continue
            name = "classifier.blocks.{l}." + name[len(block0):]
        lines.append(f"| `{name}` | {k.shape} | {math.prod(k.shape):,} | "
                     f"{'yes' if k.live else 'dead'} |")
    return "\n".join(lines)


def documented_configs() -> list[ViTConfig]:
    """The configurations whose tables docs/checkpoint_format.md shows."""
    seven = MODEL_CONFIGS["vit_7_4_32"]
    return [seven, seven.with_overrides(num_classes=100), seven.with_overrides(linear_gelu=True),
            MODEL_CONFIGS["vit_7_4_32_teacher"], MODEL_CONFIGS["vit_9_12_64"],
            MODEL_CONFIGS["vit_9_12_64_teacher"], MODEL_CONFIGS["vit_digits"],
            MODEL_CONFIGS["vit_digits_teacher"]]


if __name__ == "__main__":
    for cfg in documented_configs():
        print(format_key_table(cfg), end="\n\n")
