"""Arithmetic protocols end to end over the in-memory harness: accuracy against float64,
exact online rounds and bytes per op (from the wire format), truncation analysis."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch

from privit.parties.config import RunConfig
from privit.parties.inmemory_run import InMemoryRunError, run_in_memory, run_in_memory_detailed
from privit.parties.session import Session
from privit.parties.wire import Message, encode, message_nbytes
from privit.protocols import beaver, ring, sharing, truncation
from privit.protocols.registry import CORRELATIONS

CONFIGS = [(2, "exact"), (2, "local"), (2, "dealer"), (3, "dealer")]
CONFIG_IDS = [f"{n}p-{t}" for n, t in CONFIGS]
F = 16
LSB = 2.0**-F


def make_cfg(n: int, trunc: str) -> RunConfig:
    return RunConfig(n_parties=n, truncation=trunc, frac_bits=F, timeout_s=20)


def run(cfg: RunConfig, job: Callable[[Session], Any]) -> list[tuple[Any, dict[str, Any]]]:
    return run_in_memory(cfg, job, CORRELATIONS)


def shared(sess: Session, owner: int, value: torch.Tensor, real: bool = True) -> torch.Tensor:
    """Share `value` (float64 encoded if real, else int64 ring values) from `owner`."""
    mine = sess.party_id == owner and not sess.is_tracing
    v = (ring.encode(value, F) if real else value) if mine else None
    return sharing.share_input(sess, owner, v, tuple(value.shape))


def opened(results: Sequence[Any], index: int | None = None) -> torch.Tensor:
    shares = [r[0] if index is None else r[0][index] for r in results]
    return sharing.reconstruct(shares)


# -- wire-exact byte accounting ---------------------------------------------------------------
def data_bytes(src: int, seq: int, label: str, shape: tuple[int, ...],
               dtype: type = np.int64) -> int:
    return message_nbytes(encode(Message("data", src, seq, label, [np.zeros(shape, dtype)])))


# (label, shape) of an int64 message, or (label, shape, dtype)
Msgs = list[tuple[Any, ...]]


def expected_bytes_to(n: int, party: int, msgs: Msgs) -> dict[str, int]:
    """Bytes `party` sends to each peer when every message in `msgs` goes to every peer."""
    per_peer = sum(data_bytes(party, seq, *msg) for seq, msg in enumerate(msgs))
    return {str(peer): per_peer for peer in range(n) if peer != party}


def check_costs(report: dict[str, Any], n: int, party: int, rounds: int, msgs: Msgs) -> None:
    online = report["phases"]["online"]
    want = expected_bytes_to(n, party, msgs) if msgs else {}
    assert online["rounds"] == rounds
    assert report["bytes_to"] == want
    assert online["bytes"] == sum(want.values())
    assert online["messages"] == len(msgs) * (n - 1)
    assert report["phases"]["offline"]["bytes"] == 0  # parties only receive offline


def trunc_msgs(trunc: str, shape: tuple[int, ...]) -> Msgs:
    """Local: nothing; exact: one bit per element, packed; dealer: one int64 per element."""
    if trunc == "exact":
        return [("truncate", (-(-math.prod(shape) // 8),), np.uint8)]
    return [] if trunc == "local" else [("truncate", shape)]


# -- accuracy ---------------------------------------------------------------------------------
def enc_err(*xs: torch.Tensor) -> torch.Tensor:
    """Worst error of a product of encoded values: each input is off by <= 2^-(f+1)."""
    out = torch.zeros(())
    for x in xs:
        out = out + x.abs() * 2.0 ** -(F + 1)
    return out


@pytest.mark.parametrize("n, trunc", CONFIGS, ids=CONFIG_IDS)
def test_mul_and_square_accuracy(n: int, trunc: str) -> None:
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(40, 30, generator=gen, dtype=torch.float64) * 3
    y = torch.randn(40, 30, generator=gen, dtype=torch.float64) * 3

    def job(sess: Session) -> list[torch.Tensor]:
        xs, ys = shared(sess, n - 1, x), shared(sess, 0, y)
        return [beaver.beaver_mul(sess, xs, ys), beaver.beaver_square(sess, xs),
                beaver.beaver_mul(sess, xs, ys, truncate=False)]

    res = run(make_cfg(n, trunc), job)
    prod, square, raw = (ring.decode(opened(res, i), F) for i in range(3))
    assert torch.all((prod - x * y).abs() <= enc_err(x, y) + LSB + 1e-12)
    assert torch.all((square - x * x).abs() <= enc_err(x, x) + LSB + 1e-12)
    assert torch.all((raw / 2**F - x * y).abs() <= enc_err(x, y) + 1e-12)


def matmul_bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    k = x.shape[-1]
    per = 2.0 ** -(F + 1)
    return (per * (x.abs().sum(-1, keepdim=True) + w.abs().sum(-2, keepdim=True))
            + k * per * per + LSB + 1e-12)


@pytest.mark.parametrize("n, trunc", CONFIGS, ids=CONFIG_IDS)
def test_matmul_accuracy_plain_batched_fixed(n: int, trunc: str) -> None:
    gen = torch.Generator().manual_seed(10 + n)
    x = torch.randn(2, 9, 16, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 16, 9, generator=gen, dtype=torch.float64)
    w = torch.randn(16, 12, generator=gen, dtype=torch.float64) / 4

    def job(sess: Session) -> list[torch.Tensor]:
        xs, ys, ws = shared(sess, 1, x), shared(sess, n - 1, y), shared(sess, 0, w)
        fixed = beaver.prepare_fixed_matmul(sess, ws)
        return [beaver.beaver_matmul(sess, xs, ys), beaver.beaver_matmul(sess, xs[0], ws),
                beaver.fixed_matmul(sess, xs, fixed), beaver.fixed_matmul(sess, xs[1], fixed)]

    res = run(make_cfg(n, trunc), job)
    batched, plain, fixed_b, fixed_2d = (ring.decode(opened(res, i), F) for i in range(4))
    assert torch.all((batched - x @ y).abs() <= matmul_bound(x, y))
    assert torch.all((plain - x[0] @ w).abs() <= matmul_bound(x[0], w))
    assert torch.all((fixed_b - x @ w).abs() <= matmul_bound(x, w))
    assert torch.all((fixed_2d - x[1] @ w).abs() <= matmul_bound(x[1], w))


@pytest.mark.parametrize("n, trunc", CONFIGS, ids=CONFIG_IDS)
def test_inputs_from_each_party_and_local_ops(n: int, trunc: str) -> None:
    vals = [torch.full((3,), float(p + 1)) for p in range(n)]

    def job(sess: Session) -> list[torch.Tensor]:
        xs = [shared(sess, p, vals[p]) for p in range(n)]
        total = xs[0]
        for x in xs[1:]:
            total = sharing.add(total, x)
        out = sharing.add_public(sess, sharing.sub(total, xs[0]), sharing.encode_public(sess, 0.5))
        scaled = sharing.mul_public(out, torch.tensor([1, 2, -3]))
        half = truncation.mul_public_float(sess, out, 0.25)
        return [total, scaled, half, sharing.share_public(sess, ring.encode(torch.ones(2), F))]

    res = run(make_cfg(n, trunc), job)
    s = sum(range(1, n + 1))
    assert ring.decode(opened(res, 0), F).tolist() == [float(s)] * 3
    rest = s - 1 + 0.5
    assert ring.decode(opened(res, 1), F).tolist() == [rest, 2 * rest, -3 * rest]
    quarter = torch.full((3,), rest / 4, dtype=torch.float64)
    assert torch.allclose(ring.decode(opened(res, 2), F), quarter, atol=LSB)
    assert ring.decode(opened(res, 3), F).tolist() == [1.0, 1.0]


# -- exact rounds and bytes per op ------------------------------------------------------------
@pytest.mark.parametrize("n, trunc", CONFIGS, ids=CONFIG_IDS)
def test_open_costs(n: int, trunc: str) -> None:
    def job(sess: Session) -> list[torch.Tensor]:
        a = shared(sess, 0, torch.arange(6, dtype=torch.int64).reshape(2, 3), real=False)
        b = shared(sess, n - 1, torch.arange(4, dtype=torch.int64), real=False)
        pa, pb = sharing.open_many(sess, [a, b], label="open")
        return [sharing.open_all(sess, a, label="open"), pa, pb]

    for party, (out, report) in enumerate(run(make_cfg(n, trunc), job)):
        assert out[0].tolist() == [[0, 1, 2], [3, 4, 5]] and torch.equal(out[0], out[1])
        assert out[2].tolist() == [0, 1, 2, 3]
        check_costs(report, n, party, rounds=2, msgs=[("open", (10,)), ("open", (2, 3))])


@pytest.mark.parametrize("n", [2, 3])
def test_open_to_costs(n: int) -> None:
    receiver = 1

    def job(sess: Session) -> torch.Tensor | None:
        a = shared(sess, 0, torch.arange(5, dtype=torch.int64), real=False)
        return sharing.open_to(sess, a, receiver)

    results = run(make_cfg(n, "dealer"), job)
    for party, (out, report) in enumerate(results):
        online = report["phases"]["online"]
        # a receive-only step: no round on any counter (counters.py definition)
        assert online["rounds"] == 0
        if party == receiver:
            assert out.tolist() == [0, 1, 2, 3, 4] and online["bytes"] == 0
        else:
            assert out is None
            assert report["bytes_to"] == {str(receiver): data_bytes(party, 0, "open_to", (5,))}


def product_costs(label: str, opened: tuple[int, ...], out: tuple[int, ...]
                  ) -> Callable[[str], tuple[int, Msgs]]:
    """One opening, then the truncation's (nothing with local truncation)."""
    return lambda t: (1 + (t != "local"), [(label, opened)] + trunc_msgs(t, out))


