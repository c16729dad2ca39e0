"""`privit run` on one machine: start the dealer and n parties as separate OS processes.

Steps:
1. pick free loopback ports (a `Cluster`), write it and the run config to a temp folder;
2. start one `python -m privit.launch.roles` process per role, each in its own process
   group and watching our pid (it exits if we die);
3. wait, showing the roles' progress lines (launch/progress_view.py); when one role
   fails, give the others a short grace period to fail with their own message (they
   are told by an abort message), then kill whatever is left. There
   is no deadline of our own by default: the roles bound every wait themselves (silence
   for --timeout, a dead or frozen peer by heartbeat, a deadlock by --max-wait), so a
   run whose roles are alive and working is never killed for taking long;
4. on success, merge the role reports (launch/report.py) and check the outputs against
   the job's plaintext reference.
No child outlives `run_local`: every exit path (error, timeout, Ctrl-C) stops and reaps
them (SIGTERM, then SIGKILL after STOP_GRACE_S).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from privit.launch.environment import environment
from privit.launch.errors import exit_description
from privit.launch.job_registry import make_job
from privit.launch.jobs import ALL_INPUTS, Job, RoleInputs
from privit.launch.prefork import ForkedRole, PreforkedRoles
from privit.launch.progress_view import ProgressView
from privit.launch.report import build_report, outputs_of
from privit.launch.vit_job import VitJob, prepare_local_run
from privit.parties.cluster import Cluster, key_name
from privit.parties.config import RunConfig
from privit.parties.keys import RoleKeys
from privit.parties.material import MaterialError, check_unused, stale_material
from privit.parties.resources import peak_rss_bytes

FAILURE_GRACE_S = 2.0
STOP_GRACE_S = 3.0
PROGRESS_MODES = ("live", "lines", "off")


class RunFailed(RuntimeError):
    """One or more roles failed; the text is one line naming each failed role and why.

    `details` holds the failed roles' whole stderr (their tracebacks under --debug).
    """

    def __init__(self, summary: str, details: str = "") -> None:
        super().__init__(summary)
        self.details = details


@dataclass
class RoleProcess:
    role: int
    name: str
    proc: subprocess.Popen[bytes] | ForkedRole
    report_path: Path
    stderr_path: Path
    returncode: int | None = None

    def read_report(self) -> dict[str, Any] | None:
        """The role's JSON report, or None if it wrote none (killed, crashed early)."""
        try:
            report = json.loads(self.report_path.read_text())
        except (OSError, ValueError):
            return None
        return report if isinstance(report, dict) else None

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def stderr_tail(self) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        errors = [ln for ln in lines if "error:" in ln]
        return (errors or lines or [""])[-1]


@dataclass
class RunResult:
    """The merged report, party 0's opened outputs and the plaintext reference (float64)."""

    report: dict[str, Any]
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    reference: dict[str, torch.Tensor] | None = None


def _failure_summary(failures: list[RoleProcess]) -> str:
    """One line: each role that failed on its own, with its error; then the roles that
    only stopped because a peer aborted (their error is the peer's, already shown)."""
    causes: list[str] = []
    followers: dict[str, list[str]] = {}
    for rp in failures:
        report = rp.read_report()
        if report is not None and report.get("aborted_by"):
            followers.setdefault(str(report["aborted_by"]), []).append(rp.name)
            continue
        if rp.returncode is not None and rp.returncode < 0:
            why = exit_description(rp.returncode)
        elif report is not None and report.get("error"):
            why = str(report["error"])  # "stopped by SIGTERM" for a role that stopped on it
        else:
            why = rp.stderr_tail() or exit_description(rp.returncode or 0)
        causes.append(f"{rp.name}: {why}")
    for peer, names in followers.items():
        causes.append(f"{', '.join(names)}: stopped after {peer} aborted")
    return "; ".join(causes)


