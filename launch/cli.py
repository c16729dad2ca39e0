"""The `privit` command line: run, party, dealer, report, arch, keygen, cluster, bench,
calibrate, ...

Each command imports what it runs inside its own function, after its options are checked:
the module itself loads no torch, so `privit --help` and a refused option answer at once
(~0.2 s) instead of after torch's ~2 s.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from privit import __version__
from privit.launch import launch_plan, vit_spec
from privit.launch.errors import debug_enabled, describe, enable_debug, format_traceback
from privit.launch.logging_config import LOG_LEVEL_ENV, configure_logging
from privit.launch.role_inputs import DATA_OWNER, WEIGHT_OWNER, RoleInputs
from privit.parties.config import (
    AUTO_OBJECTIVES,
    MAX_FRAC_BITS,
    MIN_FRAC_BITS,
    NETWORK_PRESETS,
    JobSpec,
    RunConfig,
    network_from_options,
)


def _parse_params(values: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--param")
        params[key] = int(value) if value.lstrip("-").isdigit() else value
    return params


def run_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every role must agree on (they are hashed into the handshake)."""
    options = [
        click.option("--job", default="vit", show_default=True,
                     help="job to run (see `privit jobs`)"),
        click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                     help="job parameter, repeatable (e.g. --param rows=65)"),
        click.option("--parties", "n_parties", default=2, show_default=True, type=int,
                     help="number of computing parties"),
        click.option("--network", default="none", show_default=True,
                     type=click.Choice(sorted(NETWORK_PRESETS)),
                     help="emulated network preset (in the transport)"),
        click.option("--rtt-ms", type=float, default=None, help="custom round-trip time (ms)"),
        click.option("--bandwidth-mbps", type=float, default=None,
                     help="custom bandwidth (Mbit/s, 0 = unlimited)"),
        click.option("--frac-bits", default=16, show_default=True,
                     type=click.IntRange(MIN_FRAC_BITS, MAX_FRAC_BITS),
                     help="fixed-point fractional bits"),
        click.option("--truncation", type=click.Choice(["auto", "local", "dealer"]),
                     default="auto", show_default=True,
                     help="auto = local for 2 parties, dealer otherwise"),
        click.option("--timeout", "timeout_s", default=60.0, show_default=True, type=float,
                     help="seconds a peer may be silent (no message and no heartbeat: dead, "
                          "frozen, unreachable or never started) before the run fails; a "
                          "peer that is alive and working is waited for"),
        click.option("--max-wait", "max_wait_s", default=3600.0, show_default=True, type=float,
                     help="seconds one wait may take even though the peer is alive (it answers "
                          "heartbeats but sends nothing: a deadlock)"),
        click.option("--seed", default=0, show_default=True, type=int,
                     help="seed of the job's random inputs"),
        click.option("--session-id", default=None, help="run id every role must share"),
        click.option("--insecure", is_flag=True, default=False,
                     help="plain TCP instead of CURVE: no authentication, no encryption; "
                          "for measurements only (every role must agree)"),
        click.option("--max-frame-mb", default=1024, show_default=True,
                     type=click.IntRange(min=1),
                     help="largest array frame a role sends or accepts (MiB)"),
        click.option("--max-buffer-mb", default=2048, show_default=True,
                     type=click.IntRange(min=1),
                     help="most a peer may send ahead of what a role has read (MiB)"),
        click.option("--auto-objective", default="whole", show_default=True,
                     type=click.Choice(list(AUTO_OBJECTIVES)),
                     help="what auto's choice of comparison protocol minimises: the whole "
                          "run (online + the dealer's key generation and transfer) or the "
                          "online phase only (material dealt ahead of time)"),
        click.option("--memory-budget-mb", default=2048, show_default=True,
                     type=click.IntRange(min=64),
                     help="resident memory each party may use (MiB): the dealer's material "
                          "streams in during the online phase when it would not fit"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_config(job: str, params: tuple[str, ...], n_parties: int, network: str,
                 rtt_ms: float | None, bandwidth_mbps: float | None, frac_bits: int,
                 truncation: str, timeout_s: float, max_wait_s: float, seed: int,
                 session_id: str | None, insecure: bool, max_frame_mb: int, max_buffer_mb: int,
                 memory_budget_mb: int, default_session: str,
                 auto_objective: str = "whole") -> RunConfig:
    if truncation == "auto":
        truncation = "local" if n_parties == 2 else "dealer"
    try:
        job_params = _parse_params(params)
        if job == "vit":  # typed and checked once, so every role hashes the same values
            job_params = vit_spec.VitSpec.from_params(job_params).to_params()
        return RunConfig(
            n_parties=n_parties, frac_bits=frac_bits, truncation=truncation,
            job=JobSpec.make(job, **job_params),
            network=network_from_options(network, rtt_ms, bandwidth_mbps),
            timeout_s=timeout_s, max_wait_s=max_wait_s, session_id=session_id or default_session, seed=seed,
            channels="insecure" if insecure else "curve", max_frame_mb=max_frame_mb,
            max_buffer_mb=max_buffer_mb, memory_budget_mb=memory_budget_mb,
            auto_objective=auto_objective,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _start_logging() -> None:
    """Configure the log from the environment (launch/logging_config.py); a bad
    PRIVIT_LOG_LEVEL is a usage error."""
    try:
        configure_logging()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _debug_callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        enable_debug()
        _start_logging()


DEBUG_OPTION = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_debug_callback,
    help="on an unexpected error, print the full traceback (every role's, for `run`), and "
         "log at DEBUG level; same as the environment variable PRIVIT_DEBUG=1",
)


@click.group(epilog=f"Environment: {LOG_LEVEL_ENV}=DEBUG|INFO|WARNING (default WARNING) sets "
                    "the diagnostic log on stderr; PRIVIT_DEBUG=1 is --debug.")
@click.version_option(__version__, prog_name="privit")
@DEBUG_OPTION
def main() -> None:
    """privit: private ViT inference over ZeroMQ with honest cost accounting."""
    _start_logging()


_FAST_EXIT = {"enabled": False}


def _fast_exit(code: int) -> None:
    """End a console run at once, skipping the interpreter's teardown (~0.6 s with torch
    loaded; nothing of ours needs it: outputs are written and closed, every role reaped).
    A no-op where the CLI runs inside another program (click's test runner)."""
    if _FAST_EXIT["enabled"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_cli() -> None:
    """The `privit` console script: click's own errors as click shows them, and any other
    exception as one line (type, message, module:line); the traceback with --debug."""
    _FAST_EXIT["enabled"] = True
    try:
        main(prog_name="privit")
    except Exception as exc:
        click.echo(f"privit: error: {describe(exc)}", err=True)
        if debug_enabled():
            click.echo(format_traceback(exc), err=True)
        sys.exit(1)


def merge_vit_options(options: dict[str, Any]) -> None:
    """Move the typed ViT options into --param KEY=VALUE pairs (in place); refuse them, and
    a clash with --param, where they do not apply."""
    given = {k: options.pop(k) for k in vit_spec.CLI_FIELDS}
    given = {k: v for k, v in given.items() if v is not None}
    if given and options["job"] != "vit":
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise click.UsageError(f"{flags} apply to the vit job only (this is --job {options['job']})")
    clash = sorted(set(given) & set(_parse_params(options["params"])))
    if clash:
        raise click.UsageError(f"{', '.join(clash)} given both as an option and as --param")
    options["params"] = tuple(options["params"]) + tuple(f"{k}={v}" for k, v in given.items())


def check_job_parties(cfg: RunConfig) -> None:
    """Refuse, before anything starts, a party count the job cannot run with."""
    if cfg.job.name == "vit" and cfg.n_parties != 2:
        raise click.UsageError(f"the vit job runs with exactly 2 parties (its comparisons are "
                               f"2-party protocols), not --parties {cfg.n_parties}")


@main.command()
@run_options
@vit_spec.click_options
@DEBUG_OPTION
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the report here")
@click.option("--keep-dir", type=click.Path(file_okay=False), default=None,
              help="keep the roles' configs, reports and stderr in this folder")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="vit: MPCViT .pth.tar to run, given to party 0 only "
                   "(default: the embedded digits model)")
@click.option("--images", type=click.Path(exists=True, dir_okay=False), default=None,
              help="vit: torch file with a float tensor (B, C, H, W) or {'images', 'labels'}, "
                   "given to party 1 only")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="write a PNG of the cost per layer (online bytes, dealer bytes, rounds)")
