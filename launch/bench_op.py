"""What one benchmarked op is (`BenchOp`): its inputs, the private run, the plaintext
reference. The ops themselves are declared in the `bench_ops_*` modules."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from privit.parties.session import Session

Plain = dict[str, torch.Tensor]
Shares = dict[str, torch.Tensor]


@dataclass(frozen=True)
class BenchOp:
    """One benchmarked op.

    inputs(gen) -> {name: (float64 tensor, owner party)}; run(sess, shares, state) -> share of
    the fixed-point result; reference(plain inputs) -> float64 result; setup(sess, shares)
    -> state, untimed; check(result, reference, plain inputs) -> extra metrics (default
    max_abs_error). `raw_output`: the result is an integer (e.g. a 0/1 bit), not fixed point.
    """

    name: str
    shape: str
    description: str                      # one line for `privit bench --list`
    inputs: Callable[[torch.Generator], dict[str, tuple[torch.Tensor, int]]]
    run: Callable[[Session, Shares, Any], torch.Tensor]
    reference: Callable[[Plain], torch.Tensor]
    setup: Callable[[Session, Shares], Any] | None = None
    check: Callable[[torch.Tensor, torch.Tensor, Plain], dict[str, float]] | None = None
    raw_output: bool = False
    config: dict[str, Any] = field(default_factory=dict)  # e.g. {"truncation": "dealer"}


def default_check(result: torch.Tensor, reference: torch.Tensor, _: Plain) -> dict[str, float]:
    err = (result - reference).abs().max() if result.numel() else torch.tensor(0.0)
    return {"max_abs_error": float(err)}
