"""Dealer correlations: deal/expand agree, relations hold, only party n-1 receives bytes,
plans are identical for every party, and offline bytes are what the wire format says."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from privit.parties.config import RunConfig
from privit.parties.inmemory_run import run_in_memory_detailed, trace_plan
from privit.parties.prg import Prg, new_seed
from privit.parties.session import Params, Session
from privit.parties.wire import Message, encode, message_nbytes
from privit.protocols import beaver, ring, sharing, truncation
from privit.protocols.correlations import arithmetic_kinds
from privit.protocols.registry import CORRELATIONS

ARITHMETIC_KINDS = {"triple", "square", "matmul_triple", "trunc_pair", "rand_bits", "fixed_mask",
                    "fixed_matmul_triple"}


def deal_and_expand(kinds: dict, kind: str, params: Params, n: int, stream: int = 7
                    ) -> tuple[list[list[np.ndarray]], list[dict[str, torch.Tensor]]]:
    seeds = [new_seed() for _ in range(n)]
    dealt = kinds[kind].deal(params, [Prg(s, stream) for s in seeds])
    material = [kinds[kind].expand(params, i, n, Prg(seeds[i], stream), dealt[i]) for i in range(n)]
    return dealt, material


def opened(material: list[dict[str, torch.Tensor]], name: str) -> torch.Tensor:
    return ring.ring_sum([m[name] for m in material])


def test_registry_has_the_arithmetic_kinds() -> None:
    assert ARITHMETIC_KINDS <= set(CORRELATIONS)


@pytest.mark.parametrize("n", [2, 3])
def test_triple_square_matmul_relations(n: int) -> None:
    kinds = arithmetic_kinds()
    dealt, mat = deal_and_expand(kinds, "triple", (4, 5), n)
    assert torch.equal(opened(mat, "c"), opened(mat, "a") * opened(mat, "b"))
    assert [len(d) for d in dealt] == [0] * (n - 1) + [1] and dealt[-1][0].nbytes == 4 * 5 * 8

    dealt, mat = deal_and_expand(kinds, "square", (6,), n)
    assert torch.equal(opened(mat, "a2"), opened(mat, "a") ** 2)
    assert sum(a.nbytes for d in dealt for a in d) == 6 * 8

    dealt, mat = deal_and_expand(kinds, "matmul_triple", (2, 3, 4, 5), n)
    a, b = opened(mat, "a"), opened(mat, "b")
    assert a.shape == (2, 3, 4) and b.shape == (2, 4, 5)
    assert torch.equal(opened(mat, "c"), torch.matmul(a, b))
    assert sum(a.nbytes for d in dealt for a in d) == 2 * 3 * 5 * 8


@pytest.mark.parametrize("n", [2, 3])
def test_trunc_pair_and_rand_bits(n: int) -> None:
    kinds = arithmetic_kinds()
    dealt, mat = deal_and_expand(kinds, "trunc_pair", (16, 1000), n)
    r = opened(mat, "r")
    assert torch.equal(opened(mat, "r_shift"), ring.logical_rshift(r, 16))
    assert torch.equal(opened(mat, "r_msb"), ring.msb(r))
    assert sum(a.nbytes for d in dealt for a in d) == 2 * 1000 * 8
    dealt, mat = deal_and_expand(kinds, "rand_bits", (20000,), n)
    bits = opened(mat, "b")
    assert set(bits.unique().tolist()) == {0, 1}
    assert abs(bits.double().mean().item() - 0.5) < 0.02


@pytest.mark.parametrize("n", [2, 3])
def test_fixed_mask_is_remembered_by_the_dealer(n: int) -> None:
    kinds = arithmetic_kinds()
    seeds = [new_seed() for _ in range(n)]
    k, m, mask_id = 6, 4, 3
    dealt = kinds["fixed_mask"].deal((mask_id, k, m), [Prg(s, 3) for s in seeds])
    assert dealt == [[] for _ in range(n)]  # B is random: nothing travels
    b = ring.ring_sum([kinds["fixed_mask"].expand((mask_id, k, m), i, n, Prg(seeds[i], 3), [])["b"]
                       for i in range(n)])
    for stream, batch in ((4, ()), (5, (2,))):
        params = (mask_id, *batch, 5, k, m)
        dealt = kinds["fixed_matmul_triple"].deal(params, [Prg(s, stream) for s in seeds])
        mat = [kinds["fixed_matmul_triple"].expand(params, i, n, Prg(seeds[i], stream), dealt[i])
               for i in range(n)]
        assert torch.equal(opened(mat, "c"), torch.matmul(opened(mat, "a"), b))
    with pytest.raises(ValueError, match="not dealt"):
        kinds["fixed_matmul_triple"].deal((99, 5, k, m), [Prg(s, 9) for s in seeds])
    with pytest.raises(ValueError, match="expects"):
        kinds["fixed_matmul_triple"].deal((mask_id, 5, k, m + 1), [Prg(s, 9) for s in seeds])
    # another dealer thread has its own memory
    seen: list[BaseException] = []

    def other_dealer() -> None:
        try:
            kinds["fixed_matmul_triple"].deal((mask_id, 5, k, m), [Prg(s, 9) for s in seeds])
        except ValueError as exc:
            seen.append(exc)

    t = threading.Thread(target=other_dealer)
    t.start()
    t.join()
    assert len(seen) == 1


def test_expand_validates_payload_and_zeros_match_shapes() -> None:
    kinds = arithmetic_kinds()
    seed = new_seed()
    with pytest.raises(ValueError):
        kinds["triple"].expand((3,), 1, 2, Prg(seed), [])
    with pytest.raises(ValueError):
        kinds["triple"].expand((3,), 1, 2, Prg(seed), [np.zeros(4, np.int64)])
    with pytest.raises(ValueError):
        kinds["triple"].expand((3,), 1, 2, Prg(seed), [np.zeros(3, np.int32)])
    with pytest.raises(ValueError):
        kinds["trunc_pair"].expand((0, 3), 0, 2, Prg(seed), [])
    with pytest.raises(ValueError):
        kinds["matmul_triple"].zeros((3, 4))
    for kind, params in (("triple", (2, 3)), ("matmul_triple", (2, 3, 4)), ("trunc_pair", (16, 5)),
                         ("fixed_matmul_triple", (0, 4, 2, 3))):
        zeros = {k: v.shape for k, v in kinds[kind].zeros(params).items()}
        if kind == "fixed_matmul_triple":
            assert zeros == {"a": (4, 2), "c": (4, 3)}
            continue
        _, mat = deal_and_expand(kinds, kind, params, 3)
        for m in mat:
            assert {k: v.shape for k, v in m.items()} == zeros


def test_same_prg_stream_gives_the_same_material() -> None:
    """Dealer and party draw in the same order: re-expanding reproduces the material."""
    kinds = arithmetic_kinds()
    seeds = [new_seed() for _ in range(3)]
    dealt = kinds["matmul_triple"].deal((2, 3, 4), [Prg(s, 11) for s in seeds])
    once = kinds["matmul_triple"].expand((2, 3, 4), 0, 3, Prg(seeds[0], 11), dealt[0])
    again = kinds["matmul_triple"].expand((2, 3, 4), 0, 3, Prg(seeds[0], 11), dealt[0])
    assert all(torch.equal(once[k], again[k]) for k in once)


# -- plans and offline bytes through the in-memory run ---------------------------------------
def mixed_job(sess: Session) -> torch.Tensor:
    f = sess.frac_bits
    x = sharing.share_input(sess, 1, None if sess.party_id != 1 or sess.is_tracing
                            else ring.encode(torch.ones(3, 4), f), (3, 4))
    w = sharing.share_input(sess, 0, None if sess.party_id != 0 or sess.is_tracing
                            else ring.encode(torch.ones(4, 2), f), (4, 2))
    y = beaver.beaver_mul(sess, x, x)
    y = beaver.beaver_square(sess, y, truncate=False)
    fw = beaver.prepare_fixed_matmul(sess, w)
    z = beaver.fixed_matmul(sess, truncation.truncate(sess, y), fw)
    return beaver.beaver_matmul(sess, z.transpose(0, 1).contiguous(), x[:, :2].contiguous())


@pytest.mark.parametrize("n, trunc", [(2, "local"), (3, "dealer")])
def test_plan_is_identical_for_every_party(n: int, trunc: str) -> None:
    cfg = RunConfig(n_parties=n, truncation=trunc)
    plans = [trace_plan(cfg, mixed_job, CORRELATIONS, p) for p in range(n)]
    assert all(p == plans[0] for p in plans)
    kinds = [k for k, _ in plans[0]]
    if trunc == "local":
        assert kinds == ["triple", "square", "fixed_mask", "fixed_matmul_triple", "matmul_triple"]
    else:
        assert kinds == ["triple", "trunc_pair", "square", "fixed_mask", "trunc_pair",
                         "fixed_matmul_triple", "trunc_pair", "matmul_triple", "trunc_pair"]
    # the fixed query names its mask by the mask's plan index
    assert plans[0][kinds.index("fixed_matmul_triple")][1][0] == kinds.index("fixed_mask")


def corr_message_bytes(dealer: int, entries: list[list], arrays: list[np.ndarray]) -> int:
    meta = {"r0": 0, "plan": entries, "end": True}
    return message_nbytes(encode(Message("corr", dealer, 0, "corr", arrays, meta)))


# (name, op on a (5, 6) input, [(kind, params, derived components)], payload bytes to n-1)
OFFLINE_CASES = [
    ("triple", lambda s, x: beaver.beaver_mul(s, x, x, truncate=False),
     [("triple", (5, 6), ["c"])], 8 * 30),
    ("square", lambda s, x: beaver.beaver_square(s, x, truncate=False),
     [("square", (5, 6), ["a2"])], 8 * 30),
    ("matmul", lambda s, x: beaver.beaver_matmul(s, x, x.transpose(0, 1).contiguous(), False),
     [("matmul_triple", (5, 6, 5), ["c"])], 8 * 25),
    ("trunc", lambda s, x: truncation.truncate_dealer(s, x, 16),
     [("trunc_pair", (16, 5, 6), ["r_shift", "r_msb"])], 16 * 30),
    ("mul+trunc", lambda s, x: beaver.beaver_mul(s, x, x),
     [("triple", (5, 6), ["c"]), ("trunc_pair", (16, 5, 6), ["r_shift", "r_msb"])], 24 * 30),
]


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("name, op, requests, payload", OFFLINE_CASES,
                         ids=[c[0] for c in OFFLINE_CASES])
def test_offline_bytes_per_op(n: int, name: str, op, requests, payload: int) -> None:
    cfg = RunConfig(n_parties=n, truncation="dealer")

    def job(sess: Session) -> torch.Tensor:
        x = sharing.share_input(sess, 0, None if sess.party_id or sess.is_tracing
                                else torch.arange(30, dtype=torch.int64).reshape(5, 6), (5, 6))
        return op(sess, x)

    run = run_in_memory_detailed(cfg, job, CORRELATIONS)
    kinds = arithmetic_kinds()
    for p in range(n):
        entries, arrays = [], []
        for kind, params, derived in requests:
            comps = {c.name: c.shape for c in kinds[kind].components(params)}
            mine = [np.zeros(comps[d], np.int64) for d in derived] if p == n - 1 else []
            entries.append([kind, list(params), len(mine)])
            arrays += mine
        assert run.dealer_report["bytes_to"][str(p)] == corr_message_bytes(n, entries, arrays)
        assert sum(a.nbytes for a in arrays) == (payload if p == n - 1 else 0)
    assert run.dealer_report["phases"]["online"]["bytes"] == 0


def test_fixed_weight_offline_bytes() -> None:
    """fixed_mask sends nothing; each query sends C (n x m) to the last party."""
    cfg = RunConfig(n_parties=2, truncation="local")

    def job(sess: Session) -> list[torch.Tensor]:
        w = sharing.share_input(sess, 0, None, (4, 3)) if sess.is_tracing or sess.party_id else \
            sharing.share_input(sess, 0, torch.ones(4, 3, dtype=torch.int64), (4, 3))
        fw = beaver.prepare_fixed_matmul(sess, w)
        x = torch.zeros(5, 4, dtype=torch.int64)
        return [beaver.fixed_matmul(sess, x, fw, truncate=False) for _ in range(2)]

    run = run_in_memory_detailed(cfg, job, CORRELATIONS)
    entries = [["fixed_mask", [0, 4, 3], 0], ["fixed_matmul_triple", [0, 5, 4, 3], 0],
               ["fixed_matmul_triple", [0, 5, 4, 3], 0]]
    assert run.dealer_report["bytes_to"]["0"] == corr_message_bytes(2, entries, [])
    entries_last = [[k, p, 0 if k == "fixed_mask" else 1] for k, p, _ in entries]
    arrays = [np.zeros((5, 3), np.int64)] * 2
    assert run.dealer_report["bytes_to"]["1"] == corr_message_bytes(2, entries_last, arrays)


def test_exact_truncation_material_bytes() -> None:
    """trunc_wrap: party 0 derives everything; party 1 receives its share of alpha beta mod
    2^bits in the smallest container: 1, 2 and 4 bytes per element at 8, 16 and 20 bits."""
    shapes, widths = [(3, 5), (7,), (2, 2, 2)], [8, 16, 20]

    def job(sess: Session) -> list[torch.Tensor]:
        xs = [torch.zeros(s, dtype=torch.int64) for s in shapes]
        return truncation.truncate_exact_many(sess, xs, widths)

    run = run_in_memory_detailed(RunConfig(n_parties=2, truncation="exact"), job, CORRELATIONS)
    entries = [["trunc_wrap", [w, math.prod(s)], 0] for s, w in zip(shapes, widths, strict=True)]
    assert run.dealer_report["bytes_to"]["0"] == corr_message_bytes(2, entries, [])
    arrays = [np.zeros(15, np.uint8), np.zeros(7, np.uint16), np.zeros(8, np.uint32)]
    entries = [[k, p, 1] for k, p, _ in entries]
    assert run.dealer_report["bytes_to"]["1"] == corr_message_bytes(2, entries, arrays)
