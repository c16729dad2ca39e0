"""Dealer randomness for the arithmetic protocols (the `CorrelationKind`s of session.py).

Every kind is a list of named components, each an int64 tensor shared additively:
- a *random* component (a Beaver mask, the r of a truncation pair): every party draws its
  share from its own PRG; the value is the sum, which only the dealer knows;
- a *derived* component (c = ab, r >> f, MSB(r), a random bit): the dealer computes the
  value; parties 0..n-2 draw their share from their PRG and the LAST party (n-1)
  receives the correction value - sum(other shares), the only bytes that travel.

Draw order (dealer and party must agree): each party draws its components in the
order the kind lists them, skipping those it receives (the last party's derived ones).
The dealer's PRG for party i at request r is Prg(seed_i, stream=r) (parties/offline.py).

OFFLINE BYTES per request: 8 * (numel of the derived components) to party n-1 and none
to the others, plus the request's entry in the offline chunk header.

Fixed-weight matmul: `fixed_mask` deals B (k, m), the mask of a secret weight W; the
dealer remembers B under the mask id until a `fixed_matmul_triple` with the same id asks
for C = A @ B. The memory is per dealer thread (`MaskBook`), so concurrent in-process
dealers (tests) never see each other's masks; a new plan overwrites ids it reuses.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from privit.parties.prg import Prg, new_seed
from privit.parties.session import Params
from privit.protocols import ring


@dataclass(frozen=True)
class Component:
    name: str
    shape: tuple[int, ...]
    derived: bool


def owned_tensor(array: np.ndarray) -> torch.Tensor:
    """`array` as a tensor that owns its memory: payload buffers from the wire are
    read-only, so those are copied; arrays drawn here already are (no second copy)."""
    return torch.from_numpy(np.array(array, copy=True) if not array.flags.writeable else array)


def _dims(values: Sequence[object], what: str) -> tuple[int, ...]:
    dims = []
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{what}: dimension {v!r} is not a non-negative int")
        dims.append(v)
    return tuple(dims)


def _int_param(v: object, what: str, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"{what} must be an int in [{lo}, {hi}], got {v!r}")
    return v


class ComponentKind:
    """A correlation described by its components; subclasses say which and how to derive."""

    name = ""

    def components(self, params: Params) -> list[Component]:
        raise NotImplementedError

    def derive(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Dealer: the derived components' values from the random components' values."""
        raise NotImplementedError

    # -- CorrelationKind ----------------------------------------------------------------
    def deal(self, params: Params, prgs: Sequence[Prg]) -> list[list[np.ndarray]]:
        comps = self.components(params)
        n = len(prgs)
        shares: list[dict[str, torch.Tensor]] = []
        for i, prg in enumerate(prgs):
            drawn = [c for c in comps if not (c.derived and i == n - 1)]
            shares.append({c.name: prg.ring(c.shape) for c in drawn})
        values = {c.name: ring.ring_sum([s[c.name] for s in shares])
                  for c in comps if not c.derived}
        derived = self.derive(params, values)
        payload = []
        for c in comps:
            if c.derived:
                correction = derived[c.name].clone()
                for s in shares[: n - 1]:
                    correction -= s[c.name]
                payload.append(correction.contiguous().numpy())
        return [[] for _ in range(n - 1)] + [payload]

    def expand(
        self, params: Params, party: int, n_parties: int, prg: Prg, payload: Sequence[np.ndarray]
    ) -> dict[str, torch.Tensor]:
        comps = self.components(params)
        last = party == n_parties - 1
        received = [c for c in comps if c.derived and last]
        if len(payload) != len(received):
            raise ValueError(
                f"{self.name}: expected {len(received)} payload arrays, got {len(payload)}")
        out: dict[str, torch.Tensor] = {}
        for c in comps:
            if not (c.derived and last):
                out[c.name] = prg.ring(c.shape)
        for c, arr in zip(received, payload, strict=True):
            if arr.dtype != np.int64 or tuple(arr.shape) != c.shape:
                raise ValueError(
                    f"{self.name}.{c.name}: payload is {arr.dtype}{list(arr.shape)}, "
                    f"expected int64{list(c.shape)}"
                )
            out[c.name] = torch.from_numpy(np.array(arr, dtype=np.int64, copy=True))
        return out

    def zeros(self, params: Params) -> dict[str, torch.Tensor]:
        return {c.name: torch.zeros(c.shape, dtype=torch.int64) for c in self.components(params)}


class Triple(ComponentKind):
    """Elementwise Beaver triple a, b, c = a*b. params = shape."""

    name = "triple"

    def components(self, params: Params) -> list[Component]:
        shape = _dims(params, self.name)
        return [Component("a", shape, False), Component("b", shape, False),
                Component("c", shape, True)]

    def derive(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"c": values["a"] * values["b"]}


class Square(ComponentKind):
    """Square pair a, a2 = a*a. params = shape."""

    name = "square"

    def components(self, params: Params) -> list[Component]:
        shape = _dims(params, self.name)
        return [Component("a", shape, False), Component("a2", shape, True)]

    def derive(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"a2": values["a"] * values["a"]}


def _matmul_dims(params: Params, what: str) -> tuple[tuple[int, ...], int, int, int]:
    dims = _dims(params, what)
    if len(dims) < 3:
        raise ValueError(f"{what}: params are batch dims + (n, k, m), got {params!r}")
    return dims[:-3], dims[-3], dims[-2], dims[-1]


