"""The one object protocols talk to: who we are, our links, our randomness, our counters.

A `Session` is created by the role's process (launch/) and passed explicitly to every
protocol call; there is no global state. It offers only what protocols need:

- `send` / `recv` / `exchange` of int64 (or small-int) tensors with peers, each
  message tagged with a label for error messages and counted by the channel;
- `correlation(kind, params)`: the next piece of dealer randomness, prepared offline;
- `pair_prg(peer)`: a PRG stream shared with one peer (zero-communication masks);
- `scope(name)`: attributes bytes, rounds and wall time to a named part of the job.

A tracing session (`Session.tracing`) has no channel: sends vanish, receives return
zeros of the expected shape, and correlation requests are recorded. The dealer traces
the job this way to learn the exact sequence of requests before the online phase
(MPC control flow never depends on secret values, so the trace is exact).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import torch

from privit.parties.channel import FramedChannel, PeerError
from privit.parties.config import RunConfig
from privit.parties.counters import Counters
from privit.parties.prg import SEED_BYTES, Prg

Params = tuple[Any, ...]


@functools.cache
def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """numpy's dtype for a torch dtype (cached: building it costs ~2 us per receive)."""
    return torch.empty((), dtype=dtype).numpy().dtype


class CorrelationKind(Protocol):
    """One kind of dealer randomness (protocols/correlations.py implements them).

    `deal` runs on the dealer with one PRG per party (the party's seed, stream = request
    index) and returns, per party, the arrays that must travel (often none: the party
    derives its share from the same PRG). `expand` runs on party `party` with its PRG
    and its payload, and returns the material. `zeros` gives material of the right
    shapes for tracing.
    """

    def deal(self, params: Params, prgs: Sequence[Prg]) -> list[list[np.ndarray]]: ...

    def expand(
        self, params: Params, party: int, n_parties: int, prg: Prg, payload: Sequence[np.ndarray]
    ) -> dict[str, torch.Tensor]: ...

    def zeros(self, params: Params) -> dict[str, torch.Tensor]: ...


CorrelationRegistry = Mapping[str, CorrelationKind]


class PreparedCorrelations:
    """Material received and expanded in the offline phase, served in plan order."""

    def __init__(self) -> None:
        self._items: list[tuple[str, Params, dict[str, torch.Tensor]]] = []
        self._next = 0

    def add(self, kind: str, params: Params, material: dict[str, torch.Tensor]) -> None:
        self._items.append((kind, params, material))

    def __len__(self) -> int:
        return len(self._items)

    @property
    def remaining(self) -> int:
        return len(self._items) - self._next

    @property
    def used(self) -> int:
        """How many requests the job has taken: the plan index of the next one."""
        return self._next

    def take(self, kind: str, params: Params) -> dict[str, torch.Tensor]:
        if self._next >= len(self._items):
            raise PeerError(
                f"the dealer's plan has {len(self._items)} requests; the job asked for more "
                f"({kind} {params}) — dealer and party run different jobs"
            )
        planned_kind, planned_params, material = self._items[self._next]
        if planned_kind != kind or tuple(planned_params) != tuple(params):
            raise PeerError(
                f"correlation request {self._next} is {kind} {tuple(params)} but the dealer "
                f"planned {planned_kind} {tuple(planned_params)}"
            )
        self._items[self._next] = (planned_kind, planned_params, {})  # free memory
        self._next += 1
        return material