def _stop(roles: list[RoleProcess]) -> None:
    """Stop every role still running: SIGTERM first, so that each cleans up as on an error
    (a preprocess removes its unfinished file, which holds a seed; launch/roles.py), then
    SIGKILL whatever is left after STOP_GRACE_S; reap them all."""
    alive = [rp for rp in roles if rp.proc.poll() is None]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for rp in alive:
            try:
                os.killpg(rp.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                if sig == signal.SIGKILL:
                    rp.proc.kill()
        deadline = time.monotonic() + (STOP_GRACE_S if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(rp.proc.poll() is None for rp in alive):
            time.sleep(0.02)
        alive = [rp for rp in alive if rp.proc.poll() is None]
    for rp in roles:
        rp.returncode = rp.proc.poll()


def _spawn(cfg: RunConfig, workdir: Path, inputs: RoleInputs,
           preforked: PreforkedRoles | None = None,
           material: Mapping[int, list[str]] | None = None,
           with_dealer: bool = True) -> list[RoleProcess]:
    """Start every role: as `python -m privit.launch.roles` processes, or by sending the
    same command lines to `preforked` children (launch/prefork.py). `material`: each
    party's material option (--material FILE or --preprocess-out FILE); `with_dealer`
    False starts the parties only (they read their material from files)."""
    cluster = Cluster.local(cfg.n_parties)
    key_paths: dict[int, Path] = {}
    if cfg.secure:
        # Ephemeral CURVE keys for this run only, handed over as files in our private work
        # folder (0700 from TemporaryDirectory; the secret files themselves are 0600).
        keys = [RoleKeys.generate(key_name(r, cfg.n_parties)) for r in range(cfg.n_parties + 1)]
        cluster = cluster.with_keys(keys)
        for role, k in enumerate(keys):
            key_paths[role], _ = k.save(workdir / "keys")
    cluster_path = workdir / "cluster.json"
    cluster.save(cluster_path)
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(cfg.to_dict()))
    env = dict(os.environ)
    # Each role is one process; keep torch from oversubscribing the cores between them.
    env.setdefault("OMP_NUM_THREADS", "1")
    roles = []
    for role in [*([cfg.dealer_id] if with_dealer else []), *range(cfg.n_parties)]:
        report = workdir / f"report-{role}.json"
        stderr_path = workdir / f"stderr-{role}.txt"
        cmd = [sys.executable, "-m", "privit.launch.roles", "--config", str(config_path),
               "--cluster", str(cluster_path), "--role", str(role), "--report", str(report),
               "--parent-pid", str(os.getpid())]
        cmd += ["--progress", str(progress_path(workdir, role))]
        if role in key_paths:
            cmd += ["--key", str(key_paths[role])]
        cmd += (material or {}).get(role, [])
        own = inputs.for_role(role)  # the checkpoint to party 0 only, the images to party 1 only
        for flag, value in (("--checkpoint", own.checkpoint), ("--images", own.images),
                            ("--arch", own.arch)):
            if value:
                cmd += [flag, str(value)]
        proc: subprocess.Popen[bytes] | ForkedRole
        if preforked is not None:
            proc = preforked.send(cmd[3:], stderr_path, {"OMP_NUM_THREADS": env["OMP_NUM_THREADS"]})
        else:
            with open(stderr_path, "wb") as err:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=err, env=env, start_new_session=True)
        roles.append(RoleProcess(role, cfg.role_name(role), proc, report, stderr_path))
    return roles


def _material_written(roles: list[RoleProcess]) -> list[Path]:
    """The material files that the roles' reports say they wrote (a preprocess party that
    finished its file reports it; one that failed or was stopped wrote none)."""
    paths = []
    for rp in roles:
        material = (rp.read_report() or {}).get("material")
        if isinstance(material, dict) and isinstance(material.get("path"), str):
            paths.append(Path(material["path"]))
    return paths


def progress_path(workdir: Path, role: int) -> Path:
    """Where a role writes its progress lines (launch/progress.py)."""
    return workdir / f"progress-{role}.txt"


def _wait(roles: list[RoleProcess], deadline: float | None, view: ProgressView | None) -> None:
    failed_at: float | None = None
    while True:
        if view is not None:
            view.poll()
        alive = [rp for rp in roles if rp.proc.poll() is None]
        for rp in roles:
            rp.returncode = rp.proc.returncode
        if not alive:
            return
        if failed_at is None and any(rp.returncode not in (None, 0) for rp in roles):
            failed_at = time.monotonic()
        now = time.monotonic()
        overdue = deadline is not None and now > deadline
        if overdue or (failed_at is not None and now - failed_at > FAILURE_GRACE_S):
            _stop(alive)
            if overdue and failed_at is None:
                raise RunFailed("run timed out; killed " + ", ".join(rp.name for rp in alive))
            return
        time.sleep(0.02)


