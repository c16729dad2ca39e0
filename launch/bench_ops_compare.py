"""Benchmark ops of the comparison layer (protocols/compare.py, circa.py).

Rows: ReLU on 197x768 by each path ("fss": the one-round wide key, "fss_compact": the
two-round bit key, "adder", "adder_compact": the adder ending in XOR shares + bit_select)
and by `auto` (its row reports `auto_chose_<path>` for each path),
DReLU, Circa's stochastic ReLU at the default (k, m) on each path (its row reports
the measured fault rate on N(0, 1) and the expected one), and max over the last dim
of (3, 197, 197) (a softmax's row maximum).

`python -m privit.launch.bench_ops_compare` measures the compute constants of
protocols/cost_model.py on this machine (one party's local work) and prints them.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from privit.launch.bench_op import BenchOp, Plain, Shares, default_check
from privit.parties.config import MIN_FRAC_BITS
from privit.parties.prg import Prg, new_seed
from privit.parties.session import Session
from privit.protocols import binary, circa, compare
from privit.protocols.bit_select import BitSelect, open_bits
from privit.protocols.cost_model import PATHS, CostModel, PathConstants
from privit.protocols.fss_correlations import DreluFss, ReluFss

ELEMENTWISE = (197, 768)
SCORES = (3, 197, 197)
FRAC_BITS = 16  # the bench's run config (RunConfig default); Circa's metrics assume it


def _normal(shape: tuple[int, ...]) -> Callable[[torch.Generator], dict[str, tuple[torch.Tensor, int]]]:
    def inputs(gen: torch.Generator) -> dict[str, tuple[torch.Tensor, int]]:
        return {"x": (torch.randn(shape, generator=gen, dtype=torch.float64), 1)}
    return inputs


def _relu_ref(p: Plain) -> torch.Tensor:
    return p["x"].clamp(min=0)


def _drelu_ref(p: Plain) -> torch.Tensor:
    # on the encoded input: a value just below 0 encodes to 0, whose DReLU is 1
    return (torch.round(p["x"] * 2.0**FRAC_BITS) >= 0).to(torch.float64)


@dataclass
class _Choice:
    """What `auto` picked in this process's run (read by the row's check)."""

    method: str = ""
    estimates_s: dict[str, float] = field(default_factory=dict)

    def decide(self, sess: Session, numels: list[int]) -> None:
        """Record auto's choice and the cost model's estimate for both paths."""
        self.method = compare.choose_method(sess, "auto", numels, 64, product=True)
        model = compare.ComparisonConfig().cost_model
        self.estimates_s = {m: model.estimate_s(m, numels, 64, True, sess.cfg.network)
                            for m in PATHS}


def _auto_check(choice: _Choice) -> Callable[[torch.Tensor, torch.Tensor, Plain], dict[str, float]]:
    def check(result: torch.Tensor, reference: torch.Tensor, plain: Plain) -> dict[str, float]:
        return {**default_check(result, reference, plain),
                **{f"auto_chose_{m}": float(choice.method == m) for m in PATHS},
                **{f"est_{m}_ms": 1e3 * t for m, t in choice.estimates_s.items()}}
    return check


def _relu_auto(choice: _Choice) -> Callable[[Session, Shares, Any], torch.Tensor]:
    def run(sess: Session, s: Shares, _: Any) -> torch.Tensor:
        choice.decide(sess, [s["x"].numel()])
        return compare.relu(sess, s["x"], method="auto")
    return run


def _max_auto(choice: _Choice) -> Callable[[Session, Shares, Any], torch.Tensor]:
    def run(sess: Session, s: Shares, _: Any) -> torch.Tensor:
        result = compare.maximum(sess, s["x"], dim=-1, method="auto")
        per_level, length = [], SCORES[-1]
        while length > 1:
            per_level.append(SCORES[0] * SCORES[1] * (length // 2))
            length = (length + 1) // 2
        choice.decide(sess, per_level)
        return result
    return run


def _circa_run(method: str) -> Callable[[Session, Shares, Any], torch.Tensor]:
    def run(sess: Session, s: Shares, _: Any) -> torch.Tensor:
        k, m = circa.default_params(sess.frac_bits)
        return circa.stochastic_relu(sess, s["x"], k=k, m=m, method=method)
    return run


def _circa_check(result: torch.Tensor, reference: torch.Tensor, plain: Plain) -> dict[str, float]:
    """Fault rate: outputs that differ from the exact ReLU by more than the encoding error."""
    k, _ = circa.default_params(FRAC_BITS)
    wrong = (result - reference).abs() > 2.0 ** -(FRAC_BITS + 1) + 1e-12
    exact_part = torch.where(wrong, torch.zeros_like(result), result - reference)
    return {"max_abs_error": float(exact_part.abs().max()),
            "fault_rate": float(wrong.double().mean()),
            "expected_fault_rate": circa.gaussian_fault_rate(1.0, FRAC_BITS, k),
            "k": float(k), "bits_compared": float(circa.compared_bits(*circa.default_params(FRAC_BITS)))}


def _method_run(fn: Callable[..., torch.Tensor], method: str, **kw: Any
                ) -> Callable[[Session, Shares, Any], torch.Tensor]:
    def run(sess: Session, s: Shares, _: Any) -> torch.Tensor:
        return fn(sess, s["x"], method=method, **kw)
    return run


assert MIN_FRAC_BITS <= FRAC_BITS
_relu_choice, _max_choice = _Choice(), _Choice()
_max_ref: Callable[[Plain], torch.Tensor] = lambda p: p["x"].max(dim=-1).values  # noqa: E731
_EW, _SC = "197x768", "3x197x197, max dim -1"

OPS = [
    BenchOp("relu_fss", _EW, "ReLU with an FSS comparison (DCF keys from the dealer)",
            _normal(ELEMENTWISE), _method_run(compare.relu, "fss"), _relu_ref),
    BenchOp("relu_fss_compact", _EW, "ReLU on the compact bit DCF keys + bit_select (2 rounds)",
            _normal(ELEMENTWISE), _method_run(compare.relu, "fss_compact"), _relu_ref),
    BenchOp("relu_adder", _EW, "ReLU with a boolean-adder comparison",
            _normal(ELEMENTWISE), _method_run(compare.relu, "adder"), _relu_ref),
    BenchOp("relu_adder_compact", _EW,
            "ReLU on the adder ending in XOR shares + bit_select (one round more)",
            _normal(ELEMENTWISE), _method_run(compare.relu, "adder_compact"), _relu_ref),
    BenchOp("relu_auto", _EW, "ReLU, comparison protocol picked by the cost model",
            _normal(ELEMENTWISE), _relu_auto(_relu_choice), _relu_ref,
            check=_auto_check(_relu_choice)),
    BenchOp("drelu_fss", _EW, "sign bit (DReLU) with an FSS comparison",
            _normal(ELEMENTWISE), _method_run(compare.drelu, "fss"), _drelu_ref,
            raw_output=True),
    BenchOp("drelu_adder", _EW, "sign bit (DReLU) with a boolean-adder comparison",
            _normal(ELEMENTWISE), _method_run(compare.drelu, "adder"),
            _drelu_ref, raw_output=True),
    BenchOp("stochastic_relu_fss", _EW, "Circa's stochastic ReLU, FSS comparison",
            _normal(ELEMENTWISE), _circa_run("fss"), _relu_ref,
            check=_circa_check),
    BenchOp("stochastic_relu_fss_compact", _EW,
            "Circa's stochastic ReLU, FSS comparison on the compact bit keys",
            _normal(ELEMENTWISE), _circa_run("fss_compact"), _relu_ref,
            check=_circa_check),
    BenchOp("stochastic_relu_adder", _EW, "Circa's stochastic ReLU, boolean-adder comparison",
            _normal(ELEMENTWISE), _circa_run("adder"), _relu_ref,
            check=_circa_check),
    BenchOp("stochastic_relu_adder_compact", _EW,
            "Circa's stochastic ReLU, adder ending in XOR shares + bit_select",
            _normal(ELEMENTWISE), _circa_run("adder_compact"), _relu_ref,
            check=_circa_check),
    BenchOp("max_fss", _SC, "row maximum by a tree of FSS ReLUs",
            _normal(SCORES), _method_run(compare.maximum, "fss"), _max_ref),
    BenchOp("max_fss_compact", _SC, "row maximum by a tree of compact FSS ReLUs",
            _normal(SCORES), _method_run(compare.maximum, "fss_compact"), _max_ref),
    BenchOp("max_adder", _SC, "row maximum by a tree of boolean-adder ReLUs",
            _normal(SCORES), _method_run(compare.maximum, "adder"), _max_ref),
    BenchOp("max_adder_compact", _SC,
            "row maximum by a tree of adder ReLUs ending in XOR shares + bit_select",
            _normal(SCORES), _method_run(compare.maximum, "adder_compact"), _max_ref),
    BenchOp("max_auto", _SC, "row maximum, comparison protocol picked by the cost model",
            _normal(SCORES), _max_auto(_max_choice), _max_ref,
            check=_auto_check(_max_choice)),
]


# -- calibration of cost_model's compute constants ------------------------------------------------
class _Mirror:
    """A stand-in session for timing one party's local work: what it sends comes back as
    the peer's message, and dealer material is dealt in-process (not timed)."""

    party_id, n, is_tracing = 0, 2, False

    def __init__(self, material: dict[str, torch.Tensor] | None = None,
                 by_params: dict[tuple[int, ...], dict[str, torch.Tensor]] | None = None) -> None:
        """`material` for every request, or `by_params` per request's parameters (a call
        asking for its key in pieces, as the FSS ReLU gate does)."""
        self.material, self.by_params, self.last = material, by_params or {}, None

    def correlation(self, kind: str, params: tuple[int, ...]) -> dict[str, torch.Tensor]:
        if self.material is not None:
            return self.material
        return self.by_params[tuple(params)]

    def send(self, dst: int, x: Any, label: str) -> None:
        self.last = x

    def recv(self, src: int, label: str, shape: Any, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.array(self.last))