Op = Callable[[Session, torch.Tensor, torch.Tensor], Any]
# name: (op on x (4, 6) and y (4, 6), (rounds, messages) for a truncation mode)
OPS: dict[str, tuple[Op, Callable[[str], tuple[int, Msgs]]]] = {
    "beaver_mul": (lambda s, x, y: beaver.beaver_mul(s, x, y),
                   product_costs("beaver_mul", (48,), (4, 6))),
    "beaver_mul_raw": (lambda s, x, y: beaver.beaver_mul(s, x, y, truncate=False),
                       lambda t: (1, [("beaver_mul", (48,))])),
    "beaver_square": (lambda s, x, y: beaver.beaver_square(s, x),
                      product_costs("beaver_square", (4, 6), (4, 6))),
    "beaver_matmul": (lambda s, x, y: beaver.beaver_matmul(s, x, y.transpose(0, 1).contiguous()),
                      product_costs("beaver_matmul", (48,), (4, 4))),
    "beaver_matmul_batched": (
        lambda s, x, y: beaver.beaver_matmul(s, x.reshape(2, 2, 6), y.reshape(2, 6, 2)),
        product_costs("beaver_matmul", (48,), (2, 2, 2))),
    "truncate": (lambda s, x, y: truncation.truncate(s, x),
                 lambda t: (int(t != "local"), trunc_msgs(t, (4, 6)))),
    "share_input": (lambda s, x, y: x, lambda t: (0, [])),
}


