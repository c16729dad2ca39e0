"""`privit bench` end to end: one op on real processes, rows with exact bytes and rounds."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PRIVIT = [sys.executable, "-m", "privit.launch.cli"]


def test_bench_one_op_gives_exact_rows(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    proc = subprocess.run(PRIVIT + ["bench", "--ops", "mul", "--reps", "1", "--no-transport",
                                    "--prg", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    mul = next(r for r in rows if r["op"] == "mul")
    # 197x768 Beaver product, 2 parties: one round; each party sends its shares of both
    # masked 197x768 int64 operands in one message with a 56-byte header.
    assert mul["rounds"] == 1
    assert mul["online_bytes"] == 2 * (2 * 197 * 768 * 8 + 56)
    assert mul["offline_bytes"] == 197 * 768 * 8
    assert mul["max_abs_error"] < 1e-3
    prg = [r for r in rows if r["op"] == "prg"]
    assert prg and all(r["gb_per_s"] > 0 for r in prg)


def test_bench_unknown_op_lists_the_known_ones() -> None:
    proc = subprocess.run(PRIVIT + ["bench", "--ops", "mul,no_such_op"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown bench ops ['no_such_op']" in proc.stderr and "'mul'" in proc.stderr
