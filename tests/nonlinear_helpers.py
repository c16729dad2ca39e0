"""Shared helpers of the non-linear protocol tests (test_exp_recip, test_softmax,
test_gelu_layernorm): run a job over the in-memory harness, record every message each
party sends, and check rounds, online bytes and the dealer plan exactly.

Expected costs are built step by step from the protocols' docstrings: a step is either
one of our own messages (label, numel) or a call into protocols/compare.py, whose
messages, rounds and dealer requests are taken from the same call run on its own (its
own tests pin those down)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from privit.parties.config import RunConfig
from privit.parties.inmemory_run import run_in_memory_detailed, trace_plan
from privit.parties.session import Params, Session
from privit.parties.wire import Message, encode, message_nbytes
from privit.protocols import ring, sharing
from privit.protocols.registry import CORRELATIONS

F = 16
LSB = 2.0 ** -F
Sent = tuple[str, str, tuple[int, ...]]  # (label, dtype code, shape)


def make_cfg(trunc: str = "local", n: int = 2) -> RunConfig:
    return RunConfig(n_parties=n, truncation=trunc, frac_bits=F, timeout_s=60)


def shared(sess: Session, owner: int, value: torch.Tensor) -> torch.Tensor:
    """Fixed-point shares of a float64 tensor input by `owner`."""
    mine = sess.party_id == owner and not sess.is_tracing
    return sharing.share_input(sess, owner, ring.encode(value, F) if mine else None,
                               tuple(value.shape))


@dataclass
class Result:
    value: Any  # the opened output(s), decoded to float64
    reports: list[dict[str, Any]]
    dealer_report: dict[str, Any]
    plan: list[tuple[str, Params]]
    sent: dict[int, list[Sent]] = field(default_factory=dict)


def run(job: Callable[[Session], Any], cfg: RunConfig | None = None) -> Result:
    """Run `job` (returning a share tensor or a list of them) and open the outputs."""
    cfg = cfg or make_cfg()
    sent: dict[int, list[Sent]] = {}

    def wrapped(sess: Session) -> Any:
        if not sess.is_tracing:
            assert sess.channel is not None
            log = sent.setdefault(sess.party_id, [])
            original = sess.channel.send

            def send(dst: int, kind: str, label: str, arrays: Sequence[np.ndarray] = (),
                     meta: dict[str, Any] | None = None) -> int:
                if kind == "data":
                    for a in arrays:
                        log.append((label, a.dtype.str, tuple(a.shape)))
                return original(dst, kind, label, arrays, meta)

            sess.channel.send = send
        return job(sess)

    out = run_in_memory_detailed(cfg, wrapped, CORRELATIONS)

    def opened(index: int | None) -> torch.Tensor:
        shares = [r if index is None else r[index] for r in out.results]
        return ring.decode(sharing.reconstruct(shares), F)

    first = out.results[0]
    value = [opened(i) for i in range(len(first))] if isinstance(first, (list, tuple)) else opened(None)
    return Result(value, out.reports, out.dealer_report, out.plan, sent)


# -- expected costs -----------------------------------------------------------------------------
@dataclass
class Expected:
    """Messages one party sends (in order), rounds, and dealer requests, step by step."""

    sent: list[Sent] = field(default_factory=list)
    rounds: int = 0
    plan: list[tuple[str, Params]] = field(default_factory=list)

    def ours(self, label: str, numel: int, requests: Sequence[tuple[str, Params]] = ()) -> Expected:
        """One of our rounds: one int64 message of `numel` elements."""
        self.sent.append((label, "<i8", (numel,)))
        self.rounds += 1
        self.plan.extend(requests)
        return self

    def requests(self, requests: Sequence[tuple[str, Params]]) -> Expected:
        self.plan.extend(requests)
        return self

    def compare(self, call: Callable[[Session], Any]) -> Expected:
        """A protocols/compare.py call, costed by running it alone (on zeros)."""
        alone = run(lambda s: _zeros_result(call(s)))
        self.sent.extend(alone.sent[0])
        self.rounds += alone.reports[0]["phases"]["online"]["rounds"]
        self.plan.extend(alone.plan)
        return self


def _zeros_result(out: Any) -> torch.Tensor:
    if isinstance(out, (list, tuple)):
        return torch.cat([o.reshape(-1) for o in out])
    return out


def wire_bytes(src: int, sent: Sequence[Sent]) -> int:
    """Bytes of these messages from party `src` on one link (seq = position)."""
    total = 0
    for seq, (label, dtype, shape) in enumerate(sent):
        arr = np.zeros(shape, dtype=np.dtype(dtype))
        total += message_nbytes(encode(Message("data", src, seq, label, [arr])))
    return total


def check_costs(res: Result, exp: Expected, n: int = 2) -> None:
    """Exact online rounds, messages and bytes for every party, and the dealer plan."""
    assert res.plan == exp.plan
    for party in range(n):
        online = res.reports[party]["phases"]["online"]
        assert res.sent[party] == exp.sent, f"party {party} sent {res.sent[party]}"
        assert online["rounds"] == exp.rounds
        assert online["messages"] == len(exp.sent) * (n - 1)
        assert online["bytes"] == wire_bytes(party, exp.sent) * (n - 1)


def zeros_like_shares(shape: Sequence[int]) -> Callable[[Session], torch.Tensor]:
    return lambda s: torch.zeros(tuple(shape), dtype=torch.int64)


def offline_payload(plan: Sequence[tuple[str, Params]]) -> int:
    """Dealer payload bytes (all parties) of a plan, dealing every request once."""
    from privit.parties.prg import Prg, new_seed

    total = 0
    for r, (kind, params) in enumerate(plan):
        prgs = [Prg(new_seed(), r) for _ in range(2)]
        total += sum(a.nbytes for arrays in CORRELATIONS[kind].deal(params, prgs) for a in arrays)
    return total


def plan_of(cfg: RunConfig, job: Callable[[Session], Any]) -> list[tuple[str, Params]]:
    return trace_plan(cfg, job, CORRELATIONS)


def dealer_header_bytes(plan: Sequence[tuple[str, Params]]) -> int:
    """Bytes of the offline chunk messages' headers for this plan (2 parties): replays
    parties/offline.DealerStream (without flow control) into a channel that only counts."""
    from privit.parties.channel import FramedChannel
    from privit.parties.counters import Counters
    from privit.parties.offline import DealerStream
    from privit.parties.prg import new_seed

    class Counting(FramedChannel):
        def _transmit(self, dst: int, frames: list[Any]) -> None:
            pass

        def _receive(self, timeout_s: float) -> tuple[list[Any], int | None] | None:
            return None

    counters = Counters()
    counters.set_phase("offline")
    channel = Counting(2, [0, 1], counters, 1.0)
    payload = DealerStream(channel, CORRELATIONS, [new_seed(), new_seed()], None).send_plan(plan)
    return counters.phases["offline"].bytes - sum(payload)


def check_offline(res: Result, payload_formula: int, compare_plan: Sequence[tuple[str, Params]] = ()
                  ) -> None:
    """The dealer sent exactly: our requests' payload (by formula), the comparisons'
    payload (dealt again here), and the chunk headers."""
    expected = payload_formula + offline_payload(compare_plan) + dealer_header_bytes(res.plan)
    assert res.dealer_report["phases"]["offline"]["bytes"] == expected
