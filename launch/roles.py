"""The main of one role's OS process: a party or the dealer.

Party i:
  1. bind its socket, connect to every other party and the dealer (parties/transport.py);
  2. handshake: versions, session id, config hash; receive its dealer seed and the
     pairwise seeds of lower-numbered parties, send pairwise seeds to higher ones;
  3. offline: receive and expand the dealer's whole correlation plan;
  4. a barrier with the other parties (counted as setup), then the online phase: the job;
  5. write its report (JSON) and exit 0; on any error tell the peers (abort), write the
     error into the report, print one line to stderr and exit 1.
Dealer:
  1-2 as above (it sends each party its seed); 3. trace the job to learn its exact
  correlation plan, deal it, flush, report, exit.
Preprocessed material (parties/material.py, `MaterialUse`): a preprocess run's party does
1-2 with the dealer, then writes every chunk the dealer sends to its material file and
ends (no online phase); the dealer runs as always. An online run from material has no
dealer: a party checks its file first, does 1-2 with the other parties only, reads the
file in step 3 and compares material ids at the barrier of step 4.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from privit import __version__
from privit.launch import plan_cache
from privit.launch.errors import debug_enabled, describe, format_traceback
from privit.launch.job_registry import make_job
from privit.launch.jobs import ALL_INPUTS, DATA_OWNER, WEIGHT_OWNER, Job, RoleInputs
from privit.launch.logging_config import configure_logging
from privit.launch.progress import for_role as role_progress
from privit.launch.report import SCHEMA_VERSION
from privit.parties.channel import ChannelLimits, FramedChannel, PeerAborted
from privit.parties.cluster import Cluster
from privit.parties.config import RunConfig
from privit.parties.counters import Counters
from privit.parties.handshake import Hellos, exchange_hellos
from privit.parties.keys import KeyFileError, RoleKeys
from privit.parties.lifecycle import record_party_material, run_dealer_phases, run_party_phases
from privit.parties.material import (
    MaterialError,
    MaterialFile,
    MaterialHeader,
    MaterialWriter,
    material_fields,
    material_hash,
    public_hash,
    share_material_id,
)
from privit.parties.offline import UNBOUNDED, StreamLimits
from privit.parties.prg import new_seed
from privit.parties.resources import current_rss_bytes, peak_rss_bytes, process_start_time
from privit.parties.session import Session
from privit.parties.transport import ZmqChannel, notify_abort
from privit.protocols.registry import CORRELATIONS

_log = logging.getLogger(__name__)


STOP_GRACE_S = 5.0


class Stopped(BaseException):
    """SIGTERM or SIGHUP reached the role (a BaseException, as KeyboardInterrupt is, so that
    no `except Exception` swallows it): it stops as on an error (its peers are told, a
    material file it writes is removed, one it claimed is wiped) and exits 128 + N."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _stop_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into `Stopped` in the main thread, once: a second signal
    during the clean-up is ignored, and the clean-up is bounded: the process exits
    128 + N after STOP_GRACE_S whatever it is doing (a run started by hand has no
    coordinator to SIGKILL it)."""
    def on_signal(signum: int, frame: FrameType | None) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        deadline = threading.Timer(STOP_GRACE_S, os._exit, args=(128 + signum,))
        deadline.daemon = True
        deadline.start()
        raise Stopped(signum)
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (a role run inside another program)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


def _watch_parent(parent_pid: int) -> None:
    """Stop if the coordinator that started us dies, so no role outlives a killed run: as
    on SIGTERM (clean-up included), and at once if that takes more than STOP_GRACE_S."""
    def loop() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(STOP_GRACE_S)
        os._exit(3)
    threading.Thread(target=loop, daemon=True, name="parent-watch").start()


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once (find_library runs ldconfig); None where absent."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def keep_freed_memory() -> None:
    """Ask glibc to serve large tensors from the heap and keep freed memory.

    By default every allocation over 128 KiB is a fresh mmap that is returned on free, so
    each new tensor pays a page fault per 4 KiB page (about 4 us here: a 6 MB add took
    17 ms instead of 0.3 ms). Protocols allocate many same-sized tensors, so reuse wins.
    No-op where glibc's mallopt is not available.
    """
    libc = _libc()
    if libc is None:
        return
    try:
        m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
        libc.mallopt(m_mmap_threshold, 1 << 30)
        # One arena: ZeroMQ's I/O thread frees what the protocol thread allocates (and the
        # reverse); with one arena those buffers are reused (100 MB echo: 1.2 -> 2.1+ GB/s).
        libc.mallopt(m_arena_max, 1)
        libc.mallopt(m_trim_threshold, (1 << 31) - 1)  # a C int
    except (OSError, AttributeError):
        pass


def release_freed_memory() -> None:
    """Return the heap's free memory to the system (glibc's malloc_trim): after a phase
    that allocated what the rest of the run does not reuse (the dealer's trace, a party's
    weight encoding), so that the resident set and the memory budget see live memory only.
    No-op where glibc is not available."""
    libc = _libc()
    if libc is None:
        return
    try:
        libc.malloc_trim(0)
    except AttributeError:
        pass


def _tensor_json(t: torch.Tensor) -> dict[str, Any]:
    return {"shape": list(t.shape), "data": t.double().flatten().tolist()}


def _open_channel(cfg: RunConfig, cluster: Cluster, role: int, counters: Counters,
                  bind_host: str | None, keys: RoleKeys | None,
                  with_dealer: bool = True) -> ZmqChannel:
    if cluster.n_parties != cfg.n_parties:
        raise ValueError(f"cluster file lists {cluster.n_parties} parties, config says {cfg.n_parties}")
    peers = [r for r in range(cfg.n_parties + (1 if with_dealer else 0)) if r != role]
    limits = ChannelLimits(max_frame_bytes=cfg.max_frame_mb << 20,
                           max_buffer_bytes=cfg.max_buffer_mb << 20)
    try:
        return ZmqChannel(role, cluster, peers, counters, cfg.timeout_s, cfg.role_name,
                          network=cfg.network, bind_host=bind_host, keys=keys, limits=limits,
                          max_wait_s=cfg.max_wait_s)
    except Exception as exc:
        # No channel to abort on: tell the peers directly so they stop now, not at timeout.
        notify_abort(cluster, role, peers, f"{cfg.role_name(role)} failed to start: {exc}", keys)
        raise


INSECURE_WARNING = ("WARNING: --insecure: channels are neither authenticated nor encrypted; "
                    "any process that reaches the ports can read the shares and the seeds, or "
                    "inject messages. For measurements only.")


def _role_keys(cfg: RunConfig, role: int, key_path: str | None) -> RoleKeys | None:
    """This role's CURVE keys (None for --insecure); a missing key is a one-line error."""
    if not cfg.secure:
        print(f"privit {cfg.role_name(role)}: {INSECURE_WARNING}", file=sys.stderr, flush=True)
        return None
    if key_path is None:
        raise KeyFileError(
            f"{cfg.role_name(role)} needs its secret key (--key FILE; `privit cluster init` "
            f"writes one per role), or --insecure for a measurement without secure channels"
        )
    return RoleKeys.load(key_path)


