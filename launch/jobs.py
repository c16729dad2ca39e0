"""Jobs the parties can run, each with its plaintext reference.

A job is a deterministic private computation: `run(sess)` executes it on shares and
returns the opened outputs (as float64 tensors, on every party); `reference()` computes
the same outputs in plaintext float64 so that the coordinator can report the error.
Inputs are generated from the run's seed: party 0 owns the weights, party 1 the data
(docs/design.md: the model owner and the client). A tracing session gets zeros, so the dealer
can plan the job's correlations without any party's inputs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from privit.launch.job_spec import spec_from_params
from privit.launch.role_inputs import ALL_INPUTS, DATA_OWNER, WEIGHT_OWNER, RoleInputs
from privit.parties.config import RunConfig
from privit.parties.session import Session
from privit.protocols import beaver, ring, sharing

__all__ = ["ALL_INPUTS", "DATA_OWNER", "WEIGHT_OWNER", "Job", "MatmulChain", "RoleInputs", "SquareMlp"]


def seeded_normal(seed: int, shape: tuple[int, ...], std: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64) * std




@dataclass(frozen=True)
class NoParams:
    """A job without parameters."""


class Job(ABC):
    """A private computation with a plaintext reference.

    Lifecycle on a role: built with the public config and the role's own inputs; then
    `own_public()` (what this role announces in its hello, e.g. party 0's architecture),
    `bind_public(...)` with what the others announced, `run(sess)`. Jobs whose inputs are
    all derived from the seed (matmul_chain, mlp, bench) announce nothing.
    """

    name: str = ""
    description: str = ""
    spec_class: type = NoParams  # the job's parameters, a frozen dataclass (launch/job_spec.py)
    client_announces: bool = False  # party 1 announces its public input shape after the hello

    def __init__(self, cfg: RunConfig, inputs: RoleInputs = ALL_INPUTS) -> None:
        self.cfg = cfg
        self.inputs = inputs
        self.spec = self.parse_spec(dict(cfg.job.params))

    def parse_spec(self, params: dict[str, Any]) -> Any:
        """The job's typed parameters (`spec_class`) from the run config's params."""
        return spec_from_params(self.spec_class, params, self.name)

    def own_public(self) -> dict[str, Any] | None:
        """Public facts this role announces to every peer in its hello (None: nothing)."""
        return None

    def client_public(self) -> dict[str, Any]:
        """Party 1's public facts, sent after the hello (only if `client_announces`)."""
        return {}

    def bind_public(self, owner: dict[str, Any] | None,  # noqa: B027 - optional hook
                    client: dict[str, Any] | None) -> None:
        """Take party 0's announcement and party 1's (None where a job has none)."""

    def report_fields(self) -> dict[str, Any]:
        """Extra fields for this role's report (hashes, sources), never a secret."""
        return {}

    def reserved_bytes(self) -> int:
        """Memory this role's job will hold besides the dealer's material and what it
        already holds when its offline phase starts (e.g. weights it will receive); the
        party's memory budget keeps it aside (parties/offline.StreamLimits.for_budget)."""
        return 0

    def input_of(self, sess: Session, owner: int, seed_offset: int, shape: tuple[int, ...],
                 std: float) -> torch.Tensor:
        """Share a seeded random input that only `owner` generates (zeros when tracing)."""
        value = None
        if sess.party_id == owner and not sess.is_tracing:
            value = ring.encode(seeded_normal(self.cfg.seed + seed_offset, shape, std),
                                self.cfg.frac_bits)
        return sharing.share_input(sess, owner, value, shape)

    @abstractmethod
    def run(self, sess: Session) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def reference(self) -> dict[str, torch.Tensor] | None:
        """Plaintext float64 outputs, or None when the job checks itself (bench)."""

    def release_plaintext(self) -> None:  # noqa: B027 - optional hook
        """Let go of plaintext inputs that `reference` no longer needs (a job that holds
        a large model); called by `privit run`'s coordinator once it has the reference."""


def _int_list(text: str, field: str, job: str) -> list[int]:
    try:
        return [int(d) for d in text.split(",")]
    except ValueError:
        raise ValueError(f"{job}: {field} must be comma-separated integers, got {text!r}") from None


@dataclass(frozen=True)
class MatmulChainSpec:
    rows: int = field(default=197, metadata={"help": "rows of X"})
    dims: str = field(default="192,768,192",
                      metadata={"help": "d0,d1,...: X is rows x d0, W_i is d_i x d_i+1"})


@dataclass(frozen=True)
class MlpSpec:
    batch: int = field(default=4, metadata={"help": "inputs per inference"})
    dims: str = field(default="64,128,10", metadata={"help": "input, hidden and output widths"})


class MatmulChain(Job):
    """X (rows x d0) @ W1 (d0 x d1) @ W2 (d1 x d2) ...: secret x secret Beaver matmuls.

    Each product is truncated.
    """

    name = "matmul_chain"
    description = "chain of secret x secret matmuls (X from party 1, W_i from party 0)"
    spec_class = MatmulChainSpec

    spec: MatmulChainSpec

    def __init__(self, cfg: RunConfig, inputs: RoleInputs = ALL_INPUTS) -> None:
        super().__init__(cfg, inputs)
        self.rows = self.spec.rows
        self.dims = _int_list(self.spec.dims, "dims", self.name)
        if self.rows < 1 or len(self.dims) < 2 or min(self.dims) < 1:
            raise ValueError(f"matmul_chain needs rows >= 1 and >= 2 positive dims, got "
                             f"rows={self.rows} dims={self.dims}")

    def _std(self, k: int) -> float:
        return 1.0 / k ** 0.5  # keeps every intermediate ~N(0, 1)

    def run(self, sess: Session) -> dict[str, torch.Tensor]:
        with sess.scope("input"):
            x = self.input_of(sess, DATA_OWNER, 1, (self.rows, self.dims[0]), 1.0)
            ws = [self.input_of(sess, WEIGHT_OWNER, 10 + i, (a, b), self._std(a))
                  for i, (a, b) in enumerate(zip(self.dims, self.dims[1:], strict=False))]
        for i, w in enumerate(ws):
            with sess.scope(f"matmul{i}"):
                x = beaver.beaver_matmul(sess, x, w)
        with sess.scope("output"):
            out = sharing.open_all(sess, x, label="output")
        return {"output": ring.decode(out, self.cfg.frac_bits)}

    def reference(self) -> dict[str, torch.Tensor]:
        x = seeded_normal(self.cfg.seed + 1, (self.rows, self.dims[0]), 1.0)
        for i, (a, b) in enumerate(zip(self.dims, self.dims[1:], strict=False)):
            x = x @ seeded_normal(self.cfg.seed + 10 + i, (a, b), self._std(a))
        return {"output": x}


class SquareMlp(Job):
    """A private MLP with square activations (CryptoNets-style): logits = W2 (W1 x + b1)^2 + b2.

    Shows linear layers, an element-wise product and truncation end to end.
    """

    name = "mlp"
    description = "2-layer MLP with x^2 activation (weights from party 0, inputs from party 1)"
    spec_class = MlpSpec

    spec: MlpSpec

    def __init__(self, cfg: RunConfig, inputs: RoleInputs = ALL_INPUTS) -> None:
        super().__init__(cfg, inputs)
        self.batch = self.spec.batch
        self.dims = _int_list(self.spec.dims, "dims", self.name)
        if self.batch < 1 or len(self.dims) != 3 or min(self.dims) < 1:
            raise ValueError(f"mlp needs batch >= 1 and 3 positive dims, got {self.dims}")

    def _shapes(self) -> list[tuple[int, tuple[int, ...], float]]:
        d0, d1, d2 = self.dims
        return [(10, (d0, d1), d0 ** -0.5), (11, (d1,), 0.1), (12, (d1, d2), d1 ** -0.5),
                (13, (d2,), 0.1)]

    def run(self, sess: Session) -> dict[str, torch.Tensor]:
        f = self.cfg.frac_bits
        with sess.scope("input"):
            x = self.input_of(sess, DATA_OWNER, 1, (self.batch, self.dims[0]), 1.0)
            w1, b1, w2, b2 = (self.input_of(sess, WEIGHT_OWNER, off, shape, std)
                              for off, shape, std in self._shapes())
        with sess.scope("linear1"):
            h = sharing.add(beaver.beaver_matmul(sess, x, w1), b1)
        with sess.scope("square"):
            h = beaver.beaver_square(sess, h)
        with sess.scope("linear2"):
            y = sharing.add(beaver.beaver_matmul(sess, h, w2), b2)
        with sess.scope("output"):
            out = sharing.open_all(sess, y, label="output")
        return {"output": ring.decode(out, f)}

    def reference(self) -> dict[str, torch.Tensor]:
        x = seeded_normal(self.cfg.seed + 1, (self.batch, self.dims[0]), 1.0)
        w1, b1, w2, b2 = (seeded_normal(self.cfg.seed + off, shape, std)
                          for off, shape, std in self._shapes())
        return {"output": ((x @ w1 + b1) ** 2) @ w2 + b2}
