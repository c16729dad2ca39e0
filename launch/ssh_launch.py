"""`privit launch CLUSTER`: one command that runs every role of a cluster file on its host.

1. Read the cluster file and each role's target (launch/launch_plan.py): a local process for
   a role on localhost without an `ssh` object, else SSH to its host (asyncssh).
2. Check every secret key the launcher hands out before anything starts: it must be the pair
   of the role's public key in the cluster file. Only that role's key goes to that role's
   host; a role whose key is already on its host (`ssh.secret_key`) gets none.
3. Prepare every role (a private run folder with config.json, cluster.json and, where the
   launcher holds it, the role's key), then start them all under launch/role_supervisor.py.
   Party 0 gets `--checkpoint`, party 1 `--images`: paths on their own hosts, passed as
   they are; the files never travel.
4. Stream each role's output prefixed `[party 0] `, `[party 1] `, `[dealer] `.
5. On the first role that exits nonzero, or on SIGINT/SIGTERM to the launcher: stop every
   role (its whole process group; a role whose SSH link was lost, over a fresh connection,
   by the pids recorded at its start), remove the run folders, print one line, exit 1 (130
   for SIGINT, 143 for SIGTERM).
6. When all exit 0: read each report.json back into OUT/privit-launch-SESSION/NAME.json,
   remove the run folders, and merge the reports exactly as `privit report` does.
"""
from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from privit.launch.errors import exit_description
from privit.launch.launch_plan import LaunchOptions, RoleTarget, load_targets
from privit.launch.role_inputs import DATA_OWNER, WEIGHT_OWNER
from privit.launch.role_runners import REPORT_FILE, LaunchError, RoleRunner, make_runner
from privit.parties.cluster import Cluster, ClusterError
from privit.parties.config import RunConfig
from privit.parties.keys import KeyFileError, RoleKeys

INTERRUPT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class RoleFailed(RuntimeError):
    """A role exited nonzero; the text names it and says how, in one line."""


class Interrupted(RuntimeError):
    """The launcher got SIGINT or SIGTERM; the text is the signal's name."""


@dataclass
class RolePlan:
    """What one role is started with: its target, its arguments, the secret files it gets."""

    target: RoleTarget
    args: list[str]
    secret_files: dict[str, str] = field(default_factory=dict)


def plan_roles(cfg: RunConfig, cluster_path: str, opts: LaunchOptions) -> tuple[Cluster, list[RolePlan]]:
    """Every role's plan; a one-line ClickException for a bad cluster file or key."""
    try:
        cluster = Cluster.load(cluster_path)
        if cluster.n_parties != cfg.n_parties:
            raise ClusterError(f"the cluster file lists {cluster.n_parties} parties, the run has "
                               f"{cfg.n_parties} (--parties)")
        targets = load_targets(cluster_path, cluster)
        plans = []
        for target in targets:
            args = ["--config", "config.json", "--cluster", "cluster.json",
                    "--role", str(target.role), "--report", REPORT_FILE]
            if target.role == WEIGHT_OWNER and opts.checkpoint:
                args += ["--checkpoint", opts.checkpoint]
            if target.role == DATA_OWNER and opts.images:
                args += ["--images", opts.images]
            plan = RolePlan(target, args)
            if cfg.secure:
                _plan_key(plan, cluster, opts.keys_folder(cluster_path))
            plans.append(plan)
    except (ClusterError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None
    return cluster, plans


def _plan_key(plan: RolePlan, cluster: Cluster, keys_folder: Path) -> None:
    target = plan.target
    if target.ssh is not None and target.ssh.secret_key:
        plan.args += ["--key", target.ssh.secret_key]  # on that host; its role checks it
        return
    path = keys_folder / f"{target.key_name}.key"
    keys = RoleKeys.load(path)
    cluster.check_own_key(target.role, keys)
    if target.ssh is None:
        plan.args += ["--key", str(path.resolve())]
    else:
        plan.secret_files[path.name] = path.read_text()
        plan.args += ["--key", path.name]


def _exit_text(name: str, code: int, last_line: str | None) -> str:
    return f"{name} {exit_description(code)}" + (f" ({last_line})" if last_line else "")


async def _run_all(plans: list[RolePlan], files: dict[str, str]) -> list[str]:
    """Run every role to the end; their reports' text, by role. RoleFailed, Interrupted or
    LaunchError otherwise, after every role is stopped and its folder removed."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    got_signal: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        if not got_signal:
            got_signal.append(sig.name)
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    last_lines: dict[str, str] = {}
    runners: list[RoleRunner] = [make_runner(p.target, last_lines) for p in plans]
    waits: dict[asyncio.Task[int], RoleRunner] = {}
    try:
        results = await asyncio.gather(*(r.prepare(files, p.secret_files)
                                         for r, p in zip(runners, plans, strict=True)),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        for runner, where in zip(runners, results, strict=True):
            way = "local process" if runner.target.ssh is None else "over ssh"
            click.echo(f"privit launch: {runner.target.name}: {way}, run folder {where}", err=True)
        for runner, plan in zip(runners, plans, strict=True):
            await runner.start(plan.args)
        waits = {asyncio.create_task(r.wait()): r for r in runners}
        pending = set(waits)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                name = waits[task].target.name
                code = task.result()
                if code != 0:
                    raise RoleFailed(_exit_text(name, code, last_lines.get(f"[{name}] ")))
                click.echo(f"privit launch: {name} finished", err=True)
        return list(await asyncio.gather(*(r.fetch_report() for r in runners)))
    except asyncio.CancelledError:
        if got_signal:
            raise Interrupted(got_signal[0]) from None
        raise
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*(r.stop() for r in runners), return_exceptions=True)
        await asyncio.gather(*(r.cleanup() for r in runners), return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def launch_cluster(cfg: RunConfig, cluster_path: str, opts: LaunchOptions,
                   merge: Callable[[list[Path]], None]) -> int:
    """Run every role of the cluster file; returns the launcher's exit status.

    merge: called with the role reports' paths when every role succeeded (`privit report`).
    """
    opts.check(cfg.job.name)
    cluster, plans = plan_roles(cfg, cluster_path, opts)
    files = {"config.json": json.dumps(cfg.to_dict()),
             "cluster.json": json.dumps(cluster.to_dict())}  # without the ssh objects
    try:
        texts = asyncio.run(_run_all(plans, files))
    except RoleFailed as exc:
        click.echo(f"privit launch: failed: {exc}; every role stopped", err=True)
        return 1
    except LaunchError as exc:
        click.echo(f"privit launch: failed: {exc}; every role stopped", err=True)
        return 1
    except Interrupted as exc:
        click.echo(f"privit launch: interrupted by {exc}; every role stopped", err=True)
        return INTERRUPT_CODES.get(str(exc), 1)
    folder = Path(opts.out_dir) / f"privit-launch-{cfg.session_id}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for plan, text in zip(plans, texts, strict=True):
        path = folder / f"{plan.target.key_name}.json"
        path.write_text(text)
        paths.append(path)
    click.echo(f"privit launch: role reports written to {folder}", err=True)
    merge(paths)
    if opts.json_path:
        click.echo(f"report written to {opts.json_path}")
    return 0