def _close_after_failure(channel: ZmqChannel) -> None:
    """Close a failed role's channel; a problem closing it must not hide the failure."""
    try:
        channel.close()
    except Exception:  # noqa: BLE001 - the run's own error is the one to report
        pass


def _announce_and_bind(channel: FramedChannel, role: int, job: Job, hellos: Hellos,
                       peers: list[int]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Give the job what the others announced: party 0's in its hello, then (for jobs whose
    client announces, e.g. the ViT's batch size) party 1's in one more setup message to
    every peer. Returns both announcements (what a preprocessed plan depends on)."""
    owner = job.own_public() if role == WEIGHT_OWNER else hellos.public.get(WEIGHT_OWNER)
    client = None
    if job.client_announces:
        if role == DATA_OWNER:
            job.bind_public(owner, None)
            client = job.client_public()
            for peer in peers:
                channel.send(peer, "data", "client_public", meta=client)
            return owner, client
        msg = channel.recv(DATA_OWNER, "data", "client_public")
        client = msg.meta if isinstance(msg.meta, dict) else {}
    job.bind_public(owner, client)
    return owner, client


@dataclass(frozen=True)
class MaterialUse:
    """Where a party's dealer material goes or comes from (parties/material.py): streamed
    from the dealer (both None, `privit run`), written to `record_to` by a preprocess run
    (offline phase only), or read from `replay_from` by an online run without a dealer."""

    record_to: str | None = None
    replay_from: str | None = None

    def __post_init__(self) -> None:
        if self.record_to and self.replay_from:
            raise ValueError("a party either preprocesses material or uses it, not both")


STREAMED = MaterialUse()


def run_party(cfg: RunConfig, cluster: Cluster, party_id: int, keys: RoleKeys | None,
              bind_host: str | None = None, progress_path: str | None = None,
              inputs: RoleInputs = ALL_INPUTS, material: MaterialUse = STREAMED) -> dict[str, Any]:
    counters = Counters()
    marks = {"process_start": process_start_time()}
    progress = role_progress(cfg.role_name(party_id), counters, progress_path)
    stored = _open_material(cfg, cluster, party_id, keys, material)
    finished: MaterialWriter | None = None  # a preprocess's whole file, until the run ends
    # Replaying material, the parties talk only to each other: no dealer takes part.
    try:
        channel = _open_channel(cfg, cluster, party_id, counters, bind_host, keys,
                                with_dealer=stored is None)
    except BaseException:
        if stored is not None:
            stored.close()
        raise
    try:
        # After the channel, so a failure here (a bad checkpoint) reaches the peers.
        job = make_job(cfg, inputs.for_role(party_id))
        marks["ready"] = time.time()
        progress.phase_done("startup", since=marks["process_start"])
        peers = list(channel.peers)
        seeds_out = {p: new_seed() for p in range(party_id + 1, cfg.n_parties)}
        release_freed_memory()  # e.g. party 0's float64 weights, freed as they were encoded
        limits = stream_limits(cfg, job.reserved_bytes())
        hellos = exchange_hellos(channel, cfg, party_id, peers, seeds_out, job.own_public(),
                                 limits.window_bytes)
        seeds_in = hellos.seeds
        owner, client = _announce_and_bind(channel, party_id, job, hellos, peers)
        marks["handshake_done"] = time.time()
        progress.phase_done("handshake")
        _log.info("handshake done (%.3f s after start); offline phase next",
                  marks["handshake_done"] - marks["process_start"])
        if material.record_to:
            report, finished = _record_material(channel, counters, cfg, party_id, job, limits,
                                                material.record_to, seeds_in[cfg.dealer_id],
                                                public_hash(owner, client), marks)
            return report
        if stored is not None:
            stored.check_public(owner, client)
        pair_seeds = {p: seeds_out[p] if p > party_id else seeds_in[p]
                      for p in range(cfg.n_parties) if p != party_id}
        dealer_seed = stored.header.seed if stored else seeds_in[cfg.dealer_id]
        outcome = run_party_phases(channel, counters, cfg, party_id, CORRELATIONS,
                                   dealer_seed, pair_seeds, job.run, progress.step,
                                   limits=limits, material=stored,
                                   on_phase=lambda phase, extra: progress.phase_done(phase, **extra))
        outputs, offline_s, online_s = outcome.result, outcome.offline_s, outcome.online_s
        _log.info("offline phase %.3f s, online phase %.3f s; outputs %s", offline_s, online_s,
                  sorted(outputs))
        return {"role": party_id, "name": cfg.role_name(party_id), "ok": True,
                "config": cfg.to_dict(), **job.report_fields(),
                "online_wall_s": online_s, "offline_wall_s": offline_s,
                "offline_prefetch_s": outcome.prefetch_s,
                "stream": outcome.stream, "marks": {**marks, "done": time.time()},
                **({"material": _material_fields(stored)} if stored else {}),
                "counters": counters.report(),
                "outputs": {k: _tensor_json(v) for k, v in outputs.items()}}
    except BaseException as exc:
        if stored is not None:  # wipe the claimed file's seed first: a stop's grace is short
            try:
                stored.close()
            except MaterialError as wipe_error:
                print(f"privit: {wipe_error}", file=sys.stderr)
            stored = None
        channel.abort(f"{cfg.role_name(party_id)} failed: {exc}")
        _close_after_failure(channel)
        raise
    finally:
        try:
            if stored is not None:
                stored.close()
        finally:
            try:
                channel.close()
            except BaseException:  # e.g. stopped while the peers finish: the run failed
                if finished is not None:
                    finished.remove_finished()
                raise


def _open_material(cfg: RunConfig, cluster: Cluster, party_id: int, keys: RoleKeys | None,
                   material: MaterialUse) -> MaterialFile | None:
    """The party's material file, opened and checked before anything else (a used, damaged
    or mismatched file fails at once); the other parties are told, as for a failed start."""
    if not material.replay_from:
        return None
    try:
        stored = MaterialFile.open(material.replay_from, CORRELATIONS)
        try:
            stored.check(cfg, party_id)
        except MaterialError:
            stored.close()
            raise
    except MaterialError as exc:
        others = [p for p in range(cfg.n_parties) if p != party_id]
        notify_abort(cluster, party_id, others, f"{cfg.role_name(party_id)} failed to start: "
                                               f"{exc}", keys)
        raise
    return stored


def _material_fields(stored: MaterialFile) -> dict[str, Any]:
    """The report's account of material read from disk (never the seed)."""
    return {"source": "disk", "path": str(stored.path), "material_id": stored.header.material_id,
            "payload_bytes": stored.trailer["payload_bytes"], "file_bytes": stored.file_bytes,
            "requests": stored.trailer["requests"]}


