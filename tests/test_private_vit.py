"""The private ViT executor over the in-memory harness.

- protocols/owner_matmul.py: exact products, exact online bytes and rounds, offline bytes;
- the executor's linear algebra (folding, unfolding, head grouping, product orders, the
  cls-only last block, MPCViT+ gating) against models/vit.py with an insecure oracle for
  the non-linear steps, so that a mismatch points at the executor, not at a protocol;
- the real protocols end to end on a tiny model: logits close to plaintext, same argmax,
  for all-ReLU-softmax, all-ScaleAttn, mixed heads and the softmax teacher; scopes.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from privit.models.attention import relu_softmax as plain_relu_softmax
from privit.models.config import ViTConfig, get_config
from privit.models.private_vit import PrivateOptions, PrivateViT, scale_order
from privit.models.private_weights import PrivateArch, export_weights, parse_alpha
from privit.models.vit import ViTLite
from privit.parties.config import RunConfig
from privit.parties.inmemory_run import InMemoryRun, run_in_memory, run_in_memory_detailed
from privit.parties.session import Session
from privit.parties.wire import Message, encode, message_nbytes
from privit.protocols import ring, sharing
from privit.protocols.owner_matmul import owner_matmul_many, prepare_owner_weights
from privit.protocols.registry import CORRELATIONS

TINY = ViTConfig(name="vit_digits", img_size=8, in_chans=1, patch_size=2, dim=16, depth=2,
                 heads=4, mlp_hidden=32, num_classes=10)


def data_bytes(src: int, seq: int, label: str, numel: int) -> int:
    return message_nbytes(encode(Message("data", src, seq, label, [np.zeros(numel, np.int64)])))


# -- one-sided owner products ------------------------------------------------------------------
def _two_weight_products(owner: int, w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor,
                         held: list[bool] | None = None) -> InMemoryRun[list[torch.Tensor]]:
    """x @ w1 (twice, one of them on x[0]) and (x @ w1) @ w2 through the owner's prepared
    weights (5, 3) and (3, 4), untruncated; checks the three products exactly. `held`
    collects, per weight, whether the owner holds it narrow."""
    client = 1 - owner

    def job(sess: Session) -> list[torch.Tensor]:
        mine = sess.party_id == client and not sess.is_tracing
        xs = sharing.share_input(sess, client, x if mine else None, x.shape)
        ws = prepare_owner_weights(sess, owner, [w1, w2] if sess.party_id == owner else [],
                                   [(5, 3), (3, 4)])
        if held is not None and sess.party_id == owner and not sess.is_tracing:
            held.extend(w.narrow is not None and w.plain is None for w in ws)
        z1, z2 = owner_matmul_many(sess, [xs, xs[0]], [ws[0], ws[0]], truncate=False)
        (z3,) = owner_matmul_many(sess, [z1], [ws[1]], truncate=False)
        return [z1, z2, z3]

    run = run_in_memory_detailed(RunConfig(n_parties=2, timeout_s=20), job, CORRELATIONS)
    total = [sharing.reconstruct([r[i] for r in run.results]) for i in range(3)]
    assert torch.equal(total[0], x @ w1)
    assert torch.equal(total[1], x[0] @ w1)
    assert torch.equal(total[2], (x @ w1) @ w2)
    return run


@pytest.mark.parametrize("owner", [0, 1])
def test_owner_matmul_exact_and_costs(owner: int) -> None:
    gen = torch.Generator().manual_seed(owner)
    w1 = torch.randint(-2**40, 2**40, (5, 3), generator=gen)
    w2 = torch.randint(-2**40, 2**40, (3, 4), generator=gen)
    x = torch.randint(-2**40, 2**40, (2, 7, 5), generator=gen)
    client = 1 - owner
    run = _two_weight_products(owner, w1, w2, x)
    own, cli = run.reports[owner], run.reports[client]
    # owner: one message of every E = W - B; client: one message per query, to the owner only
    assert own["bytes_to"] == {str(client): data_bytes(owner, 0, "owner_weights", 15 + 12)}
    assert cli["bytes_to"] == {str(owner): data_bytes(client, 0, "owner_matmul", 70 + 35)
                               + data_bytes(client, 1, "owner_matmul", 2 * 7 * 3)}
    assert cli["phases"]["online"]["rounds"] == 0       # the client never waits for the owner
    assert own["phases"]["online"]["rounds"] == 1       # sent E, then waited
    # offline: C_c for the client only (8 bytes per output element)
    kinds = [k for k, _ in run.plan]
    assert kinds == ["owner_mask", "owner_mask"] + ["owner_matmul_triple"] * 3


def test_owner_products_truncate_in_one_round() -> None:
    """Two owner products in one call, truncated (exact, the 2-party default): one round of
    the client's query and ONE message of both products' packed wrap bits each way."""
    w = torch.ones(5, 3, dtype=torch.float64)
    x = torch.ones(2, 7, 5, dtype=torch.float64)

    def job(sess: Session) -> list[torch.Tensor]:
        mine = sess.party_id == 1 and not sess.is_tracing
        xs = sharing.share_input(sess, 1, ring.encode(x, sess.frac_bits) if mine else None,
                                 x.shape)
        (ws,) = prepare_owner_weights(sess, 0, [ring.encode(w, sess.frac_bits)]
                                      if sess.party_id == 0 else [], [(5, 3)])
        return owner_matmul_many(sess, [xs, xs[0]], [ws, ws])

    run = run_in_memory_detailed(RunConfig(n_parties=2, timeout_s=20), job, CORRELATIONS)
    for i, shape in enumerate([(2, 7, 3), (7, 3)]):
        got = ring.decode(sharing.reconstruct([r[i] for r in run.results]), 16)
        assert torch.allclose(got, torch.full(shape, 5.0, dtype=torch.float64), atol=2 ** -15)
    bits = message_nbytes(encode(Message("data", 0, 1, "truncate",
                                         [np.zeros(-(-(42 + 21) // 8), np.uint8)])))
    assert run.reports[0]["bytes_to"]["1"] == data_bytes(0, 0, "owner_weights", 15) + bits
    assert [r["phases"]["online"]["rounds"] for r in run.reports] == [2, 1]
    assert [k for k, _ in run.plan][-2:] == ["trunc_wrap", "trunc_wrap"]


def _count_narrow_products(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The weight bits of every `ring.ring_matmul_narrow` call from now on (the product is
    still computed)."""
    calls: list[int] = []
    real = ring.ring_matmul_narrow

    def spy(a: torch.Tensor, w: ring.NarrowWeight) -> torch.Tensor:
        calls.append(w.bits)
        return real(a, w)
    monkeypatch.setattr(ring, "ring_matmul_narrow", spy)
    return calls