class Session:
    def __init__(
        self,
        cfg: RunConfig,
        party_id: int,
        channel: FramedChannel | None,
        counters: Counters,
        *,
        correlations: CorrelationRegistry,
        prepared: PreparedCorrelations | None = None,
        pair_seeds: Mapping[int, bytes] | None = None,
    ) -> None:
        if not 0 <= party_id < cfg.n_parties:
            raise ValueError(f"party id {party_id} out of range for {cfg.n_parties} parties")
        self.cfg = cfg
        self.party_id = party_id
        self.channel = channel
        self.counters = counters
        self.registry = correlations
        self.prepared = prepared
        self.pair_seeds = dict(pair_seeds or {})
        self.trace: list[tuple[str, Params]] | None = [] if channel is None else None
        self.trace_scopes: list[str] = []  # scope path of each traced request
        self.progress_sink: Callable[[int, int, str], None] | None = None
        self._pair_streams: dict[int, int] = {}

    @staticmethod
    def tracing(cfg: RunConfig, party_id: int, correlations: CorrelationRegistry) -> Session:
        """A session with no peers that records the correlation requests of a job."""
        seeds = {p: bytes(SEED_BYTES) for p in range(cfg.n_parties) if p != party_id}
        return Session(cfg, party_id, None, Counters(), correlations=correlations, pair_seeds=seeds)

    # -- facts ---------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.cfg.n_parties

    @property
    def frac_bits(self) -> int:
        return self.cfg.frac_bits

    @property
    def is_tracing(self) -> bool:
        return self.channel is None

    @property
    def others(self) -> list[int]:
        return [p for p in range(self.n) if p != self.party_id]

    # -- communication --------------------------------------------------------------
    def send(self, dst: int, x: torch.Tensor | np.ndarray, label: str) -> None:
        if self.channel is None:
            return
        if isinstance(x, torch.Tensor):
            # The wire makes the array C-contiguous; detach only where needed (~1 us each).
            x = x.detach().numpy() if x.requires_grad else x.numpy()
        self.channel.send(dst, "data", label, [x])

    def recv(
        self, src: int, label: str, shape: Sequence[int], dtype: torch.dtype = torch.int64
    ) -> torch.Tensor:
        """Receive one tensor; its shape and dtype must be exactly what we expect."""
        if type(shape) is not torch.Size:  # a Size holds ints already
            shape = tuple(int(d) for d in shape)
        if self.channel is None:
            return torch.zeros(shape, dtype=dtype)
        msg = self.channel.recv(src, "data", label)
        if len(msg.arrays) != 1:
            raise PeerError(f"{self.cfg.role_name(src)} sent {len(msg.arrays)} arrays for {label}, "
                            f"expected 1")
        arr = msg.arrays[0]
        expected_np = _numpy_dtype(dtype)
        if arr.dtype != expected_np or arr.shape != shape:
            raise PeerError(
                f"{self.cfg.role_name(src)} sent {arr.dtype}{list(arr.shape)} for {label}, "
                f"expected {expected_np}{list(shape)}"
            )
        # Protocols may update results in place, so the tensor must be writable and ours.
        # A large frame received over TCP is a buffer of our own that pyzmq exposes
        # writable: use it as is (a 100 MB copy costs more than the transfer). Small
        # frames may share ZeroMQ's receive buffer and in-memory test frames are
        # read-only bytes: copy those.
        if arr.nbytes < 1 << 16 or not (arr.flags.writeable and arr.flags.aligned):
            arr = arr.copy()
        return torch.from_numpy(arr)

    def exchange(self, x: torch.Tensor, label: str) -> list[torch.Tensor]:
        """Send `x` to every other party and receive theirs: one round.

        Returns every party's tensor indexed by party id (ours included).
        """
        for p in self.others:
            self.send(p, x, label)
        out: list[torch.Tensor] = []
        for p in range(self.n):
            out.append(x if p == self.party_id else self.recv(p, label, x.shape, x.dtype))
        return out

    # -- randomness -----------------------------------------------------------------
    def correlation(self, kind: str, params: Params) -> dict[str, torch.Tensor]:
        if kind not in self.registry:
            raise ValueError(f"unknown correlation kind {kind!r}")
        params = tuple(params)
        if self.trace is not None:
            self.trace.append((kind, params))
            self.trace_scopes.append(self.counters.current_scope)
            return self.registry[kind].zeros(params)
        if self.prepared is None:
            raise RuntimeError("no prepared correlations: the offline phase did not run")
        return self.prepared.take(kind, params)

    def next_request_index(self) -> int:
        """The plan index the next correlation request will get (the same on every role),
        e.g. to name a fixed mask that later requests refer to."""
        if self.trace is not None:
            return len(self.trace)
        if self.prepared is None:
            raise RuntimeError("no prepared correlations: the offline phase did not run")
        return self.prepared.used

    def pair_prg(self, peer: int) -> Prg:
        """A fresh PRG stream known to us and `peer` only (both must call in the same order)."""
        if peer not in self.pair_seeds:
            raise ValueError(f"no shared seed with party {peer}")
        stream = self._pair_streams.get(peer, 0)
        self._pair_streams[peer] = stream + 1
        return Prg(self.pair_seeds[peer], stream)

    def report_progress(self, done: int, total: int, label: str) -> None:
        """Tell whoever watches this run (the coordinator's progress bar) how far we are."""
        if self.progress_sink is not None and not self.is_tracing:
            self.progress_sink(done, total, label)

    # -- accounting ----------------------------------------------------------------
    @contextmanager
    def scope(self, name: str) -> Iterator[None]:
        with self.counters.scope(name):
            yield
