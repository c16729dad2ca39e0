"""How a checkpoint was made: the ``provenance`` entry of privit's training checkpoints.

A training run (``privit train | search | retrain | pipeline``) stores one plain dict
under the checkpoint's top-level key ``provenance`` (see docs/checkpoint_format.md):

* ``command``: the command that made it, e.g. ``privit pipeline --seed 0`` (the
  options the user gave; every other option had its default);
* ``options``: every option of that command with the value it had;
* ``seed``, ``threads`` (torch CPU threads), ``deterministic`` (whether
  ``torch.use_deterministic_algorithms`` was on);
* ``versions``: privit, torch, numpy and Python.

Only str / int / float / bool / None / lists / dicts, so the file still loads with
``torch.load(weights_only=True)``.  Nothing in it is secret: it holds no weights and
no data.  The loader reports it (``CheckpointMeta.provenance``) and never uses it to
build the model.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

__all__ = ["PROVENANCE_KEY", "versions", "make_provenance"]

PROVENANCE_KEY = "provenance"
"""The top-level checkpoint entry holding the provenance dict."""


def versions() -> dict[str, str]:
    """The versions that decide the floating-point results of a training run."""
    import numpy
    import torch

    from privit import __version__

    return {"privit": __version__, "torch": str(torch.__version__), "numpy": numpy.__version__,
            "python": platform.python_version()}


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and anything unusual as its ``str`` (weights_only-safe)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def make_provenance(command: str, options: Mapping[str, Any], *, seed: int, threads: int,
                    deterministic: bool) -> dict[str, Any]:
    """The ``provenance`` dict of a run (module docstring)."""
    return {"command": command, "options": _plain(dict(sorted(options.items()))),
            "seed": seed, "threads": threads, "deterministic": deterministic,
            "versions": versions()}