@click.option("--save-logits", "logits_path", type=click.Path(dir_okay=False), default=None,
              help="vit: torch.save the private and plaintext logits (and labels) here")
@click.option("--details", is_flag=True, default=False,
              help="also print the per-layer table and per-role figures (always in --json)")
@click.option("--material", "material_dir", type=click.Path(exists=True, file_okay=False),
              default=None, help="read each party's dealer material from this folder, written "
                                 "by `privit preprocess` with the same options; no dealer runs "
                                 "and the material is used up")
def run(json_path: str | None, keep_dir: str | None, plot_path: str | None,
        logits_path: str | None, details: bool, material_dir: str | None,
        **options: Any) -> None:
    """Run a job with the dealer and every party as separate local processes.

    With no options: the `vit` job on the embedded digits model and real digits test images.
    Prints a short summary (the per-layer table with --details); progress goes to stderr.
    """
    inputs, cfg = _local_run_config(options, logits_path)
    # Imported only now, after the options are checked: they pull in torch (~2 s).
    from privit.launch.coordinator import RunFailed, run_local
    from privit.launch.environment import command_line
    from privit.launch.report_text import format_report
    from privit.parties.resources import process_start_time
    if not cfg.secure:
        from privit.launch.roles import INSECURE_WARNING

        click.secho(f"privit run: {INSECURE_WARNING}", err=True, fg="red", bold=True)
    try:
        result = run_local(cfg, keep_dir=keep_dir, inputs=inputs,
                           progress="live" if sys.stderr.isatty() else "lines",
                           command_start=process_start_time(),
                           fork_roles=os.environ.get("PRIVIT_SPAWN", "fork") != "exec",
                           material_dir=material_dir)
    except RunFailed as exc:
        click.echo(f"privit run: failed: {exc}", err=True)
        if debug_enabled() and exc.details:
            click.echo(exc.details, err=True)
        sys.exit(1)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    reference = result.reference
    report = result.report
    report["command"] = command_line()
    click.echo(format_report(report, details=details))
    if report["offline"].get("source") == "disk":
        off = report["offline"]
        click.echo(f"dealer material: {off['from_disk_bytes'] / 1e6:.2f} MB read from disk "
                   f"(material {off['material_id'][:12]}, now used up); no dealer ran")
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1))
        click.echo(f"report written to {_shown_path(json_path)}")
    if plot_path:
        from privit.launch.plots import plot_layer_costs

        plot_layer_costs(report, plot_path)
        click.echo(f"plot written to {_shown_path(plot_path)}")
    if logits_path:
        import torch

        saved = {"mpc_logits": result.outputs["logits"]}
        if reference is not None:
            saved["plain_logits"] = reference["logits"]
            if "labels" in reference:
                saved["labels"] = reference["labels"].round().to(torch.int64)
        torch.save(saved, logits_path)
        click.echo(f"logits written to {_shown_path(logits_path)}")
    _fast_exit(0)


