"""Run a job with every party and the dealer as threads over `MemoryChannel`, for unit tests.

The same framing, counting, offline phase and Session as real runs (which use one process
per role and ZeroMQ, launch/): the bytes and rounds a test reads here are the ones real
processes produce. Steps:
1. Trace the job on a tracing session of every party; the plans must be identical.
2. Generate the dealer seeds (one per party) and the pairwise seeds directly.
3. Dealer thread and party threads: the same phases as the role processes
   (parties/lifecycle.py): deal / receive the plan, `job(session)`, every planned
   correlation used; without the barrier and the bye, which only separate processes need.
5. Join with a timeout; the first failure (in time) is re-raised naming its role, after
   the failing role has told the others to stop (`channel.abort`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from privit.parties.config import RunConfig
from privit.parties.counters import Counters
from privit.parties.lifecycle import record_party_material, run_dealer_phases, run_party_phases
from privit.parties.material import (
    MaterialFile,
    MaterialHeader,
    MaterialWriter,
    material_fields,
    material_hash,
    public_hash,
    share_material_id,
)
from privit.parties.memory import MemoryChannel, MemoryHub
from privit.parties.offline import UNLIMITED, StreamLimits
from privit.parties.prg import SEED_BYTES, new_seed
from privit.parties.session import CorrelationRegistry, Params, Session

T = TypeVar("T")
JOIN_MARGIN_S = 30.0


class InMemoryRunError(RuntimeError):
    """A role of an in-memory run failed; `role` names it, `__cause__` is its exception."""

    def __init__(self, role_name: str, exc: BaseException) -> None:
        super().__init__(f"{role_name} failed: {type(exc).__name__}: {exc}")
        self.role_name = role_name
        self.original = exc


@dataclass
class InMemoryRun(Generic[T]):
    results: list[T]
    reports: list[dict[str, Any]]
    dealer_report: dict[str, Any]
    plan: list[tuple[str, Params]] = field(default_factory=list)
    streams: list[dict[str, int | None]] = field(default_factory=list)


def trace_plan(cfg: RunConfig, job: Callable[[Session], Any], registry: CorrelationRegistry,
               party_id: int = 0) -> list[tuple[str, Params]]:
    """The job's correlation requests, as party `party_id` makes them."""
    tracer = Session.tracing(cfg, party_id, registry)
    job(tracer)
    assert tracer.trace is not None
    return list(tracer.trace)


def run_in_memory_detailed(
    cfg: RunConfig,
    job: Callable[[Session], T],
    registry: CorrelationRegistry,
    *,
    check_plans: bool = True,
    limits: StreamLimits = UNLIMITED,
    seed_source: bytes | None = None,
    record: Sequence[str | Path] | None = None,
    material: Sequence[str | Path] | None = None,
) -> InMemoryRun[T]:
    """Run `job` on every party; results, counter reports, the dealer's report and the plan.

    limits: every party's streaming limits (parties/offline.py; default: the whole plan
    before the online phase). seed_source: derive every seed from these bytes instead of
    drawing fresh ones, so that two runs share their randomness (tests compare them).
    record: preprocess only: party i writes its dealer material to record[i] and runs no
    job (results are None). material: party i reads its material from material[i]
    (parties/material.py) and no dealer runs (dealer_report is empty).
    """
    n = cfg.n_parties
    plan = trace_plan(cfg, job, registry, 0)
    if check_plans:
        for p in range(1, n):
            other = trace_plan(cfg, job, registry, p)
            if other != plan:
                raise InMemoryRunError(cfg.role_name(p), ValueError(
                    "the job's correlation plan differs between party 0 and this party"))
    def seed(*name: int) -> bytes:
        if seed_source is None:
            return new_seed()
        return hashlib.sha256(seed_source + bytes(name)).digest()[:SEED_BYTES]

    dealer_seeds = [seed(0, p) for p in range(n)]
    pair_seeds: dict[int, dict[int, bytes]] = {p: {} for p in range(n)}
    for i in range(n):
        for j in range(i + 1, n):
            pair_seeds[i][j] = pair_seeds[j][i] = seed(1, i, j)

    hub = MemoryHub(range(n + 1))
    roles = list(range(n + 1))
    counters = {r: Counters() for r in roles}
    channels = {r: MemoryChannel(hub, r, [p for p in roles if p != r], counters[r], cfg.timeout_s,
                                 cfg.role_name) for r in roles}
    results: dict[int, Any] = {}
    streams: dict[int, dict[str, int | None]] = {}

    def dealer() -> None:
        run_dealer_phases(channels[cfg.dealer_id], counters[cfg.dealer_id], cfg, registry, plan,
                          dealer_seeds, sync=False, windows=[limits.window_bytes] * n)

    def party(pid: int) -> None:
        source: MaterialFile | None = None
        party_seed = dealer_seeds[pid]
        if record is not None:
            material_id = share_material_id(channels[pid], cfg, pid)
            writer = MaterialWriter(record[pid], MaterialHeader(
                material_id, pid, n, material_hash(cfg), json.dumps(material_fields(cfg)),
                public_hash(None, None), party_seed))
            try:
                record_party_material(channels[pid], counters[pid], cfg, registry, writer,
                                      sync=False, limits=limits)
            except BaseException:
                writer.discard()
                raise
            writer.finish()
            results[pid] = None
            return
        if material is not None:
            source = MaterialFile.open(material[pid], registry)
            source.check(cfg, pid)
            party_seed = source.header.seed
        try:
            outcome = run_party_phases(channels[pid], counters[pid], cfg, pid, registry,
                                       party_seed, pair_seeds[pid], job, sync=False,
                                       limits=limits, material=source)
        finally:
            if source is not None:
                source.close()
        results[pid] = outcome.result
        streams[pid] = outcome.stream

    bodies: dict[int, Callable[[], None]] = {p: functools.partial(party, p) for p in range(n)}
    if material is None:
        bodies[cfg.dealer_id] = dealer
    _run_threads(cfg, channels, bodies)
    return InMemoryRun(
        results=[results[p] for p in range(n)],
        reports=[counters[p].report() for p in range(n)],
        dealer_report=counters[cfg.dealer_id].report() if material is None else {},
        plan=plan,
        streams=[streams[p] for p in range(n)] if record is None else [],
    )


def _run_threads(cfg: RunConfig, channels: dict[int, MemoryChannel],
                 bodies: dict[int, Callable[[], None]]) -> None:
    """Run each role's body on a thread; re-raise the first failure (in time), naming its
    role, after that role told the others to stop."""
    errors: list[tuple[float, int, BaseException]] = []
    lock = threading.Lock()

    def guarded(role: int, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            with lock:
                errors.append((time.monotonic(), role, exc))
            channels[role].abort(f"{cfg.role_name(role)} failed: {exc}")

    threads = [threading.Thread(target=guarded, args=(role, body), daemon=True,
                                name=cfg.role_name(role)) for role, body in bodies.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + cfg.timeout_s + JOIN_MARGIN_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        _, role, exc = min(errors, key=lambda e: e[0])
        raise InMemoryRunError(cfg.role_name(role), exc) from exc
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        raise InMemoryRunError(", ".join(stuck), TimeoutError(
            f"did not finish within {cfg.timeout_s + JOIN_MARGIN_S:g} s"))


def run_in_memory(
    cfg: RunConfig, job: Callable[[Session], T], registry: CorrelationRegistry
) -> list[tuple[T, dict[str, Any]]]:
    """Each party's (job result, counters report), in party order."""
    run = run_in_memory_detailed(cfg, job, registry)
    return list(zip(run.results, run.reports, strict=True))