def _record_material(channel: FramedChannel, counters: Counters, cfg: RunConfig, party_id: int,
                     job: Job, limits: StreamLimits, path: str, dealer_seed: bytes,
                     announced: str, marks: dict[str, float]
                     ) -> tuple[dict[str, Any], MaterialWriter]:
    """A preprocess run's party: write what the dealer sends to `path`; no online phase.
    Returns the report and the writer of the finished file."""
    material_id = share_material_id(channel, cfg, party_id)
    writer = MaterialWriter(path, MaterialHeader(
        material_id, party_id, cfg.n_parties, material_hash(cfg),
        json.dumps(material_fields(cfg), sort_keys=True), announced, dealer_seed))
    try:
        offline_s = record_party_material(channel, counters, cfg, CORRELATIONS, writer,
                                          limits=limits)
        file_bytes = writer.finish()
    except BaseException:  # a SIGTERM too (`Stopped`): the unfinished file holds the seed
        writer.discard()
        raise
    return {"role": party_id, "name": cfg.role_name(party_id), "ok": True,
            "config": cfg.to_dict(), **job.report_fields(), "offline_wall_s": offline_s,
            "material": {"path": path, "material_id": material_id,
                         "payload_bytes": writer.payload_bytes, "file_bytes": file_bytes,
                         "requests": writer.requests},
            "marks": {**marks, "done": time.time()}, "counters": counters.report()}, writer