def _local_run_config(options: dict[str, Any],
                      logits_path: str | None = None) -> tuple[RoleInputs, RunConfig]:
    """`run` and `preprocess`: the roles' inputs and the checked run config (options are
    consumed in place)."""
    import uuid

    inputs = RoleInputs(checkpoint=options.pop("checkpoint"), images=options.pop("images"))
    if options["job"] != "vit" and (logits_path or inputs.checkpoint or inputs.images):
        named = [*(["save-logits"] if logits_path else []),
                 *(["checkpoint"] if inputs.checkpoint else []), *(["images"] if inputs.images else [])]
        flags = ", ".join("--" + k for k in named)
        raise click.UsageError(f"{flags} apply to the vit job only (this is --job {options['job']})")
    merge_vit_options(options)
    cfg = build_config(**options, default_session=uuid.uuid4().hex[:12])
    check_job_parties(cfg)
    return inputs, cfg


@main.command()
@run_options
@vit_spec.click_options
@DEBUG_OPTION
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="folder for the material files (party-0.material, party-1.material, ...)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the summary here")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="vit: the model (party 0 announces its public architecture from it)")
@click.option("--images", type=click.Path(exists=True, dir_okay=False), default=None,
              help="vit: party 1's images file (it announces their batch size)")
def preprocess(out_dir: str, json_path: str | None, **options: Any) -> None:
    """Run the dealer and the parties' offline phase only, writing each party's dealer
    material to --out for one later `privit run --material` with the same options."""
    inputs, cfg = _local_run_config(options)
    from privit.launch.coordinator import RunFailed, preprocess_local
    from privit.parties.resources import process_start_time
    try:
        summary = preprocess_local(cfg, out_dir, inputs=inputs, command_start=process_start_time(),
                                   fork_roles=os.environ.get("PRIVIT_SPAWN", "fork") != "exec")
    except RunFailed as exc:
        click.echo(f"privit preprocess: failed: {exc}", err=True)
        if debug_enabled() and exc.details:
            click.echo(exc.details, err=True)
        sys.exit(1)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for p in summary["parties"]:
        click.echo(f"{p['role']}: {p['path']} ({p['payload_bytes'] / 1e6:.2f} MB of material, "
                   f"{p['requests']} requests)")
    click.echo(f"material {summary['material_id']} for config {summary['config_hash']}; "
               f"{summary['wall_s']:.2f} s; single-use: `privit run --material {out_dir}` "
               f"with the same options")
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=1))
    _fast_exit(0)