class MatmulTriple(ComponentKind):
    """Matrix triple A (*batch, n, k), B (*batch, k, m), C = A @ B. params = (*batch, n, k, m)."""

    name = "matmul_triple"

    def components(self, params: Params) -> list[Component]:
        batch, n, k, m = _matmul_dims(params, self.name)
        return [Component("a", (*batch, n, k), False), Component("b", (*batch, k, m), False),
                Component("c", (*batch, n, m), True)]

    def derive(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"c": ring.ring_matmul(values["a"], values["b"])}


class TruncPair(ComponentKind):
    """Dealer truncation pair for `bits`: r uniform in Z_2^64, r >> bits (logical), MSB(r).
    params = (bits, *shape)."""

    name = "trunc_pair"

    def components(self, params: Params) -> list[Component]:
        if not params:
            raise ValueError(f"{self.name}: params are (bits, *shape)")
        _int_param(params[0], f"{self.name} bits", 1, 62)
        shape = _dims(params[1:], self.name)
        return [Component("r", shape, False), Component("r_shift", shape, True),
                Component("r_msb", shape, True)]

    def derive(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        r = values["r"]
        return {"r_shift": ring.logical_rshift(r, int(params[0])), "r_msb": ring.msb(r)}


class RandBits(ComponentKind):
    """Arithmetic shares of uniform bits b in {0, 1} (the dealer's own randomness).
    params = shape."""

    name = "rand_bits"

    def components(self, params: Params) -> list[Component]:
        return [Component("b", _dims(params, self.name), True)]

    def derive(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        shape = _dims(params, self.name)
        return {"b": Prg(new_seed()).bits(shape)}


class MaskBook:
    """The dealer's memory of fixed masks B within a plan, per dealer thread.

    A mask is kept either as the tensor itself or as a way to draw it again (`put_drawn`):
    a mask drawn from a party's request PRG is re-derived from that PRG's seed and stream
    at each use, so the dealer does not hold every weight's mask from the weights step to
    its matmul (at ViT-Base 0.69 GB, docs/design.md, "Offline")."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _masks(self) -> dict[int, tuple[tuple[int, int], torch.Tensor | Callable[[], torch.Tensor]]]:
        if not hasattr(self._local, "masks"):
            self._local.masks = {}
        return self._local.masks

    def put(self, mask_id: int, b: torch.Tensor) -> None:
        self._masks()[mask_id] = ((int(b.shape[0]), int(b.shape[1])), b)

    def put_drawn(self, mask_id: int, shape: tuple[int, int],
                  draw: Callable[[], torch.Tensor]) -> None:
        """Remember a mask by how to draw it: `draw()` must return the same (k, m) tensor
        at every call."""
        self._masks()[mask_id] = (shape, draw)

    def get(self, mask_id: int, k: int, m: int) -> torch.Tensor:
        entry = self._masks().get(mask_id)
        if entry is None:
            raise ValueError(f"fixed mask {mask_id} was not dealt in this plan")
        shape, b = entry
        if shape != (k, m):
            raise ValueError(f"fixed mask {mask_id} is {shape}, the query expects {(k, m)}")
        return b if isinstance(b, torch.Tensor) else b()


class FixedMask(ComponentKind):
    """The mask B (k, m) of a fixed secret weight; no payload at all (B is random).
    params = (mask_id, k, m). The dealer remembers B under mask_id."""

    name = "fixed_mask"

    def __init__(self, book: MaskBook) -> None:
        self.book = book

    def components(self, params: Params) -> list[Component]:
        if len(params) != 3:
            raise ValueError(f"{self.name}: params are (mask_id, k, m), got {params!r}")
        _int_param(params[0], f"{self.name} mask id", 0, ring.INT64_MAX)
        return [Component("b", _dims(params[1:], self.name), False)]

    def derive(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.book.put(int(params[0]), values["b"])
        return {}


class FixedMatmulTriple(ComponentKind):
    """One query against a fixed mask: A (*batch, n, k) fresh, C = A @ B with B the mask
    `mask_id` dealt earlier in the plan. params = (mask_id, *batch, n, k, m)."""

    name = "fixed_matmul_triple"

    def __init__(self, book: MaskBook) -> None:
        self.book = book

    def components(self, params: Params) -> list[Component]:
        if not params:
            raise ValueError(f"{self.name}: params are (mask_id, *batch, n, k, m)")
        _int_param(params[0], f"{self.name} mask id", 0, ring.INT64_MAX)
        batch, n, k, m = _matmul_dims(params[1:], self.name)
        return [Component("a", (*batch, n, k), False), Component("c", (*batch, n, m), True)]

    def derive(self, params: Params, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        _, _, k, m = _matmul_dims(params[1:], self.name)
        b = self.book.get(int(params[0]), k, m)
        return {"c": ring.ring_matmul(values["a"], b)}


def arithmetic_kinds() -> dict[str, ComponentKind]:
    """Fresh instances of every arithmetic kind, keyed by name (the fixed-mask pair shares
    one `MaskBook`)."""
    book = MaskBook()
    kinds: list[ComponentKind] = [Triple(), Square(), MatmulTriple(), TruncPair(), RandBits(),
                                  FixedMask(book), FixedMatmulTriple(book)]
    return {k.name: k for k in kinds}
