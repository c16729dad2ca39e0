"""How likely a run's local truncations are to fail: sum |x| / 2^64 per call site.

Two-party local truncation (protocols/truncation.py, SecureML) fails when the two shares'
signed sum wraps, with probability |x| / 2^64 per element for a uniform share x_0, and a
failure moves the value by 2^(64-s): 2^32 in real units at f = 16. Depending on where it
lands, it is harmless (a GeLU power outside the pieces, multiplied by an exact zero) or it
ruins the run (a residual value of 2^32 overflows the next LayerNorm's variance, and the
logits come out off by ~4e9). This tool runs a job in one process (parties/inmemory_run.py,
both parties as threads, as `privit run` computes but without sockets), pairs the two
parties' shares of every local truncation, and reports per call site the elements, the
largest |x| and the expected number of failures, sum |x| / 2^64, with the failures that
actually happened. A developer aid: the whole model in one process needs a few GB at
ViT-Base (~200 s there on the 2-core AMD EPYC VM). It measures runs with `--truncation
local`, which is no longer the default: the default (exact) has no failure at all.

    python -m privit.launch.truncation_risk --model vit_7_4_32_teacher
"""
from __future__ import annotations

import argparse
import math
import threading
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from privit.parties.session import Session
from privit.protocols import truncation


@dataclass
class SiteRisk:
    """One call site's local truncations: calls, elements, largest |x| (ring units),
    expected failures (sum |x| / 2^64) and observed failures (results off by more than 1)."""

    calls: int = 0
    elements: int = 0
    max_abs: float = 0.0
    expected: float = 0.0
    failures: int = 0


def _site() -> str:
    """The innermost privit functions that called the truncation, outermost last."""
    names = [f.name for f in traceback.extract_stack(limit=10)[:-2] if "privit" in f.filename
             or "/protocols/" in f.filename or "/models/" in f.filename]
    return " < ".join(reversed(names[-4:]))


@contextmanager
def recording() -> Iterator[dict[str, SiteRisk]]:
    """While active, every `truncation.truncate_local` of a two-party in-memory run is
    paired across the parties (they truncate in the same order) and measured; yields the
    per-site table."""
    real = truncation.truncate_local
    lock = threading.Lock()
    pending: dict[int, tuple[torch.Tensor, torch.Tensor, str]] = {}
    calls = [0, 0]
    sites: dict[str, SiteRisk] = defaultdict(SiteRisk)

    def spy(sess: Session, x: torch.Tensor, bits: int) -> torch.Tensor:
        out = real(sess, x, bits)
        if sess.is_tracing:
            return out
        with lock:
            index = calls[sess.party_id]
            calls[sess.party_id] += 1
            other = pending.pop(index, None)
            if other is None:
                pending[index] = (x.clone(), out.clone(), _site())
                return out
        x_other, out_other, site = other
        value = x + x_other
        off = (out + out_other - torch.bitwise_right_shift(value, bits)).abs()
        magnitude = value.double().abs()
        risk = sites[site]
        risk.calls += 1
        risk.elements += value.numel()
        if value.numel():
            risk.max_abs = max(risk.max_abs, float(magnitude.max()))
        risk.expected += float(magnitude.sum()) / 2.0**64
        risk.failures += int((off > 1).sum())
        return out

    truncation.truncate_local = spy
    try:
        yield sites
    finally:
        truncation.truncate_local = real


def measure(job: Callable[[Session], Any], cfg: Any, seed_source: bytes | None = None
            ) -> dict[str, SiteRisk]:
    """Run `job` in memory under `cfg` (2 parties, local truncation) and return the table."""
    from privit.parties.inmemory_run import run_in_memory_detailed
    from privit.protocols.registry import CORRELATIONS

    if cfg.n_parties != 2 or cfg.truncation != "local":
        raise ValueError("truncation_risk measures two-party runs with local truncation")
    with recording() as sites:
        run_in_memory_detailed(cfg, job, CORRELATIONS, seed_source=seed_source)
    return dict(sites)


def format_table(sites: dict[str, SiteRisk], top: int = 12) -> str:
    total = sum(s.expected for s in sites.values())
    failed = sum(s.failures for s in sites.values())
    lines = [f"expected failures per run {total:.3g} (observed in this run: {failed})",
             f"{'expected':>9} {'max |x|':>8} {'calls':>6} {'elements':>11} {'failed':>6}  site"]
    for site, s in sorted(sites.items(), key=lambda kv: -kv[1].expected)[:top]:
        bits = f"2^{math.log2(s.max_abs):.1f}" if s.max_abs >= 1 else "0"
        lines.append(f"{s.expected:9.2e} {bits:>8} {s.calls:6d} {s.elements:11,d} "
                     f"{s.failures:6d}  {site}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from privit.launch.vit_job import VitJob
    from privit.parties.config import JobSpec, RunConfig

    parser = argparse.ArgumentParser(prog="python -m privit.launch.truncation_risk")
    parser.add_argument("--model", default="vit_7_4_32_teacher")
    parser.add_argument("--mu", default=None, help="share of ReLU-softmax heads (random students)")
    parser.add_argument("--seed", type=int, default=0, help="the job's seed (images, weights)")
    parser.add_argument("--top", type=int, default=12, help="call sites to list")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    params = {"model": args.model, **({"mu": args.mu} if args.mu is not None else {})}
    cfg = RunConfig(n_parties=2, timeout_s=3600, seed=args.seed, truncation="local",
                    job=JobSpec.make("vit", **params))
    print(format_table(measure(VitJob(cfg).run, cfg), args.top))


if __name__ == "__main__":
    main()