def _shown_path(path: str) -> str:
    """A path the user gave, as they gave it when relative, else relative to the current
    directory when it lies below it (absolute otherwise: it is theirs)."""
    given = Path(path)
    if not given.is_absolute():
        return path
    try:
        return str(given.relative_to(Path.cwd()))
    except ValueError:
        return path


def _role_command(role_of: Callable[[RunConfig, int | None], int]) -> Callable[..., None]:
    def command(cluster: str, role_id: int | None, json_path: str | None, bind_host: str | None,
                key_path: str | None, checkpoint: str | None = None, images: str | None = None,
                arch: str | None = None, material: str | None = None,
                preprocess_out: str | None = None, **options: Any) -> None:
        merge_vit_options(options)
        cfg = build_config(**options, default_session="cluster")
        check_job_parties(cfg)
        role = role_of(cfg, role_id)
        who = cfg.role_name(role)
        # Each role takes only its own secret: checked here, before any socket exists.
        if checkpoint and role != WEIGHT_OWNER:
            raise click.UsageError(f"--checkpoint is party 0's (the model owner's); {who} "
                                   f"must not hold the weights")
        if images and role != DATA_OWNER:
            raise click.UsageError(f"--images are party 1's (the client's); {who} must not "
                                   f"hold the images")
        if (checkpoint or images or arch) and cfg.job.name != "vit":
            raise click.UsageError("--checkpoint, --images and --arch apply to the vit job only")
        if cfg.secure and key_path is None:
            raise click.UsageError(f"{who} needs --key FILE (its secret key; "
                                   f"`privit cluster init` writes one per role), or --insecure")
        if material and preprocess_out:
            raise click.UsageError("--material and --preprocess-out exclude each other")
        inputs = RoleInputs(checkpoint=checkpoint, images=images, arch=arch)
        # Imported only now, after every check: it pulls in torch (~2 s).
        from privit.launch.roles import MaterialUse, role_main

        sys.exit(role_main(cfg, cluster, role, json_path, bind_host=bind_host, key_path=key_path,
                           inputs=inputs, material=MaterialUse(preprocess_out, material)))
    return command


def _party_role(cfg: RunConfig, role_id: int | None) -> int:
    if role_id is None or not 0 <= role_id < cfg.n_parties:
        raise click.UsageError(f"--id must be in 0..{cfg.n_parties - 1}")
    return role_id


