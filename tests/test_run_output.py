"""What `privit run` and `privit report` print and write: the summary first (at most 30 lines
without --details, no temp or site-packages paths), the JSON's schema version, versions and
command line, the progress lines on a non-terminal stderr, and `privit report` on reports
of schema version 1 (tests/data/report_v1, from an mlp run before the field existed) and
of the current one."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import privit
from privit.launch.progress import read_events, status_line
from privit.launch.report import SCHEMA_VERSION
from privit.launch.report_text import format_report

PRIVIT = [sys.executable, "-m", "privit.launch.cli"]
OLD = Path(__file__).parent / "data" / "report_v1"
LEAKS = re.compile(r"/tmp/|site-packages|privit-run-")


def run_cli(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(PRIVIT + args, capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One default `privit run` (the digits ViT) with relative output paths, from its folder."""
    folder = tmp_path_factory.mktemp("run")
    proc = run_cli(["run", "--json", "r.json", "--plot", "cost.png"], cwd=folder)
    assert proc.returncode == 0, proc.stderr
    return proc, folder


def test_default_run_prints_a_short_summary_without_paths(default_run: Any) -> None:
    proc, _ = default_run
    lines = proc.stdout.splitlines()
    assert len(lines) <= 30, proc.stdout
    heads = [line.split()[0] for line in lines if line.strip()]
    for head in ("model", "parties", "security", "auto", "accuracy", "bytes", "rounds", "wall",
                 "projected"):
        assert head in heads, (head, proc.stdout)
    assert lines[0] == "model       vit (vit_digits)"
    assert "(each summed over the parties)" in proc.stdout
    assert "comparisons" in proc.stdout  # what auto picked
    assert "scope" not in heads  # the per-layer table only with --details
    assert lines[-2:] == ["report written to r.json", "plot written to cost.png"]
    assert not LEAKS.search(proc.stdout), proc.stdout


def test_progress_lines_on_a_non_terminal_stderr(default_run: Any) -> None:
    proc, _ = default_run
    for role in ("party 0", "party 1", "dealer"):
        for phase in ("startup", "handshake", "offline", "online"):
            assert re.search(rf"^{role}: {phase} done \(\d+\.\d\d s\)", proc.stderr, re.M), \
                (role, phase, proc.stderr)
    steps = re.findall(r"^online (\d+)/(\d+) (.*?): [\d.]+ MB sent \(all parties\), (\d+) rounds$",
                       proc.stderr, re.M)
    labels = [label for _, _, label, _ in steps]
    assert labels == ["weights", "embed", "layer 0", "layer 1", "head", "done"], proc.stderr
    report = json.loads((default_run[1] / "r.json").read_text())
    assert int(steps[-1][3]) == report["online"]["rounds"]


def test_json_carries_schema_versions_command_and_choices(default_run: Any) -> None:
    report = json.loads((default_run[1] / "r.json").read_text())
    assert report["schema_version"] == SCHEMA_VERSION == 2
    versions = report["environment"]["versions"]
    assert set(versions) == {"privit", "python", "torch", "numpy", "pyzmq", "libzmq"}
    assert versions["privit"] == privit.__version__
    import zmq

    assert versions["libzmq"] == zmq.zmq_version()
    machine = report["environment"]["machine"]
    assert machine["cores"] >= 1 and machine["cpu"] and machine["os"]
    assert report["command"] == ["privit", "run", "--json", "r.json", "--plot", "cost.png"]
    assert report["seed"] == 0
    compare = report["auto_choices"]["compare"]
    # every comparison is counted once per network it was evaluated on
    assert sum(compare["run"].values()) == sum(compare["lan"].values()) == sum(compare["wan"].values())
    assert sum(compare["run"].values()) > 0
    assert (default_run[1] / "cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_details_show_the_table_with_units(default_run: Any) -> None:
    report = json.loads((default_run[1] / "r.json").read_text())
    text = format_report(report, details=True)
    assert "online MB (sum of parties)" in text and "dealer MB (sum)" in text
    assert "wall ms" in text and "rounds" in text
    top = {s["name"]: s for s in report["scopes"]}
    row = next(line for line in text.splitlines() if line.startswith("layer0 "))
    assert row.split()[1] == f"{top['layer0']['bytes'] / 1e6:.3f}"


def test_report_reads_old_role_reports(tmp_path: Path) -> None:
    for name in ("dealer.json", "p0.json", "p1.json"):
        shutil.copy(OLD / name, tmp_path / name)
    proc = run_cli(["report", "dealer.json", "p0.json", "p1.json", "--json", "merged.json",
                    "--details"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "model       mlp"
    assert "online MB (sum of parties)" in proc.stdout
    merged = json.loads((tmp_path / "merged.json").read_text())
    old_run = json.loads((OLD / "run.json").read_text())
    assert merged["schema_version"] == SCHEMA_VERSION
    # the same numbers as the old run's own merged report
    for key in ("online", "offline"):
        assert merged[key]["bytes"] == old_run[key]["bytes"]
    assert merged["online"]["rounds"] == old_run["online"]["rounds"] == 4
    assert not LEAKS.search(proc.stdout), proc.stdout


@pytest.mark.parametrize("version", [None, SCHEMA_VERSION, SCHEMA_VERSION + 1])
def test_report_prints_a_run_report_of_each_version(tmp_path: Path, version: int | None) -> None:
    report = json.loads((OLD / "run.json").read_text())
    assert "schema_version" not in report
    if version is not None:
        report["schema_version"] = version
    (tmp_path / "run.json").write_text(json.dumps(report))
    proc = run_cli(["report", "run.json"], cwd=tmp_path, timeout=60)
    if version is not None and version > SCHEMA_VERSION:
        assert proc.returncode == 1
        assert f"schema version {version}" in proc.stderr and "upgrade privit" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "model       mlp"
    assert "rounds      4 online (critical path)" in proc.stdout
    assert "scope" not in proc.stdout


def test_status_lines_and_torn_progress_lines() -> None:
    event = {"role": "party 0", "event": "phase", "phase": "offline", "s": 1.234,
             "bytes": 2_000_000, "rounds": 1, "online_rounds": 0, "in_bytes": 58_100_000}
    assert status_line(event) == "party 0: offline done (1.23 s), 58.1 MB in, 2.0 MB sent so far"
    text = json.dumps(event) + "\n" + '{"role": "party 0", "event": "st' + "\n[1, 2]\n"
    assert read_events(text) == [event]