@pytest.mark.parametrize("forced, largest, narrow", [
    ("limbs", 1 << 20, True),        # every |W| <= 2^(f+4): the narrow kernel
    ("limbs", (1 << 20) + 1, False),  # one entry beyond: no weight of the call is narrow
    ("int64", 1 << 20, True),        # held narrow, multiplied by torch's int64 kernel
])
def test_owner_narrow_weights_same_products_and_messages(
        monkeypatch: pytest.MonkeyPatch, forced: str, largest: int, narrow: bool) -> None:
    """The owner holds W narrow iff EVERY weight of the call is within the public bound
    (one decision per call); products are exact and the messages those of wide weights."""
    gen = torch.Generator().manual_seed(11)
    bound = 1 << 20  # f = 16: |w| <= 16
    w1 = torch.randint(-bound, bound + 1, (5, 3), generator=gen)
    w2 = torch.randint(-bound, bound + 1, (3, 4), generator=gen)
    w1[0, 0], w2[2, 3] = -bound, largest
    x = torch.randint(ring.INT64_MIN, ring.INT64_MAX, (2, 7, 5), generator=gen)
    monkeypatch.setenv(ring.MATMUL_ENV, forced)
    calls = _count_narrow_products(monkeypatch)
    held: list[bool] = []
    run = _two_weight_products(0, w1, w2, x, held)
    assert held == [narrow, narrow]
    assert calls == ([21, 21, 21] if narrow and forced == "limbs" else [])
    assert run.reports[0]["bytes_to"] == {"1": data_bytes(0, 0, "owner_weights", 15 + 12)}
    assert run.reports[1]["bytes_to"] == {"0": data_bytes(1, 0, "owner_matmul", 70 + 35)
                                          + data_bytes(1, 1, "owner_matmul", 2 * 7 * 3)}
    assert [r["phases"]["online"]["rounds"] for r in run.reports] == [1, 0]