CLUSTER_OPTION = click.option("--cluster", required=True, type=click.Path(exists=True, dir_okay=False),
                              help="JSON file with the host and port of every role")
JSON_OPTION = click.option("--json", "json_path", type=click.Path(dir_okay=False),
                           help="write this role's report here (else print it)")
KEY_OPTION = click.option("--key", "key_path", default=None, type=click.Path(dir_okay=False),
                          help="this role's secret key file (NAME.key, mode 0600)")
BIND_OPTION = click.option("--bind-host", default=None,
                           help="address to bind (default: this role's host in the cluster file; "
                                "0.0.0.0 to listen on every interface)")


ARCH_OPTION = click.option("--arch", type=click.Path(exists=True, dir_okay=False), default=None,
                           help="vit: pin the public architecture (a `privit arch --out` file); "
                                "party 0 announcing another one is refused")


@main.command()
@CLUSTER_OPTION
@click.option("--id", "role_id", required=True, type=int, help="this party's id (0-based)")
@JSON_OPTION
@BIND_OPTION
@KEY_OPTION
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="vit, party 0 only: the model to run (default: the embedded digits model)")
@click.option("--images", type=click.Path(exists=True, dir_okay=False), default=None,
              help="vit, party 1 only: torch file of images (default: digits test images "
                   "for a digits model, else seeded random images)")
@ARCH_OPTION
@click.option("--preprocess-out", type=click.Path(dir_okay=False), default=None,
              help="offline phase only: write this party's dealer material to FILE for a "
                   "later run with --material (the dealer runs as usual)")
@click.option("--material", type=click.Path(dir_okay=False), default=None,
              help="read this party's dealer material from FILE (written with "
                   "--preprocess-out); no dealer takes part; the file is used up")
@run_options
@vit_spec.click_options
@DEBUG_OPTION
def party(**kwargs: Any) -> None:
    """Run one party of a multi-machine run (see README: across machines)."""
    _role_command(_party_role)(**kwargs)


@main.command()
@CLUSTER_OPTION
@JSON_OPTION
@BIND_OPTION
@KEY_OPTION
@ARCH_OPTION
@run_options
@vit_spec.click_options
@DEBUG_OPTION
def dealer(**kwargs: Any) -> None:
    """Run the dealer of a multi-machine run."""
    _role_command(lambda cfg, _: cfg.dealer_id)(role_id=None, **kwargs)


def _read_role_report(path: Path) -> dict[str, Any]:
    """A role's JSON report, checked for the fields `report` needs; else a one-line error."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path} is not a privit role report: {exc}") from None
    needed = ("role", "name", "ok")
    if not isinstance(data, dict) or any(k not in data for k in needed):
        raise click.ClickException(
            f"{path} is not a privit role report (a role report has the fields {', '.join(needed)})")
    if data["ok"] and not isinstance(data.get("config"), dict):
        raise click.ClickException(f"{path} is not a privit role report: no 'config' object")
    return data


def _is_run_report(data: Any) -> bool:
    """A merged run report (`privit run --json`, `privit report --json`), not a role's."""
    return isinstance(data, dict) and all(k in data for k in ("job", "online", "scopes"))


