"""Which exact ring-matmul kernel is faster on this machine: a cost model per kernel, fitted
from a short measurement and cached per CPU model, torch version and thread count.

Why measure: the kernels' relative speed is a property of the CPU, not of the shapes alone.
torch's int64 matmul has no BLAS; on a CPU without AVX-512 (no 64-bit vector multiply) it
ran 25x slower than on an AVX-512 one for the same product, while float64 BLAS, which the
limb kernel uses, is fast on both (docs/arithmetic.md, section 6). Thresholds measured on
one CPU picked the slower kernel by 5-15x on the other.

Model: a kernel's time is a non-negative combination of its features, which the caller
supplies (`ring.matmul_features`), e.g. int64: c0 + c1 * MACs; limbs: c0 + c1 * (GEMMs x
MACs) + c2 * (elements passed over outside BLAS).

Steps of `MatmulCalibrator.calibration(threads)`:
1. In this process already: return it (memoised per thread count, under a lock: in-memory
   runs put every role in one process, on threads).
2. The key: CPU model name and architecture, torch version, thread count, MODEL_VERSION.
3. Else read `cache_dir()/matmul-<hash of key>.json`; if it parses, its key matches and it
   has every kernel's coefficients: use it. Anything else (missing, unreadable, corrupt,
   another model version) is ignored and replaced.
4. Else time every kernel on CALIBRATION_SHAPES (random full-range operands; an untimed
   warm-up pass, then up to REPS passes over all shapes and kernels interleaved, so that a
   burst of load from another process hits both kernels alike, fewer once BUDGET_S is
   spent; best time kept), fit each kernel's coefficients by non-negative least squares on
   the relative error, and write the file atomically (temporary file, then rename); a
   failed write is ignored.
0.15-0.3 s on a 2-core AMD EPYC VM with 1 thread (what role processes use); with 2 threads
while other processes keep both cores busy, two passes of up to ~1.3 s each. The choice
never affects a result: every kernel is exact, so a poor calibration costs time only.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import platform
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from privit.parties.jsonfile import write_json_atomically

MODEL_VERSION = 1
"""Bump when the features or the measurement change: older cache files are then ignored."""
REPS = 5
BUDGET_S = 0.4
"""Timed passes stop after this many seconds once one is done: 2-thread BLAS on a busy
2-core machine ran 100x slower than alone (OpenMP threads spinning at barriers while their
partner is descheduled), and a pass then took over a second."""


class MatmulDims(NamedTuple):
    """(batch, n, k, m) of a product (batch, n, k) @ (batch, k, m), batch broadcast."""

    batch: int
    n: int
    k: int
    m: int

    @property
    def macs(self) -> int:
        return self.batch * self.n * self.k * self.m


CALIBRATION_SHAPES = (
    MatmulDims(1, 8, 16, 8),       # fixed overheads
    MatmulDims(1, 64, 256, 64),    # long inner dimension: GEMM-bound
    MatmulDims(1, 256, 16, 256),   # short inner dimension, wide output: element passes
    MatmulDims(4, 32, 64, 32),     # batched (bmm path)
    MatmulDims(1, 16, 3072, 32),   # k > 2048: four limbs, ten GEMMs
)
"""Small enough that the slowest kernel seen (int64 at ~0.4 GMAC/s) takes a few ms each."""

Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Features = Callable[[str, MatmulDims], Sequence[float]]


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what `platform` knows) and arch."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    return f"{name or platform.processor() or 'unknown CPU'} ({platform.machine()})"


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/privit, or ~/.cache/privit (a relative XDG_CACHE_HOME is ignored, as
    the XDG spec says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "privit"


@dataclass(frozen=True)
class CalibrationKey:
    cpu: str
    torch: str
    threads: int
    model: int = MODEL_VERSION

    @staticmethod
    def here(threads: int) -> CalibrationKey:
        return CalibrationKey(cpu=cpu_model(), torch=torch.__version__, threads=threads)

    def file_name(self) -> str:
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"matmul-{digest[:16]}.json"


@dataclass(frozen=True)
class Sample:
    method: str
    dims: MatmulDims
    seconds: float


@dataclass(frozen=True)
class Calibration:
    """Fitted coefficients per kernel; `predict` gives seconds for a feature vector."""

    key: CalibrationKey
    coefficients: Mapping[str, tuple[float, ...]]
    samples: tuple[Sample, ...] = ()
    seconds: float = 0.0  # how long the measurement took
    source: str = "measured"  # "measured" or "cache" (not stored)

    def predict(self, method: str, features: Sequence[float]) -> float:
        coef = self.coefficients[method]
        if len(coef) != len(features):
            raise ValueError(f"{method}: {len(features)} features for {len(coef)} coefficients")
        return float(sum(c * x for c, x in zip(coef, features, strict=True)))

    def to_json(self) -> dict[str, Any]:
        return {"key": asdict(self.key), "seconds": self.seconds,
                "coefficients": {m: list(c) for m, c in self.coefficients.items()},
                "samples": [[s.method, list(s.dims), s.seconds] for s in self.samples]}

    @staticmethod
    def from_json(data: Any, key: CalibrationKey, n_features: Mapping[str, int]) -> Calibration:
        """Parse and check a cache file's content; ValueError for anything but a calibration
        of `key` with `n_features[method]` finite non-negative coefficients per kernel."""
        if not isinstance(data, dict) or data.get("key") != asdict(key):
            raise ValueError("not a calibration of this CPU, torch and thread count")
        coefficients = data["coefficients"]
        if not isinstance(coefficients, dict) or set(coefficients) != set(n_features):
            raise ValueError("kernels differ")
        parsed: dict[str, tuple[float, ...]] = {}
        for method, values in coefficients.items():
            coef = tuple(float(v) for v in values)
            if len(coef) != n_features[method] or not all(math.isfinite(c) and c >= 0 for c in coef):
                raise ValueError(f"bad coefficients for {method}")
            parsed[method] = coef
        samples = tuple(Sample(str(m), MatmulDims(*(int(d) for d in dims)), float(s))
                        for m, dims, s in data.get("samples", []))
        return Calibration(key, parsed, samples, float(data.get("seconds", 0.0)), "cache")


def fit_non_negative(rows: Sequence[Sequence[float]], seconds: Sequence[float]) -> tuple[float, ...]:
    """Coefficients c >= 0 minimising sum_i ((rows_i . c - t_i) / t_i)^2: exact
    non-negative least squares by trying every set of free coefficients (there are 2-3)."""
    x = np.asarray(rows, dtype=np.float64)
    t = np.asarray(seconds, dtype=np.float64)
    weight = 1.0 / np.maximum(t, 1e-9)
    xw, tw = x * weight[:, None], t * weight
    best: tuple[float, np.ndarray] | None = None
    n = x.shape[1]
    for size in range(1, n + 1):
        for free in itertools.combinations(range(n), size):
            sol, *_ = np.linalg.lstsq(xw[:, free], tw, rcond=None)
            if (sol < 0).any():
                continue
            coef = np.zeros(n)
            coef[list(free)] = sol
            residual = float(((xw @ coef - tw) ** 2).sum())
            if best is None or residual < best[0]:
                best = (residual, coef)
    if best is None:  # unreachable for positive data: one column alone fits with c >= 0
        raise ValueError("no non-negative fit")
    return tuple(float(c) for c in best[1])


class MatmulCalibrator:
    """Calibrations of `kernels` (name -> exact matmul) under `features`, memoised in this
    object per key and cached on disk under `cache_dir()`."""

    def __init__(self, kernels: Mapping[str, Kernel], features: Features,
                 shapes: Sequence[MatmulDims] = CALIBRATION_SHAPES, reps: int = REPS,
                 budget_s: float = BUDGET_S) -> None:
        self.kernels = dict(kernels)
        self.features = features
        self.shapes = tuple(shapes)
        self.reps = reps
        self.budget_s = budget_s
        self._memo: dict[int, Calibration] = {}
        self._lock = threading.Lock()

    def n_features(self) -> dict[str, int]:
        return {m: len(self.features(m, self.shapes[0])) for m in self.kernels}

    def cache_path(self, threads: int) -> Path:
        return cache_dir() / CalibrationKey.here(threads).file_name()

    def calibration(self, threads: int, remeasure: bool = False) -> Calibration:
        """This machine's calibration for `threads` torch threads (steps 1-4 above)."""
        with self._lock:
            # by thread count alone: CPU and torch do not change within a process, and the
            # key's /proc/cpuinfo read costs ~1 ms, too much for every product
            if not remeasure and threads in self._memo:
                return self._memo[threads]
            key = CalibrationKey.here(threads)
            path = cache_dir() / key.file_name()
            found = None if remeasure else self._read(path, key)
            if found is None:
                found = self.measure(threads)
                write_json_atomically(path, found.to_json())
            self._memo[threads] = found
            return found

    def _read(self, path: Path, key: CalibrationKey) -> Calibration | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Calibration.from_json(data, key, self.n_features())
        except (OSError, ValueError, TypeError, KeyError):  # JSONDecodeError is a ValueError
            return None

    def measure(self, threads: int) -> Calibration:
        """Time every kernel on every calibration shape (interleaved, best of up to `reps`
        passes within `budget_s`), fit."""
        start = time.perf_counter()
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            gen = torch.Generator().manual_seed(0)
            operands = [(_random_ring((d.batch, d.n, d.k), gen), _random_ring((d.batch, d.k, d.m), gen))
                        for d in self.shapes]
            best = {(m, i): math.inf for m in self.kernels for i in range(len(self.shapes))}
            for rep in range(self.reps + 1):  # pass 0 is the untimed warm-up
                if rep > 1 and time.perf_counter() - start > self.budget_s:
                    break
                for i, (a, b) in enumerate(operands):
                    for method, kernel in self.kernels.items():
                        t0 = time.perf_counter()
                        kernel(a, b)
                        elapsed = time.perf_counter() - t0
                        if rep:
                            best[method, i] = min(best[method, i], elapsed)
        finally:
            torch.set_num_threads(previous)
        samples = tuple(Sample(m, self.shapes[i], s) for (m, i), s in best.items())
        coefficients = {
            m: fit_non_negative([self.features(m, d) for d in self.shapes],
                                [best[m, i] for i in range(len(self.shapes))])
            for m in self.kernels
        }
        return Calibration(CalibrationKey.here(threads), coefficients, samples,
                           time.perf_counter() - start)


def _random_ring(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randint(-(1 << 63), (1 << 63) - 1, shape, generator=gen, dtype=torch.int64)