def test_narrow_owner_gives_bit_identical_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same randomness with and without the narrow kernel: the same logits, bit for bit,
    and the same online bytes and rounds (the products are exact either way)."""
    pytest.importorskip("privit.protocols.softmax")
    from privit.launch.vit_job import VitJob
    from privit.parties.config import JobSpec

    cfg = RunConfig(n_parties=2, timeout_s=60, seed=5,
                    job=JobSpec.make("vit", model="vit_digits", mu="0.5", batch=2))
    monkeypatch.setenv(ring.MATMUL_ENV, "limbs")  # narrow even on the small products
    calls = _count_narrow_products(monkeypatch)
    runs = []
    for narrow in (True, False):
        if not narrow:
            monkeypatch.setattr(ring, "within_bits", lambda w, bits: False)
        runs.append(run_in_memory_detailed(cfg, VitJob(cfg).run, CORRELATIONS,
                                           seed_source=b"narrow or not"))
        assert bool(calls) == narrow
        calls.clear()
    assert torch.equal(runs[0].results[0]["logits"], runs[1].results[0]["logits"])
    costs = [[{k: r["phases"]["online"][k] for k in ("bytes", "messages", "rounds")}
              for r in run.reports] for run in runs]
    assert costs[0] == costs[1]


def test_owner_weights_travel_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over WEIGHT_PIECE_ELEMENTS, the masked weights go as several messages (27 elements
    in pieces of at most 10: 9, 9, 9), each counted, with the same products."""
    from privit.protocols import owner_matmul

    monkeypatch.setattr(owner_matmul, "WEIGHT_PIECE_ELEMENTS", 10)
    gen = torch.Generator().manual_seed(7)
    w1 = torch.randint(-2**40, 2**40, (5, 3), generator=gen)
    w2 = torch.randint(-2**40, 2**40, (3, 4), generator=gen)
    x = torch.randint(-2**40, 2**40, (2, 5), generator=gen)

    def job(sess: Session) -> torch.Tensor:
        xs = sharing.share_input(sess, 1, x if sess.party_id == 1 and not sess.is_tracing else None,
                                 x.shape)
        ws = prepare_owner_weights(sess, 0, [w1, w2] if sess.party_id == 0 else [], [(5, 3), (3, 4)])
        (z1,) = owner_matmul_many(sess, [xs], [ws[0]], truncate=False)
        (z2,) = owner_matmul_many(sess, [z1], [ws[1]], truncate=False)
        return z2

    run = run_in_memory_detailed(RunConfig(n_parties=2, timeout_s=20), job, CORRELATIONS)
    assert torch.equal(sharing.reconstruct(run.results), (x @ w1) @ w2)
    assert run.reports[0]["bytes_to"] == {
        "1": sum(data_bytes(0, seq, "owner_weights", 9) for seq in range(3))}
    assert run.reports[1]["phases"]["online"]["rounds"] == 0


def test_owner_matmul_refuses_three_parties() -> None:
    def job(sess: Session) -> None:
        prepare_owner_weights(sess, 0, [None], [(2, 2)])

    with pytest.raises(Exception, match="2 parties"):
        run_in_memory(RunConfig(n_parties=3, truncation="dealer", timeout_s=10), job,
                      CORRELATIONS)


def test_scale_order_picks_fewer_opened_elements() -> None:
    assert scale_order(65, 65, 64) == "kv"        # vit_7_4_32: dh^2 < N^2
    assert scale_order(1, 65, 64) == "qk"         # cls-only last block: 1 * N < dh^2
    assert scale_order(257, 257, 16) == "kv"      # vit_9_12_64
    assert scale_order(17, 17, 32) == "qk"
    assert scale_order(65, 65, 64, "qk") == "qk"