def run_local(cfg: RunConfig, overall_timeout_s: float | None = None,
              keep_dir: str | None = None, progress: str = "off",
              inputs: RoleInputs = ALL_INPUTS, command_start: float | None = None,
              fork_roles: bool = False, material_dir: str | None = None) -> RunResult:
    """Run `cfg`'s job with real processes on 127.0.0.1; return the merged report.

    `inputs` are the roles' own files (one user holds them all here): the checkpoint goes
    to party 0 only, the images to party 1 only. Raises RunFailed (one line per failed
    role) if any role fails, or if the run takes longer than `overall_timeout_s` (None:
    no limit of our own; the roles' liveness rules end a run that cannot finish). The
    report's `total` counts from `command_start` (time.time(); default: now), e.g. the
    CLI process's start. `fork_roles`: fork the roles from this process, which must not
    have run a parallel torch op yet (launch/prefork.py; `privit run` does, to skip three
    torch imports); otherwise each role is a fresh `python -m privit.launch.roles`.
    `progress`: "live" (a rich display on stderr, for a terminal), "lines" (one plain line
    per phase and online step on stderr) or "off" (launch/progress_view.py).
    `material_dir`: the parties read their dealer material from the files a
    `preprocess_local` run wrote there (MATERIAL_NAME) and no dealer is started.
    """
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress must be one of {', '.join(PROGRESS_MODES)}, got {progress!r}")
    command_start = time.time() if command_start is None else command_start
    material = None
    if material_dir is not None:
        paths = [Path(material_dir) / MATERIAL_NAME.format(party=p) for p in range(cfg.n_parties)]
        for path in paths:
            check_unused(path)  # fail at once; each party verifies its file's contents
        material = {p: ["--material", str(path)] for p, path in enumerate(paths)}
    reports, job = _start_and_wait(cfg, overall_timeout_s, keep_dir, progress, inputs,
                                   fork_roles, material, with_dealer=material is None,
                                   reference_early=True)
    party0 = next(r for r in reports if r["role"] == 0)
    reference = job.reference()
    report = build_report(cfg, reports, reference, (command_start, time.time()), environment(),
                          launcher_peak_mb=round(peak_rss_bytes() / 2**20, 1))
    return RunResult(report, outputs_of(party0), reference)


MATERIAL_NAME = "party-{party}.material"


def preprocess_local(cfg: RunConfig, out_dir: str, overall_timeout_s: float | None = None,
                     keep_dir: str | None = None, inputs: RoleInputs = ALL_INPUTS,
                     command_start: float | None = None,
                     fork_roles: bool = False) -> dict[str, Any]:
    """Run the dealer and the parties' offline phase only: party i writes its material to
    `out_dir`/MATERIAL_NAME (parties/material.py) for a later `run_local(material_dir=...)`.
    Returns a summary: material id, each party's file and bytes, the dealer's figures.
    A run that fails or is interrupted leaves no material: the roles are stopped with
    SIGTERM, so each removes its unfinished file (or its finished one, if it is stopped
    while it closes its links), and the files that parties of this run report having
    written are removed here (only those: a file that another preprocess put at one of the
    names meanwhile stays). A seed-holding leftover of an earlier killed run
    in `out_dir` (`stale_material`) is refused with one line that names it."""
    command_start = time.time() if command_start is None else command_start
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {p: out / MATERIAL_NAME.format(party=p) for p in range(cfg.n_parties)}
    existing = [path for path in paths.values() if path.exists()]
    missing = [path for path in paths.values() if not path.exists()]
    if existing and missing:  # a preprocess killed before all its parties finished
        raise MaterialError(f"{existing[0]} was left by a preprocess that did not finish "
                            f"(there is no {missing[0]}); it holds a party's seed: remove it "
                            f"(rm {' '.join(map(str, existing))})")
    if existing:
        raise ValueError(f"{existing[0]} exists; refusing to overwrite material "
                         f"(use a fresh --out folder)")
    for path in paths.values():
        stale = stale_material(path)  # a killed run's seed, or a preprocess running there now
        if stale:
            raise MaterialError(stale)
    material = {p: ["--preprocess-out", str(path)] for p, path in paths.items()}
    written: list[Path] = []
    try:
        reports, _ = _start_and_wait(cfg, overall_timeout_s, keep_dir, "off", inputs,
                                     fork_roles, material, with_dealer=True, written=written)
    except BaseException:
        # A party that finished wrote a whole file, but the run's material is unusable
        # without the others: remove what this run's parties wrote, and nothing else.
        for path in written:
            path.unlink(missing_ok=True)
        raise
    dealer = next(r for r in reports if r["role"] == cfg.dealer_id)
    parties = sorted((r for r in reports if r["role"] != cfg.dealer_id), key=lambda r: r["role"])
    ids = {r["material"]["material_id"] for r in parties}
    if len(ids) != 1:  # pragma: no cover - the parties agree on it in their run
        raise RunFailed(f"the parties wrote material with different ids: {sorted(ids)}")
    return {"material_id": ids.pop(), "out": str(out), "config_hash": cfg.config_hash(),
            "parties": [{"role": r["name"], **r["material"], "offline_wall_s": r["offline_wall_s"],
                         "peak_rss_mb": r.get("peak_rss_mb")} for r in parties],
            "dealer": {"offline_wall_s": dealer.get("offline_wall_s"),
                       "requests": dealer.get("requests"),
                       "offline_bytes": dealer["counters"]["phases"]["offline"]["bytes"],
                       "peak_rss_mb": dealer.get("peak_rss_mb")},
            "wall_s": time.time() - command_start}


