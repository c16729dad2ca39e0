"""`privit bench` and `privit accuracy`: measurements of the protocols themselves.

Standalone click commands, registered on the main group by launch/cli.py; torch and the
protocols are imported inside the commands, so other commands start fast.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from privit.parties.config import NETWORK_PRESETS, network_from_options

__all__ = ["bench_command", "accuracy_command", "TOOL_COMMANDS"]


def _list_bench_ops(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """`privit bench --list`: every op with its shape and one line, then exit."""
    if not value or ctx.resilient_parsing:
        return
    from privit.launch.bench import BENCH_OPS  # here: it loads torch and the protocols

    width = max(len(name) for name in BENCH_OPS)
    for name, op in BENCH_OPS.items():
        click.echo(f"{name:<{width}}  {op.description} [{op.shape}]")
    click.echo("(with --prg and --transport, on by default, also the PRG's and the "
               "transport's throughput rows)")
    ctx.exit(0)


@click.command("bench")
@click.option("--list", "list_ops", is_flag=True, expose_value=False, is_eager=True,
              callback=_list_bench_ops, help="list the ops --ops accepts, with their shapes, "
                                             "and exit")
@click.option("--network", default="none", show_default=True,
              type=click.Choice(sorted(NETWORK_PRESETS)),
              help="emulated network preset for the op runs (in the transport)")
@click.option("--rtt-ms", type=float, default=None,
              help="custom round-trip time (ms), instead of the preset's")
@click.option("--bandwidth-mbps", type=float, default=None,
              help="custom bandwidth (Mbit/s, 0 = unlimited), instead of the preset's")
@click.option("--ops", default=None,
              help="comma-separated subset of ops (default: all; see --list)")
@click.option("--reps", default=3, show_default=True, type=click.IntRange(min=1),
              help="repetitions per op (best kept)")
@click.option("--transport/--no-transport", default=True, show_default=True,
              help="include transport throughput and round-trip rows")
@click.option("--prg/--no-prg", default=True, show_default=True,
              help="include the PRG's throughput rows (AES-CTR, GB/s per draw size)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="also write the rows as JSON to this file")
def bench_command(network: str, rtt_ms: float | None, bandwidth_mbps: float | None, ops: str | None,
          reps: int, transport: bool, prg: bool, json_path: str | None) -> None:
    """Microbenchmarks of the ops on real processes (2 parties + dealer)."""
    from privit.launch.bench import format_rows
    from privit.launch.bench_runner import run_bench

    net = network_from_options(network, rtt_ms, bandwidth_mbps)
    try:
        rows = run_bench(net, ops.split(",") if ops else None, reps, transport, prg)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(format_rows(rows))
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))
        click.echo(f"wrote {json_path}")


@click.command("accuracy")
@click.option("--out", type=click.Path(dir_okay=False), default="accuracy.md", show_default=True,
              help="where to write the markdown table (the repository's copy is "
                   "docs/accuracy.md: pass --out docs/accuracy.md to regenerate it)")
@click.option("--seed", default=0, show_default=True, type=int,
              help="seed of the random test inputs")
def accuracy_command(out: str, seed: int) -> None:
    """Accuracy table of the non-linear ops against torch float64 (in-memory harness)."""
    from privit.launch.accuracy_table import write_accuracy_table

    rows = write_accuracy_table(Path(out), seed)
    for r in rows:
        click.echo(f"{r['op']:<34}{r['max_abs_error']:>11.2e}{r['max_rel_error']:>11.2e}{r['rounds']:>5}")
    click.echo(f"wrote {out}")


TOOL_COMMANDS = (bench_command, accuracy_command)
"""The commands of this module, registered by launch/cli.py."""