def _best_s(fn: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def calibrate(numel: int = 197 * 768, reps: int = 5) -> CostModel:
    """Measure the per-element compute constants of both paths on this machine (one party's
    local work, best of `reps`; the network terms are left to the run's config)."""
    torch.set_num_threads(1)
    x = torch.randint(-(1 << 40), 1 << 40, (numel,))

    def fss_time(kind: Any, requests: list[tuple[int, ...]], fn: Callable[[Any], Any]) -> float:
        seeds = [new_seed(), new_seed()]
        by_params = {}
        for params in requests:
            dealt = kind.deal(params, [Prg(s, 0) for s in seeds])
            by_params[params] = kind.expand(params, 0, 2, Prg(seeds[0], 0), dealt[0])
        sess = _Mirror(by_params=by_params)
        return _best_s(lambda: fn(sess), reps)

    # both FSS calls ask for their keys in pieces of FSS_REQUEST_ELEMENTS
    # (compare._request_pieces)
    pieces = sorted({n for _, n in compare._request_pieces(numel)})
    fits: dict[str, PathConstants] = {}
    for name, kind, fn in (("drelu", DreluFss(), compare._drelu_fss),
                           ("relu", ReluFss(), compare._gate_fss)):
        t: dict[int, float] = {}
        for bits in (64, 16):
            requests: list[tuple[int, ...]] = (
                [(n, bits) for n in pieces] if name == "drelu" else [(n, bits, 0) for n in pieces])
            extra = () if name == "drelu" else (x,)

            def call(s: Any, b: int = bits, f: Callable[..., Any] = fn,
                     e: tuple[Any, ...] = extra) -> Any:
                return f(s, x, b, *e)

            t[bits] = fss_time(kind, requests, call)
        per_level = (t[64] - t[16]) / (numel * 48)
        fits[name] = PathConstants(1e-3, 0.0, max(t[16] / numel - 15 * per_level, 0.0), per_level)
    times: dict[tuple[int, int], float] = {}
    for bits, leaf in ((64, 2), (14, 2), (14, 4)):
        gate_params = (numel, bits, 1, leaf)
        seeds = [new_seed(), new_seed()]
        gate = binary.AdderGate()
        dealt = gate.deal(gate_params, [Prg(s, 0) for s in seeds])
        sess = _Mirror(gate.expand(gate_params, 0, 2, Prg(seeds[0], 0), dealt[0]))

        def run_gate(s: Any = sess, b: int = bits, w: int = leaf) -> Any:
            return binary.adder_gate(s, x, b, x, leaf=w)

        times[bits, leaf] = _best_s(run_gate, reps)
    per_position = (times[64, 2] - times[14, 2]) / (numel * 48)  # P = 64 and 16
    adder = PathConstants(1e-3, 5e-4, max(times[14, 2] / numel - 16 * per_position, 0.0),
                          per_position)
    leaf4 = max((times[14, 4] - times[14, 2]) / numel, 0.0)
    # "adder_compact": the XOR-ending gate + bit_select, beyond the table-ending gate
    compact_params = (numel, 14, binary.OUT_XOR, 2)
    seeds = [new_seed(), new_seed()]
    gate = binary.AdderGate()
    dealt = gate.deal(compact_params, [Prg(s, 0) for s in seeds])
    adder_mat = gate.expand(compact_params, 0, 2, Prg(seeds[0], 0), dealt[0])
    select = BitSelect()
    select_params = (1, numel, 0)
    dealt = select.deal(select_params, [Prg(s, 1) for s in seeds])
    select_mat = select.expand(select_params, 0, 2, Prg(seeds[0], 1), dealt[0])

    adder_sess: Any = _Mirror(adder_mat)
    select_sess: Any = _Mirror(select_mat)

    def run_compact() -> Any:
        bits = binary.adder_drelu_xor(adder_sess, x, 14)
        return open_bits(select_sess, bits.unsqueeze(0), x, square=False, label="relu_bit")

    select_s = max((_best_s(run_compact, reps) - times[14, 2]) / numel, 0.0)
    return CostModel(fss_drelu=fits["drelu"], fss_relu=fits["relu"], adder=adder,
                     adder_leaf4_per_elem_s=leaf4, bit_select_per_elem_s=select_s)


if __name__ == "__main__":
    print(calibrate())