@main.command()
@click.argument("role_reports", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the merged report")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="vit: the model, to add the accuracy against plaintext (whoever merges "
                   "needs both the model and the images for that)")
@click.option("--images", type=click.Path(exists=True, dir_okay=False), default=None,
              help="vit: party 1's images file, for the accuracy against plaintext")
@click.option("--details", is_flag=True, default=False,
              help="also print the per-layer table and per-role figures")
def report(role_reports: tuple[str, ...], json_path: str | None, checkpoint: str | None,
           images: str | None, details: bool) -> None:
    """Merge the role reports of a multi-machine run (every party's and the dealer's), or
    print one run report (`privit run --json`). Reads every schema version so far.

    ROLE_REPORTS: the JSON file each role wrote with its --json, one per role (or one run
    report).
    """
    from privit.launch.environment import environment
    from privit.launch.report import build_report, report_version
    from privit.launch.report_text import format_report

    if len(role_reports) == 1:
        path = Path(role_reports[0])
        try:
            single = json.loads(path.read_text())
        except (OSError, ValueError):
            single = None  # _read_role_report below says what is wrong with it
        if _is_run_report(single):
            try:
                report_version(single)
                text = format_report(single, details=details)
            except (ValueError, KeyError, TypeError) as exc:
                raise click.ClickException(f"{path} is not a readable run report: "
                                           f"{describe(exc)}") from None
            click.echo(text)
            return
    reports = [_read_role_report(Path(p)) for p in role_reports]
    for p, r in zip(role_reports, reports, strict=True):
        try:
            report_version(r)
        except ValueError as exc:
            raise click.ClickException(f"{p}: {exc}") from None
    failed = [r for r in reports if not r.get("ok")]
    if failed:
        raise click.ClickException("; ".join(f"{r['name']}: {r.get('error')}" for r in failed))
    cfg = RunConfig.from_dict(reports[0]["config"])
    for r in reports[1:]:
        other = RunConfig.from_dict(r["config"])
        if (other.session_id, other.config_hash()) != (cfg.session_id, cfg.config_hash()):
            raise click.ClickException(
                f"{r['name']}'s report is from another run (session {other.session_id!r}, "
                f"config {other.config_hash()}) than {reports[0]['name']}'s "
                f"(session {cfg.session_id!r}, config {cfg.config_hash()})")
    roles = sorted(r["role"] for r in reports)
    # Parties that read preprocessed material ran without a dealer: no dealer report.
    from_disk = all(r.get("material", {}).get("source") == "disk"
                    for r in reports if r["role"] != cfg.dealer_id)
    last = cfg.n_parties - 1 if from_disk else cfg.n_parties
    if roles != list(range(last + 1)):
        raise click.ClickException(f"need a report from every role 0..{last}, got {roles}")
    arch_hashes = sorted({str(r["arch_hash"]) for r in reports if r.get("arch_hash")})
    if len(arch_hashes) > 1:
        raise click.ClickException(f"the role reports name different architectures: {arch_hashes}")
    reference, note = _merge_reference(cfg, reports, RoleInputs(checkpoint=checkpoint, images=images))
    merged = build_report(cfg, reports, reference, environment=environment())
    if note:
        merged["accuracy_note"] = note
    click.echo(format_report(merged, details=details))
    if json_path:
        Path(json_path).write_text(json.dumps(merged, indent=1))
        click.echo(f"report written to {_shown_path(json_path)}")


@main.command("launch")
@click.argument("cluster_path", metavar="CLUSTER", type=click.Path(exists=True, dir_okay=False))
@launch_plan.click_options
@run_options
@vit_spec.click_options
@DEBUG_OPTION
@click.pass_context
def launch(ctx: click.Context, cluster_path: str, **options: Any) -> None:
    """Start every role of CLUSTER on its host over SSH (roles on localhost as local
    processes), stream their output, stop them all on a failure or Ctrl-C, and merge their
    reports as `privit report` does. docs/deploy.md has the cluster file's `ssh` fields."""
    import uuid

    opts = launch_plan.LaunchOptions.pop_from(options)
    merge_vit_options(options)
    cfg = build_config(**options, default_session=uuid.uuid4().hex[:12])
    check_job_parties(cfg)
    from privit.launch.ssh_launch import launch_cluster  # here: it loads asyncssh

    sys.exit(launch_cluster(cfg, cluster_path, opts, lambda paths: ctx.invoke(
        report, role_reports=tuple(map(str, paths)), json_path=opts.json_path,
        checkpoint=None, images=None)))


def _merge_reference(cfg: RunConfig, reports: list[dict[str, Any]],
                     inputs: RoleInputs) -> tuple[dict[str, Any] | None, str]:
    """The plaintext reference for `privit report`, or None and why: it takes the model and
    the images together, which only someone holding both (a test, a benchmark) has."""
    from privit.launch.job_registry import make_job

    by_role = {r["role"]: r for r in reports}
    party1 = by_role.get(DATA_OWNER, {})
    if party1.get("image_source") == "file" and not inputs.images:
        return None, "party 1 ran its own images file; pass it with --images"
    try:
        job = make_job(cfg, inputs)
        fields = job.report_fields()
    except (ValueError, RuntimeError, OSError) as exc:
        return None, f"cannot rebuild the reference: {describe(exc)}"
    owner = by_role.get(WEIGHT_OWNER, {})
    if owner.get("checkpoint_sha256") and fields.get("checkpoint_sha256") != owner["checkpoint_sha256"]:
        return None, "party 0 ran another checkpoint; pass the same file with --checkpoint"
    if owner.get("arch_hash") and fields.get("arch_hash") != owner["arch_hash"]:
        return None, "the model given here has another architecture than party 0's"
    return job.reference(), ""


@main.command("arch")
@click.argument("checkpoint", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", default=None,
              help="registry name: overrides the file's arch, or names a random model")
@click.option("--mu", default=None, type=click.FloatRange(0, 1),
              help="random student: share of ReLU-softmax heads (with --model)")
@click.option("--seed", default=0, show_default=True, type=int, help="seed of a random model")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="also write it as JSON here (for `privit party|dealer --arch`)")
def arch_command(checkpoint: str | None, model: str | None, mu: float | None, seed: int,
                 out_path: str | None) -> None:
    """Print a model's public architecture: what party 1 and the dealer learn of it.

    Shapes, the attention mode of every head (from alpha), MPCViT+ gates, and its hash;
    never a weight. CHECKPOINT defaults to the embedded digits model.
    """
    from privit.launch.job_registry import make_job
    from privit.launch.vit_job import VitJob

    params: dict[str, Any] = {}
    if model:
        params["model"] = model
    if mu is not None:
        params["mu"] = mu
    cfg = RunConfig(job=JobSpec.make("vit", **params), seed=seed)
    try:
        job = make_job(cfg, RoleInputs(role=WEIGHT_OWNER, checkpoint=checkpoint))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    assert isinstance(job, VitJob) and job.arch is not None
    arch = job.arch
    c = arch.config
    click.echo(f"model     {arch.summary()}")
    click.echo(f"shapes    image {c.in_chans}x{c.img_size}x{c.img_size}, patch {c.patch_size}, "
               f"{c.n_tokens} tokens, MLP {c.mlp_hidden}, {c.num_classes} classes")
    if arch.betas is not None:
        linear = sum(1 for row in arch.betas for b in row if b == 0)
        click.echo(f"MPCViT+   {linear} of {c.depth * c.n_tokens} token MLPs linearised")
    click.echo(f"arch hash {arch.digest()}")
    if job.checkpoint_sha256:
        click.echo(f"file      sha256 {job.checkpoint_sha256} (party 0's report carries it)")
    if out_path:
        Path(out_path).write_text(json.dumps({"arch": arch.to_dict(), "arch_hash": arch.digest()},
                                             indent=1) + "\n")
        click.echo(f"wrote {out_path}")


@main.command()
def jobs() -> None:
    """List the jobs `privit run --job` accepts."""
    from privit.launch.job_registry import JOBS
    from privit.launch.job_spec import describe_fields

    for name, cls in sorted(JOBS.items()):
        click.echo(f"{name:<16}{cls.description}")
        for line in describe_fields(cls.spec_class):
            click.echo(f"    --param {line}")


def _register_training_commands() -> None:
    from privit.launch.kernel_commands import KERNEL_COMMANDS
    from privit.launch.key_commands import KEY_COMMANDS
    from privit.launch.profile_commands import PROFILE_COMMANDS
    from privit.launch.tool_commands import TOOL_COMMANDS
    from privit.launch.train_commands import TRAIN_COMMANDS

    for command in (*TOOL_COMMANDS, *TRAIN_COMMANDS, *PROFILE_COMMANDS, *KEY_COMMANDS,
                    *KERNEL_COMMANDS):
        main.add_command(command)


_register_training_commands()

if __name__ == "__main__":
    run_cli()
