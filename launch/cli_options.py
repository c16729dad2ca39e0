"""The options the role commands share (`privit run`, `party`, `dealer`, `preprocess`,
`launch`) and their one typed result, `RunConfig`; the `--debug` option of every command.

No torch here: `privit --help` and a refused option answer at once.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from privit.launch import vit_spec
from privit.launch.errors import enable_debug
from privit.launch.logging_config import configure_logging
from privit.parties.config import (
    AUTO_OBJECTIVES,
    FROM_PRECISION,
    MAX_FRAC_BITS,
    MIN_FRAC_BITS,
    NETWORK_PRESETS,
    JobSpec,
    RunConfig,
    network_from_options,
)


def parse_params(values: tuple[str, ...]) -> dict[str, Any]:
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
        click.option("--frac-bits", default=None,
                     type=click.IntRange(MIN_FRAC_BITS, MAX_FRAC_BITS),
                     help="fixed-point fractional bits [16; vit --precision precise: 20]"),
        click.option("--truncation", type=click.Choice(["auto", "exact", "local", "dealer"]),
                     default="auto", show_default=True,
                     help="auto = exact for 2 parties (1 round of 1 bit per element), dealer "
                          "otherwise; local = SecureML's, no round but a rare failure "
                          "(docs/arithmetic.md; refused with vit --precision precise)"),
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
                 rtt_ms: float | None, bandwidth_mbps: float | None, frac_bits: int | None,
                 truncation: str, timeout_s: float, max_wait_s: float, seed: int,
                 session_id: str | None, insecure: bool, max_frame_mb: int, max_buffer_mb: int,
                 memory_budget_mb: int, default_session: str,
                 auto_objective: str = "whole") -> RunConfig:
    try:
        job_params = parse_params(params)
        if job == "vit":  # typed and checked once, so every role hashes the same values
            job_params = vit_spec.VitSpec.from_params(job_params).to_params()
        return RunConfig(  # unnamed bits and truncation "auto" follow the vit job's precision
            n_parties=n_parties, truncation=truncation,
            frac_bits=FROM_PRECISION if frac_bits is None else frac_bits,
            job=JobSpec.make(job, **job_params),
            network=network_from_options(network, rtt_ms, bandwidth_mbps),
            timeout_s=timeout_s, max_wait_s=max_wait_s, session_id=session_id or default_session, seed=seed,
            channels="insecure" if insecure else "curve", max_frame_mb=max_frame_mb,
            max_buffer_mb=max_buffer_mb, memory_budget_mb=memory_budget_mb,
            auto_objective=auto_objective,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def start_logging() -> None:
    """Configure the log from the environment (launch/logging_config.py); a bad
    PRIVIT_LOG_LEVEL is a usage error."""
    try:
        configure_logging()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _debug_callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        enable_debug()
        start_logging()


DEBUG_OPTION = click.option(
    "--debug", is_flag=True, expose_value=False, is_eager=True, callback=_debug_callback,
    help="on an unexpected error, print the full traceback (every role's, for `run`), and "
         "log at DEBUG level; same as the environment variable PRIVIT_DEBUG=1",
)


def merge_vit_options(options: dict[str, Any]) -> None:
    """Move the typed ViT options into --param KEY=VALUE pairs (in place); refuse them, and
    a clash with --param, where they do not apply."""
    given = {k: options.pop(k) for k in vit_spec.CLI_FIELDS}
    given = {k: v for k, v in given.items() if v is not None}
    if given and options["job"] != "vit":
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise click.UsageError(f"{flags} apply to the vit job only (this is --job {options['job']})")
    clash = sorted(set(given) & set(parse_params(options["params"])))
    if clash:
        raise click.UsageError(f"{', '.join(clash)} given both as an option and as --param")
    options["params"] = tuple(options["params"]) + tuple(f"{k}={v}" for k, v in given.items())


def check_job_parties(cfg: RunConfig) -> None:
    """Refuse, before anything starts, a party count the job cannot run with."""
    if cfg.job.name == "vit" and cfg.n_parties != 2:
        raise click.UsageError(f"the vit job runs with exactly 2 parties (its comparisons are "
                               f"2-party protocols), not --parties {cfg.n_parties}")


def shown_path(path: str) -> str:
    """A path the user gave, as they gave it when relative, else relative to the current
    directory when it lies below it (absolute otherwise: it is theirs)."""
    given = Path(path)
    if not given.is_absolute():
        return path
    try:
        return str(given.relative_to(Path.cwd()))
    except ValueError:
        return path