@pytest.mark.parametrize("n, trunc", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("op", sorted(OPS))
def test_rounds_and_bytes_per_op(n: int, trunc: str, op: str) -> None:
    fn, costs = OPS[op]
    rounds, msgs = costs(trunc)

    def job(sess: Session) -> Any:
        x = shared(sess, 0, torch.ones(4, 6))
        y = shared(sess, n - 1, torch.ones(4, 6))
        return fn(sess, x, y)

    for party, (_, report) in enumerate(run(make_cfg(n, trunc), job)):
        check_costs(report, n, party, rounds, msgs)


@pytest.mark.parametrize("n, trunc", CONFIGS, ids=CONFIG_IDS)
def test_fixed_weight_mask_opened_once(n: int, trunc: str) -> None:
    queries = 3

    def job(sess: Session) -> list[torch.Tensor]:
        w = shared(sess, 0, torch.ones(6, 5))
        fixed = beaver.prepare_fixed_matmul(sess, w)
        return [beaver.fixed_matmul(sess, shared(sess, n - 1, torch.ones(2, 4, 6)), fixed)
                for _ in range(queries)]

    msgs: Msgs = [("fixed_mask", (6, 5))]
    for _ in range(queries):
        msgs += [("fixed_matmul", (2, 4, 6))] + trunc_msgs(trunc, (2, 4, 5))
    results = run(make_cfg(n, trunc), job)
    for party, (_, report) in enumerate(results):
        check_costs(report, n, party, 1 + queries * (1 + (trunc != "local")), msgs)
    for q in range(queries):
        want = torch.full((2, 4, 5), 6.0, dtype=torch.float64)
        assert torch.allclose(ring.decode(opened(results, q), F), want, atol=2 * LSB)


# -- truncation analysis -----------------------------------------------------------------------
def truncate_job(x: torch.Tensor, method: Callable[[Session, torch.Tensor, int], torch.Tensor]
                 ) -> Callable[[Session], torch.Tensor]:
    def job(sess: Session) -> torch.Tensor:
        return method(sess, shared(sess, 0, x, real=False), F)
    return job


def whole_range(count: int, bits: int, seed: int) -> torch.Tensor:
    """`count` uniform values over (-2^62, 2^62), the first ones replaced by the edges: the
    MSB boundaries 2^61 and their neighbours, the range's ends, 0, +-1 and +-2^bits."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-(1 << 62) + 1, 1 << 62, (count,), generator=gen, dtype=torch.int64)
    edges = [(1 << 61) + d for d in range(-3, 4)] + [-(1 << 61) + d for d in range(-3, 4)]
    edges += [(1 << 62) - 1, -(1 << 62) + 1, 0, 1, -1, (1 << bits) - 1, -(1 << bits)]
    x[: len(edges)] = torch.tensor(edges, dtype=torch.int64)
    return x


@pytest.mark.parametrize("n", [2, 3])
def test_dealer_truncation_never_fails(n: int) -> None:
    x = whole_range(1_000_000 if n == 2 else 200_000, F, seed=7)
    res = run(make_cfg(n, "dealer"), truncate_job(x, truncation.truncate_dealer))
    delta = opened(res) - (x >> F)
    assert set(delta.unique().tolist()) <= {0, 1}


def exact_truncation(sess: Session, x: torch.Tensor, bits: int) -> torch.Tensor:
    return truncation.truncate_exact_many(sess, [x], [bits])[0]


@pytest.mark.parametrize("bits", [F, 3, 40])
def test_exact_truncation_never_fails(bits: int) -> None:
    """Uniform values over the whole allowed range, the MSB edges and their neighbours:
    floor or floor + 1 everywhere (local truncation would fail on ~1/4 of them)."""
    x = whole_range(400_000, bits, seed=11)

    def job(sess: Session) -> torch.Tensor:
        return truncation.truncate_exact_many(sess, [shared(sess, 0, x, real=False)], [bits])[0]

    res = run(make_cfg(2, "exact"), job)
    delta = opened(res) - (x >> bits)
    assert set(delta.unique().tolist()) <= {0, 1}
    assert (delta == 1).any() and (delta == 0).any()


def test_exact_truncation_many_in_one_message_and_its_material() -> None:
    """Three tensors with their own widths: one message of ceil(sum numel / 8) bytes each
    way (the dealer's bytes: test_correlations.test_exact_truncation_material_bytes)."""
    shapes, widths = [(3, 5), (7,), (2, 2, 2)], [8, 16, 20]
    values = [torch.full(s, 1 << 30, dtype=torch.int64) for s in shapes]

    def job(sess: Session) -> list[torch.Tensor]:
        xs = [shared(sess, 1, v, real=False) for v in values]
        return truncation.truncate_exact_many(sess, xs, widths, label="t")

    res = run_in_memory_detailed(make_cfg(2, "exact"), job, CORRELATIONS)
    for i, (v, w) in enumerate(zip(values, widths, strict=True)):
        delta = sharing.reconstruct([r[i] for r in res.results]) - (v >> w)
        assert set(delta.unique().tolist()) <= {0, 1}
    for party, report in enumerate(res.reports):
        check_costs(report, 2, party, 1, [("t", (-(-30 // 8),), np.uint8)])
    assert res.plan[-3:] == [("trunc_wrap", (w, math.prod(s)))
                             for s, w in zip(shapes, widths, strict=True)]


def test_exact_truncation_refuses_three_parties() -> None:
    with pytest.raises(ValueError, match="exact truncation is for 2 parties"):
        make_cfg(3, "exact")
    sess = Session.tracing(make_cfg(3, "dealer"), 0, CORRELATIONS)
    with pytest.raises(ValueError, match="2 parties"):
        exact_truncation(sess, torch.zeros(3, dtype=torch.int64), F)


@pytest.mark.parametrize("trunc", ["exact", "local", "dealer"])
def test_truncation_is_unbiased_stochastic_rounding(trunc: str) -> None:
    """x = 5.25 LSB of the result: 5 or 6, with P[6] = 0.25."""
    count = 200_000
    x = torch.full((count,), 5 * (1 << F) + (1 << (F - 2)), dtype=torch.int64)
    res = run(make_cfg(2, trunc), truncate_job(x, lambda s, v, b: truncation.truncate(s, v, b)))
    out = opened(res)
    assert set(out.unique().tolist()) <= {5, 6}
    assert abs(out.double().mean().item() - 5.25) < 0.005  # 5 sigma


@pytest.mark.parametrize("magnitude_bits", [56, 60])
def test_local_truncation_failure_rate(magnitude_bits: int) -> None:
    """P[wrap failure] = |x| / 2^64 for uniform shares; otherwise floor or floor + 1."""
    count = 200_000
    sign = torch.where(torch.arange(count) % 2 == 0, 1, -1)
    x = sign * (1 << magnitude_bits)
    res = run(make_cfg(2, "local"), truncate_job(x, truncation.truncate_local))
    delta = opened(res) - (x >> F)
    failed = delta.abs() > 1
    p = 2.0 ** (magnitude_bits - 64)
    sigma = (p * (1 - p) / count) ** 0.5
    assert abs(failed.double().mean().item() - p) < 5 * sigma
    assert set(delta[~failed].unique().tolist()) <= {0, 1}
    assert set(delta[failed].abs().unique().tolist()) <= {1 << (64 - F), (1 << (64 - F)) - 1}


def test_local_truncation_refuses_three_parties() -> None:
    sess = Session.tracing(make_cfg(3, "dealer"), 0, CORRELATIONS)
    with pytest.raises(ValueError):
        truncation.truncate_local(sess, torch.zeros(3, dtype=torch.int64), F)
    with pytest.raises(ValueError):
        truncation.truncate(sess, torch.zeros(3, dtype=torch.int64), 63)


# -- harness behaviour ---------------------------------------------------------------------------
def test_harness_names_the_failing_party() -> None:
    def job(sess: Session) -> torch.Tensor:
        x = sharing.share_input(sess, 0, None, (3,))  # party 0 forgets its value
        return sharing.open_all(sess, x)

    with pytest.raises(InMemoryRunError, match="party 0 failed: ValueError"):
        run(make_cfg(2, "local"), job)


def test_shape_errors() -> None:
    sess = Session.tracing(make_cfg(2, "local"), 0, CORRELATIONS)
    with pytest.raises(ValueError):
        beaver.beaver_matmul(sess, torch.zeros(2, 3, dtype=torch.int64),
                             torch.zeros(4, 2, dtype=torch.int64))
    with pytest.raises(ValueError):
        beaver.prepare_fixed_matmul(sess, torch.zeros(2, 3, 4, dtype=torch.int64))
    with pytest.raises(ValueError):
        sharing.share_input(sess, 0, torch.zeros(4, dtype=torch.int64), (3,))
    with pytest.raises(TypeError):
        beaver.beaver_mul(sess, torch.zeros(3), torch.zeros(3, dtype=torch.int64))


def test_detailed_run_reports_the_plan_and_dealer() -> None:
    def job(sess: Session) -> torch.Tensor:
        x = shared(sess, 0, torch.ones(3))
        return beaver.beaver_mul(sess, x, x)

    detailed = run_in_memory_detailed(make_cfg(2, "dealer"), job, CORRELATIONS)
    assert detailed.plan == [("triple", (3,)), ("trunc_pair", (F, 3))]
    assert detailed.dealer_report["phases"]["offline"]["messages"] == 2
