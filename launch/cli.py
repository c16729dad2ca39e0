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
from typing import Any, NoReturn

import click

from privit import __version__
from privit.launch import launch_plan, vit_spec
from privit.launch.cli_options import (
    DEBUG_OPTION,
    build_config,
    check_job_parties,
    merge_vit_options,
    run_options,
    shown_path,
    start_logging,
)
from privit.launch.errors import debug_enabled, describe, format_traceback
from privit.launch.logging_config import LOG_LEVEL_ENV
from privit.launch.report_commands import report
from privit.launch.role_inputs import DATA_OWNER, WEIGHT_OWNER, RoleInputs
from privit.parties.config import JobSpec, RunConfig


@click.group(epilog=f"Environment: {LOG_LEVEL_ENV}=DEBUG|INFO|WARNING (default WARNING) sets "
                    "the diagnostic log on stderr; PRIVIT_DEBUG=1 is --debug.")
@click.version_option(__version__, prog_name="privit")
@DEBUG_OPTION
def main() -> None:
    """privit: private ViT inference over ZeroMQ with honest cost accounting."""
    start_logging()


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


def _local_run_failed(command: str, exc: Exception) -> NoReturn:
    """End a local run's command: one line per failed role (RunFailed; their tracebacks
    with --debug) or on unusable material (MaterialError) and exit 1, or a usage error for
    a refused option (ValueError)."""
    from privit.launch.coordinator import RunFailed  # here: it loads torch
    from privit.parties.material import MaterialError

    if not isinstance(exc, (RunFailed, MaterialError)):
        raise click.UsageError(str(exc)) from None
    click.echo(f"{command}: failed: {exc}", err=True)
    if debug_enabled() and isinstance(exc, RunFailed) and exc.details:
        click.echo(exc.details, err=True)
    sys.exit(1)


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
    except (RunFailed, ValueError) as exc:
        _local_run_failed("privit run", exc)
    reference = result.reference
    report = result.report
    report["command"] = command_line()
    click.echo(format_report(report, details=details))
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1))
        click.echo(f"report written to {shown_path(json_path)}")
    if plot_path:
        from privit.launch.plots import plot_layer_costs

        plot_layer_costs(report, plot_path)
        click.echo(f"plot written to {shown_path(plot_path)}")
    if logits_path:
        import torch

        saved = {"mpc_logits": result.outputs["logits"]}
        if reference is not None:
            saved["plain_logits"] = reference["logits"]
            if "labels" in reference:
                saved["labels"] = reference["labels"].round().to(torch.int64)
        torch.save(saved, logits_path)
        click.echo(f"logits written to {shown_path(logits_path)}")
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
    except (RunFailed, ValueError) as exc:
        _local_run_failed("privit preprocess", exc)
    for p in summary["parties"]:
        click.echo(f"{p['role']}: {p['path']} ({p['payload_bytes'] / 1e6:.2f} MB of material, "
                   f"{p['requests']} requests)")
    click.echo(f"material {summary['material_id']} for config {summary['config_hash']}; "
               f"{summary['wall_s']:.2f} s; single-use: `privit run --material {out_dir}` "
               f"with the same options")
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=1))
    _fast_exit(0)


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
    from privit.launch.report_commands import REPORT_COMMANDS
    from privit.launch.tool_commands import TOOL_COMMANDS
    from privit.launch.train_commands import TRAIN_COMMANDS

    for command in (*REPORT_COMMANDS, *TOOL_COMMANDS, *TRAIN_COMMANDS, *PROFILE_COMMANDS, *KEY_COMMANDS,
                    *KERNEL_COMMANDS):
        main.add_command(command)


_register_training_commands()

if __name__ == "__main__":
    run_cli()
