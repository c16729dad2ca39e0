"""The command line tells the user what it does: help on every option of every command,
`privit bench --list`, `privit jobs`, the log level, and where each command writes.

Most tests call click's runner in-process (no roles are started); the logging test starts
one real `privit run --job mlp` (about 5 s) to read what the roles log.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from privit.launch.bench import BENCH_OPS
from privit.launch.cli import main
from privit.launch.logging_config import LOG_LEVEL_ENV, configure_logging, log_level

PRIVIT = [sys.executable, "-m", "privit.launch.cli"]


def walk(command: click.Command, path: tuple[str, ...] = ("privit",)
         ) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the tree, with its full name."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from walk(sub, (*path, name))


COMMANDS = dict(walk(main))


def test_the_tree_holds_the_commands_of_every_module() -> None:
    names = {" ".join(path) for path in COMMANDS}
    for expected in ("privit run", "privit bench", "privit jobs", "privit accuracy",
                     "privit pipeline", "privit train", "privit pareto", "privit keygen",
                     "privit cluster init", "privit calibrate"):
        assert expected in names


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_command_and_option_has_help(path: tuple[str, ...]) -> None:
    command = COMMANDS[path]
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
    missing = [param.opts[0] for param in command.params
               if isinstance(param, click.Option) and not param.hidden
               and not (param.help or "").strip()]
    assert missing == [], f"{' '.join(path)}: options without help: {missing}"
    # click arguments take no help of their own: the command's text must name them.
    for param in command.params:
        if isinstance(param, click.Argument):
            assert param.human_readable_name in (command.help or ""), (
                f"{' '.join(path)}: argument {param.human_readable_name} is not described")
    result = CliRunner().invoke(main, [*path[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert "Show this message and exit." in result.output


def test_bench_list_names_every_op_with_a_description() -> None:
    result = CliRunner().invoke(main, ["bench", "--list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    listed = [line.split()[0] for line in lines[:len(BENCH_OPS)]]
    assert listed == list(BENCH_OPS)
    for line, (name, op) in zip(lines, BENCH_OPS.items(), strict=False):
        assert op.description.strip(), f"bench op {name} has no description"
        assert line.split(None, 1)[1] == f"{op.description} [{op.shape}]"


def test_jobs_lists_each_parameter_with_type_and_default() -> None:
    result = CliRunner().invoke(main, ["jobs"])
    assert result.exit_code == 0, result.output
    assert "    --param rows (int) = 197: rows of X" in result.output
    assert "    --param dims (str) = '64,128,10': input, hidden and output widths" in result.output
    assert "    --param gelu (poly|quad|erf) = 'erf': vit: GeLU approximation" in result.output


@pytest.mark.parametrize(("env", "want"), [
    ({}, logging.WARNING),
    ({LOG_LEVEL_ENV: "info"}, logging.INFO),
    ({LOG_LEVEL_ENV: "DEBUG"}, logging.DEBUG),
    ({LOG_LEVEL_ENV: "ERROR"}, logging.ERROR),
    ({LOG_LEVEL_ENV: "WARNING", "PRIVIT_DEBUG": "1"}, logging.DEBUG),
])
def test_log_level_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                              env: dict[str, str], want: int) -> None:
    monkeypatch.delenv(LOG_LEVEL_ENV, raising=False)
    monkeypatch.delenv("PRIVIT_DEBUG", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert log_level() == want
    assert configure_logging() == want
    assert logging.getLogger("privit").level == want
    assert len([h for h in logging.getLogger("privit").handlers
                if getattr(h, "privit_handler", False)]) == 1


def test_log_lines_go_to_the_current_stderr_tagged(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("PRIVIT_DEBUG", raising=False)
    monkeypatch.setenv(LOG_LEVEL_ENV, "INFO")
    # The command configures the log while click's runner has swapped stderr for its own
    # stream; records after it must reach the stderr of the moment, not that stream.
    assert CliRunner().invoke(main, ["jobs"]).exit_code == 0
    logging.getLogger("privit.test").debug("not shown")
    logging.getLogger("privit.test").info("hello %d", 7)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith(" privit[privit] INFO privit.test: hello 7\n")
    assert "not shown" not in captured.err
    monkeypatch.delenv(LOG_LEVEL_ENV)
    configure_logging()


def test_a_bad_log_level_is_a_one_line_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOG_LEVEL_ENV, "loud")
    result = CliRunner().invoke(main, ["jobs"])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (
        "Error: PRIVIT_LOG_LEVEL='loud' is not a log level; use one of DEBUG, INFO, WARNING, "
        "ERROR, CRITICAL")


def test_debug_flag_logs_at_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    # setenv records the variable's state, so the teardown undoes what --debug sets in
    # os.environ (it must not leak into later tests' role processes).
    monkeypatch.setenv("PRIVIT_DEBUG", "0")
    monkeypatch.delenv(LOG_LEVEL_ENV, raising=False)
    result = CliRunner().invoke(main, ["--debug", "jobs"])
    assert result.exit_code == 0, result.output
    assert os.environ["PRIVIT_DEBUG"] == "1"
    assert logging.getLogger("privit").level == logging.DEBUG
    monkeypatch.setenv("PRIVIT_DEBUG", "0")
    assert configure_logging() == logging.WARNING


def test_roles_log_role_endpoints_and_phases_but_no_secret(tmp_path: Path) -> None:
    keep = tmp_path / "run"
    env = {**os.environ, LOG_LEVEL_ENV: "DEBUG"}
    env.pop("PRIVIT_DEBUG", None)
    done = subprocess.run([*PRIVIT, "run", "--job", "mlp", "--keep-dir", str(keep)],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    key_files = [json.loads(path.read_text()) for path in (keep / "keys").glob("*.key")]
    keys = [k[field] for k in key_files for field in ("secret_key", "public_key")]
    assert len(keys) == 6 and all(len(key) == 40 for key in keys)
    for role, name in ((0, "party 0"), (1, "party 1"), (2, "dealer")):
        text = (keep / f"stderr-{role}.txt").read_text()
        lines = [line for line in text.splitlines() if f"privit[{name}]" in line]
        assert any("INFO privit.launch.roles: started: pid " in line for line in lines), text
        assert any(f"DEBUG privit.parties.transport: {name} listens on tcp://127.0.0.1:" in line
                   for line in lines), text
        assert any("handshake done" in line for line in lines), text
        assert "client_key" not in text  # the authenticator's per-link lines stay off
        for key in keys:
            assert key not in text
    dealer = (keep / "stderr-2.txt").read_text()
    # traced, or read from the plan cache if an earlier run of the same job stored it
    assert re.search(r"INFO privit\.launch\.roles: (traced|read the cached plan of) 6 "
                     r"correlation requests", dealer), dealer
    party = (keep / "stderr-0.txt").read_text()
    assert "offline phase" in party and "online phase" in party


def test_accuracy_writes_in_the_current_directory_and_names_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import privit.launch.accuracy_table as table

    monkeypatch.setattr(table, "accuracy_rows", lambda seed: [
        {"op": "exp", "inputs": "[-16, 0]", "max_abs_error": 1e-5, "max_rel_error": 2e-4,
         "rounds": 7, "note": ""}])
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["accuracy"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "wrote accuracy.md"
    assert "| exp | [-16, 0] | 1.00e-05 | 2.00e-04 | 7 |  |" in (
        tmp_path / "accuracy.md").read_text()
    result = runner.invoke(main, ["accuracy", "--out", "sub/table.md"])
    assert result.output.splitlines()[-1] == "wrote sub/table.md"
    assert (tmp_path / "sub" / "table.md").is_file()


def test_keygen_and_cluster_init_name_every_file_they_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["keygen", "alice"])
    assert result.exit_code == 0, result.output
    assert [line.split()[1] for line in result.output.splitlines()] == ["alice.key", "alice.pub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.key", "alice.pub"]
    result = runner.invoke(main, ["cluster", "init", "--out", "c"])
    assert result.exit_code == 0, result.output
    wrote = [line for line in result.output.splitlines() if line.startswith("wrote ")]
    assert wrote[0] == "wrote c/cluster.json (the cluster file)"
    assert len(wrote) == 4
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(
        ["cluster.json", *(f"{n}.{e}" for n in ("party0", "party1", "dealer")
                           for e in ("key", "pub"))])