# -- the executor's linear algebra, with an oracle for non-linear steps ----------------------
class OracleOps:
    """INSECURE: opens the input and computes the non-linear step in plaintext (tests only)."""

    def _apply(self, sess: Session, fn: Any, *xs: torch.Tensor) -> torch.Tensor:
        vals = [ring.decode(v, sess.frac_bits) for v in sharing.open_many(sess, list(xs), "oracle")]
        y = fn(*vals)
        if sess.is_tracing:
            y = torch.zeros_like(y)
        return sharing.share_public(sess, ring.encode(y, sess.frac_bits))

    def layer_norm(self, sess: Session, x: torch.Tensor, g: torch.Tensor | None,
                   b: torch.Tensor | None) -> torch.Tensor:
        def ln(v: torch.Tensor) -> torch.Tensor:
            return F.layer_norm(v, v.shape[-1:], eps=1e-5)
        if g is None or b is None:
            return self._apply(sess, ln, x)
        return self._apply(sess, lambda v, gg, bb: ln(v) * gg + bb, x, g, b)

    def gelu(self, sess: Session, x: torch.Tensor) -> torch.Tensor:
        return self._apply(sess, F.gelu, x)

    def relu(self, sess: Session, x: torch.Tensor) -> torch.Tensor:
        return self._apply(sess, torch.relu, x)

    def softmax(self, sess: Session, s: torch.Tensor) -> torch.Tensor:
        return self._apply(sess, lambda v: v.softmax(-1), s)

    def relu_softmax(self, sess: Session, s: torch.Tensor) -> torch.Tensor:
        return self._apply(sess, plain_relu_softmax, s)


def make_model(config: ViTConfig, alpha: str | None, seed: int = 0, std: float = 0.3) -> ViTLite:
    """A random model with large enough weights that attention is far from uniform."""
    torch.manual_seed(seed)
    model = ViTLite(config).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("alpha", "beta")):
                continue
            p.normal_(0, std)
            if name.endswith("norm.weight") or name.endswith("norm1.weight"):
                p.add_(1.0)
        for block in model.blocks:
            if block.beta is not None:
                block.beta.copy_((torch.rand_like(block.beta) > 0.5).double())
    if alpha is not None:
        model.set_alpha(parse_alpha(alpha, config))
    return model