def _start_and_wait(cfg: RunConfig, overall_timeout_s: float | None, keep_dir: str | None,
                    progress: str, inputs: RoleInputs, fork_roles: bool,
                    material: Mapping[int, list[str]] | None, with_dealer: bool,
                    written: list[Path] | None = None, reference_early: bool = False,
                    ) -> tuple[list[dict[str, Any]], Job]:
    """Start the roles (forked or fresh), wait for them; their reports and the whole job.
    `written` (a preprocess run): filled, whether the run succeeds or not, with the
    material files that the parties' reports say they wrote. `reference_early`: compute
    the job's plaintext reference while the roles run, then let the job's plaintext model
    go."""
    n_roles = cfg.n_parties + (1 if with_dealer else 0)
    preforked = PreforkedRoles.start(n_roles) if fork_roles else None
    try:
        return _run_roles(cfg, overall_timeout_s, keep_dir, progress, inputs, preforked,
                          material, with_dealer, written, reference_early)
    finally:
        if preforked is not None:
            preforked.dismiss()


def _run_roles(cfg: RunConfig, overall_timeout_s: float | None, keep_dir: str | None,
               progress: str, inputs: RoleInputs, preforked: PreforkedRoles | None,
               material: Mapping[int, list[str]] | None,
               with_dealer: bool, written: list[Path] | None,
               reference_early: bool) -> tuple[list[dict[str, Any]], Job]:
    with tempfile.TemporaryDirectory(prefix="privit-run-") as tmp:
        workdir = Path(keep_dir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        # The job with every input, for the plaintext reference; it fails fast on a bad
        # spec, before any process starts.
        job: Job
        if cfg.job.name == VitJob.name:
            inputs, job = prepare_local_run(cfg, inputs, workdir)
        else:
            job = make_job(cfg, inputs)
        roles: list[RoleProcess] = []
        view = None
        paths = {cfg.role_name(r): progress_path(workdir, r)
                 for r in [*range(cfg.n_parties), *([cfg.dealer_id] if with_dealer else [])]}
        for path in paths.values():
            path.unlink(missing_ok=True)  # a kept folder's last run is not this one's progress
        if progress != "off":
            view = ProgressView(paths, live=progress == "live")
        try:
            roles = _spawn(cfg, workdir, inputs, preforked, material, with_dealer)
            if reference_early:
                # while the roles start: then the model can go (ViT-Base: ~1 GB held by
                # this process for the whole run otherwise)
                job.reference()
                job.release_plaintext()
            deadline = None if overall_timeout_s is None else time.monotonic() + overall_timeout_s
            _wait(roles, deadline, view)
        finally:
            if view is not None:
                view.close()
            _stop(roles)
            if written is not None:
                written += _material_written(roles)
        failures = [rp for rp in roles if rp.returncode != 0]
        if failures:
            details = "\n".join(f"--- {rp.name} stderr ---\n{rp.stderr_text()}" for rp in failures)
            raise RunFailed(_failure_summary(failures), details)
        return [json.loads(rp.report_path.read_text()) for rp in roles], job