def stream_limits(cfg: RunConfig, reserved: int) -> StreamLimits:
    """This party's streaming limits: its memory budget less what it already uses (the
    interpreter, torch, its own inputs) and what its job will hold (`reserved`), and a
    window the channel's buffer admits."""
    limits = StreamLimits.for_budget(cfg.memory_budget_mb << 20, current_rss_bytes() + reserved)
    window = min(limits.window_bytes, (cfg.max_buffer_mb << 20) // 2)
    return StreamLimits(window_bytes=window, held_bytes=limits.held_bytes)


def _dealer_plan(cfg: RunConfig, job: Job,
                 announced: tuple[dict[str, Any] | None, dict[str, Any] | None]
                 ) -> tuple[plan_cache.Plan, str]:
    """The job's plan and where it came from: "cache" (launch/plan_cache.py) or "traced"
    (the job run on a tracing session, then cached)."""
    key = plan_cache.plan_key(cfg, announced)
    cached = plan_cache.load(key)
    if cached is not None:
        return cached, "cache"
    tracer = Session.tracing(cfg, 0, CORRELATIONS)
    job.run(tracer)
    assert tracer.trace is not None
    plan = plan_cache.Plan(tracer.trace, tracer.trace_scopes)
    del tracer
    # The trace allocates and frees tensors of every shape the job uses: with freed memory
    # kept, the heap grew to twice the trace's live peak at ViT-Base (850 MiB against 433).
    release_freed_memory()
    plan_cache.store(key, plan)
    return plan, "traced"


def run_dealer(cfg: RunConfig, cluster: Cluster, keys: RoleKeys | None,
               bind_host: str | None = None, inputs: RoleInputs = ALL_INPUTS,
               progress_path: str | None = None) -> dict[str, Any]:
    counters = Counters()
    dealer = cfg.dealer_id
    marks = {"process_start": process_start_time()}
    progress = role_progress("dealer", counters, progress_path)
    channel = _open_channel(cfg, cluster, dealer, counters, bind_host, keys)
    try:
        # The dealer holds neither weights nor images: only the public architecture.
        job = make_job(cfg, inputs.for_role(dealer))
        marks["ready"] = time.time()
        progress.phase_done("startup", since=marks["process_start"])
        seeds = [new_seed() for _ in range(cfg.n_parties)]
        hellos = exchange_hellos(channel, cfg, dealer, list(range(cfg.n_parties)),
                                 dict(enumerate(seeds)))
        announced = _announce_and_bind(channel, dealer, job, hellos, list(range(cfg.n_parties)))
        marks["handshake_done"] = time.time()
        progress.phase_done("handshake")
        _log.info("handshake done (%.3f s after start); tracing the job",
                  marks["handshake_done"] - marks["process_start"])
        counters.set_phase("offline")
        t0 = time.perf_counter()
        plan, plan_source = _dealer_plan(cfg, job, announced)
        trace_s = time.perf_counter() - t0
        keep_freed_memory()  # from here on, for dealing's many same-sized arrays
        _log.info("%s %d correlation requests in %.3f s; dealing",
                  "traced" if plan_source == "traced" else "read the cached plan of",
                  len(plan.requests), trace_s)
        windows = [hellos.windows.get(p, UNBOUNDED) for p in range(cfg.n_parties)]
        request_bytes, deal_s = run_dealer_phases(channel, counters, cfg, CORRELATIONS,
                                                  plan.requests, seeds, windows=windows,
                                                  on_phase=lambda phase, extra:
                                                  progress.phase_done(phase, **extra))
        _log.info("dealt %d bytes of requests in %.3f s", sum(request_bytes), deal_s)
        by_scope: dict[str, int] = {}
        for scope, nbytes in zip(plan.scopes, request_bytes, strict=True):
            by_scope[scope] = by_scope.get(scope, 0) + nbytes
        kinds: dict[str, int] = {}
        for kind, _ in plan.requests:
            kinds[kind] = kinds.get(kind, 0) + 1
        return {"role": dealer, "name": "dealer", "ok": True, "config": cfg.to_dict(),
                **job.report_fields(),
                "trace_wall_s": trace_s, "plan_source": plan_source,
                "offline_wall_s": trace_s + deal_s, "requests": len(plan.requests),
                "request_kinds": kinds, "offline_payload_by_scope": by_scope,
                "marks": {**marks, "done": time.time()},
                "counters": counters.report()}
    except BaseException as exc:
        channel.abort(f"dealer failed: {exc}")
        _close_after_failure(channel)
        raise
    finally:
        channel.close()


def role_main(config: RunConfig | str, cluster_path: str, role: int, report_path: str | None,
              parent_pid: int | None = None, bind_host: str | None = None,
              progress_path: str | None = None, key_path: str | None = None,
              inputs: RoleInputs = ALL_INPUTS, material: MaterialUse = STREAMED) -> int:
    """Run one role; returns the process exit code. Errors are one line on stderr.

    config: the run config, or the path of its JSON (as the coordinator writes it).
    key_path: this role's secret key file (parties/keys.py); required unless the config's
    channels are "insecure".
    inputs: the role's own inputs (party 0's checkpoint, party 1's images, an
    architecture file to pin); the role takes only the part that is its own.
    material: a party's preprocessed material to write or to read (`MaterialUse`).
    """
    _stop_on_signals()
    if parent_pid is not None:
        _watch_parent(parent_pid)
    name = f"role {role}"
    cfg: RunConfig | None = None
    try:
        cfg = (config if isinstance(config, RunConfig)
               else RunConfig.from_dict(json.loads(Path(config).read_text())))
        if role != cfg.dealer_id:
            keep_freed_memory()  # the dealer, after its trace (run_dealer)
        name = cfg.role_name(role)
        configure_logging(name)
        _log.info("started: pid %d, job %s, %d parties, channels %s, config %s", os.getpid(),
                  cfg.job.name, cfg.n_parties, cfg.channels, cfg.config_hash())
        cluster = Cluster.load(cluster_path)
        if not 0 <= role <= cfg.n_parties:
            raise ValueError(f"role {role} out of range: parties are 0..{cfg.n_parties - 1}, "
                             f"dealer is {cfg.n_parties}")
        keys = _role_keys(cfg, role, key_path)
        profile_dir = os.environ.get("PRIVIT_PROFILE")  # developer aid: cProfile per role
        profiler = None
        if profile_dir:
            import cProfile  # here: a developer aid that ordinary runs never load

            profiler = cProfile.Profile()
            profiler.enable()
        try:
            if role == cfg.dealer_id:
                report = run_dealer(cfg, cluster, keys, bind_host, inputs, progress_path)
            else:
                report = run_party(cfg, cluster, role, keys, bind_host, progress_path, inputs,
                                   material)
        finally:
            if profiler is not None and profile_dir:
                profiler.disable()
                profiler.dump_stats(str(Path(profile_dir) / f"role-{role}.prof"))
        code = 0
    except KeyboardInterrupt:
        report = {"role": role, "name": name, "ok": False, "error": "interrupted"}
        code = 130
    except Stopped as exc:
        report = {"role": role, "name": name, "ok": False, "error": str(exc)}
        print(f"privit {name}: {exc}", file=sys.stderr, flush=True)
        code = 128 + exc.signum
    except Exception as exc:
        # One line: the cause and where; the traceback only on request (--debug).
        message = describe(exc)
        report = {"role": role, "name": name, "ok": False, "error": message}
        if isinstance(exc, PeerAborted):
            report["aborted_by"] = exc.peer_name
        print(f"privit {name}: error: {message}", file=sys.stderr, flush=True)
        if debug_enabled():
            print(format_traceback(exc), file=sys.stderr, flush=True)
        code = 1
    report["peak_rss_mb"] = round(peak_rss_bytes() / 2**20, 1)
    report["privit_version"] = __version__
    report["schema_version"] = SCHEMA_VERSION
    report["security"] = {"channels": cfg.channels if cfg is not None else "unknown"}
    if report_path:
        tmp = Path(report_path + ".tmp")
        tmp.write_text(json.dumps(report))
        tmp.replace(report_path)
    elif code == 0:
        print(json.dumps({k: v for k, v in report.items() if k != "outputs"}, indent=1))
    return code


def main(argv: list[str] | None = None) -> None:
    """`python -m privit.launch.roles --config C --cluster K --role R [--report P]`."""
    parser = argparse.ArgumentParser(prog="privit-role")
    parser.add_argument("--config", required=True)
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--role", type=int, required=True)
    parser.add_argument("--report")
    parser.add_argument("--parent-pid", type=int)
    parser.add_argument("--bind-host")
    parser.add_argument("--progress")
    parser.add_argument("--key")
    parser.add_argument("--checkpoint")
    parser.add_argument("--images")
    parser.add_argument("--arch")
    parser.add_argument("--material")
    parser.add_argument("--preprocess-out")
    args = parser.parse_args(argv)
    inputs = RoleInputs(checkpoint=args.checkpoint, images=args.images, arch=args.arch)
    material = MaterialUse(record_to=args.preprocess_out, replay_from=args.material)
    sys.exit(role_main(args.config, args.cluster, args.role, args.report, args.parent_pid,
                       args.bind_host, args.progress, args.key, inputs, material))


if __name__ == "__main__":
    main()