def run_private(model: ViTLite, images: torch.Tensor, options: PrivateOptions | None = None,
                ops: Any = None, n: int = 2, truncation: str = "local"
                ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    arch = PrivateArch.from_model(model)
    weights = export_weights(model)
    executor = PrivateViT(arch, options, ops)
    batch = images.shape[0]

    def job(sess: Session) -> torch.Tensor:
        return executor.infer(sess, weights if sess.party_id == 0 else None,
                              images if sess.party_id == 1 else None, batch)

    res = run_in_memory(RunConfig(n_parties=n, truncation=truncation, timeout_s=60), job,
                        CORRELATIONS)
    for other, _ in res[1:]:
        assert torch.equal(other, res[0][0])
    return res[0][0], [r for _, r in res]


PATTERNS = {"all_rs": "1111,1111", "all_scale": "0000,0000", "mixed": "1010,0110"}


@pytest.mark.parametrize("pattern", [*PATTERNS, "teacher", "mpcvit_plus", "3_parties", "qk_order"])
def test_executor_linear_algebra_matches_plaintext(pattern: str) -> None:
    config, alpha, n, trunc, options = TINY, PATTERNS.get(pattern, "1010,0110"), 2, "local", None
    if pattern == "teacher":
        config, alpha = ViTConfig(**{**TINY.__dict__, "name": "vit_digits_teacher",
                                     "teacher": True}), None
    elif pattern == "mpcvit_plus":
        config = TINY.with_overrides(linear_gelu=True)
    elif pattern == "3_parties":
        n, trunc = 3, "dealer"
    elif pattern == "qk_order":
        alpha, options = "0000,0000", PrivateOptions(scale_order="qk")
    model = make_model(config, alpha)
    images = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got, _ = run_private(model, images, options, OracleOps(), n, trunc)
    with torch.no_grad():
        want = model(images)
    assert (got - want).abs().max() < 2e-3


# -- real protocols ---------------------------------------------------------------------------
def digits_config(teacher: bool) -> ViTConfig:
    return get_config("vit_digits_teacher" if teacher else "vit_digits")


@pytest.mark.parametrize("pattern", [*PATTERNS, "teacher", "mpcvit_plus"])
def test_private_logits_match_plaintext(pattern: str) -> None:
    pytest.importorskip("privit.protocols.softmax")
    pytest.importorskip("privit.protocols.layernorm")
    pytest.importorskip("privit.protocols.gelu")
    teacher = pattern == "teacher"
    config = digits_config(teacher)
    if pattern == "mpcvit_plus":
        config = config.with_overrides(linear_gelu=True)
    model = make_model(config, None if teacher else PATTERNS.get(pattern, "1010,0110"), std=0.2)
    images = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    got, reports = run_private(model, images)
    with torch.no_grad():
        want = model(images)
    assert (got - want).abs().max() < 0.05
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    names = {s["name"] for s in reports[0]["scopes"]}
    assert {"weights", "embed", "layer0", "layer0/attn", "layer0/mlp", "layer1", "head"} <= names


@pytest.mark.parametrize("options", [
    PrivateOptions(relu="stochastic"),
    PrivateOptions(relu="stochastic", circa_k=4, compare="adder"),
    PrivateOptions(compare="fss", gelu="poly"),
    PrivateOptions(gelu="erf"),
    PrivateOptions(compare="fss_compact"),
], ids=["circa_default", "circa_k4_adder", "fss", "gelu_erf", "fss_compact"])
def test_private_options_stay_close(options: PrivateOptions) -> None:
    pytest.importorskip("privit.protocols.softmax")
    model = make_model(digits_config(False), PATTERNS["mixed"], std=0.2)
    images = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got, reports = run_private(model, images, options)
    with torch.no_grad():
        want = model(images)
    assert (got - want).abs().max() < 0.05
    names = {s["name"] for s in reports[0]["scopes"]}
    method = options.compare if options.compare != "auto" else None
    if method:
        assert any(n.endswith("/" + method) for n in names)


def test_two_quad_teacher_runs() -> None:
    pytest.importorskip("privit.protocols.softmax")
    model = make_model(digits_config(True), None, std=0.2)
    images = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    got, _ = run_private(model, images, PrivateOptions(softmax="2quad"))
    assert got.shape == (1, 10) and bool(torch.isfinite(got).all())


def test_vit_job_in_memory_matches_its_reference() -> None:
    pytest.importorskip("privit.protocols.softmax")
    from privit.launch.vit_job import VitJob
    from privit.parties.config import JobSpec

    cfg = RunConfig(n_parties=2, timeout_s=60, seed=3,
                    job=JobSpec.make("vit", model="vit_digits", mu="0.5", batch=3))
    job = VitJob(cfg)
    assert job.image_source == "digits" and job.labels is not None
    res = run_in_memory(cfg, job.run, CORRELATIONS)
    ref = job.reference()
    out = res[0][0]
    assert set(out) == {"logits"}  # the labels stay with party 1 (and the reference)
    assert "labels" in ref
    assert (out["logits"] - ref["logits"]).abs().max() < 0.05
    assert torch.equal(out["logits"].argmax(-1), ref["logits"].argmax(-1))
    assert job.arch.alpha_string().count("1") == round(0.5 * 8)


def test_vit_job_rejects_bad_params() -> None:
    from privit.launch.vit_job import VitJob
    from privit.parties.config import JobSpec

    def make(**params: Any) -> VitJob:
        return VitJob(RunConfig(job=JobSpec.make("vit", **params)))

    with pytest.raises(ValueError, match="unknown parameters"):
        make(model="vit_digits", colour="red")
    with pytest.raises(ValueError, match="teacher"):
        make(model="vit_digits_teacher", mu="0.5")
    with pytest.raises(ValueError, match="alpha pattern"):
        make(model="vit_digits", alpha="11,00")
    with pytest.raises(ValueError, match="gelu"):
        make(model="vit_digits", gelu="cubic")
