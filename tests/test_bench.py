"""`privit bench` end to end: one op on real processes, rows with exact bytes and rounds."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from privit.parties.wire import Message, encode, message_nbytes

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
    # masked 197x768 int64 operands in one message with a 56-byte header. Then the exact
    # truncation (the default): one round of one packed bit per element each way, and
    # 2 B per element of dealer material (the trunc_wrap share mod 2^16).
    n = 197 * 768
    trunc = message_nbytes(encode(Message("data", 0, 1, "truncate", [np.zeros(n // 8, np.uint8)])))
    assert mul["rounds"] == 2
    assert mul["online_bytes"] == 2 * (2 * n * 8 + 56) + 2 * trunc
    assert mul["offline_bytes"] == n * 8 + n * 2
    assert mul["max_abs_error"] < 1e-3
    prg = [r for r in rows if r["op"] == "prg"]
    assert prg and all(r["gb_per_s"] > 0 for r in prg)


def test_bench_unknown_op_lists_the_known_ones() -> None:
    proc = subprocess.run(PRIVIT + ["bench", "--ops", "mul,no_such_op"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "unknown bench ops ['no_such_op']" in proc.stderr and "'mul'" in proc.stderr


def test_bench_compact_fss_circa_on_real_processes(tmp_path: Path) -> None:
    """Circa's stochastic ReLU on the compact FSS ReLU gate (method "fss_compact"), 197x768
    under the default memory budget: 2 rounds, exact payload bytes, exact dealer bytes."""
    out = tmp_path / "rows.json"
    proc = subprocess.run(PRIVIT + ["bench", "--ops", "stochastic_relu_fss_compact", "--reps", "1",
                                    "--no-transport", "--no-prg", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    row = next(r for r in json.loads(out.read_text()) if r["op"] == "stochastic_relu_fss_compact")
    m = 197 * 768
    # per party: the 14-bit opening (uint16), then the packed bit and x + R (int64)
    payload = 2 * m + (-(-m // 8) + 8 * m)
    assert row["rounds"] == 2
    assert 0 < row["online_bytes"] - 2 * payload <= 4 * 80  # + 4 message headers
    # the bit DCF's CWs on 14 - 1 = 13 bits (113 B) to both parties, party 1 also the MSB(r)
    # bits and its select material (16 B per element)
    assert row["offline_bytes"] == m * (2 * 113 + 16) + -(-m // 8)
    assert row["max_abs_error"] < 1e-4 and row["fault_rate"] < 0.01


def test_bench_compact_adder_relu_and_circa_on_real_processes(tmp_path: Path) -> None:
    """The exact ReLU and Circa's stochastic ReLU on the adder ending in XOR shares (method
    "adder_compact"), 197x768: rounds, exact dealer bytes (31.625 and 19.625 B per element),
    the same online payload as the table-ending adder + one select message."""
    out = tmp_path / "rows.json"
    ops = "relu_adder_compact,stochastic_relu_adder_compact"
    proc = subprocess.run(PRIVIT + ["bench", "--ops", ops, "--reps", "1", "--no-transport",
                                    "--no-prg", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {r["op"]: r for r in json.loads(out.read_text())}
    m = 197 * 768
    exact, circa = rows["relu_adder_compact"], rows["stochastic_relu_adder_compact"]
    assert exact["offline_bytes"] == m * 253 // 8  # 31.625 B per element, all to party 1
    assert circa["offline_bytes"] == m * 157 // 8  # 19.625 B (the 14-bit tree: 3.5 B)
    # 64 bits: 6 tree rounds + bit_select; 14 bits: 4 (2-bit leaves) or 3 (4-bit) + 1
    assert exact["rounds"] == 7 and circa["rounds"] in (5, 4)
    assert 0 < exact["online_bytes"] - 2 * m * 253 // 8 <= 2 * 7 * 80  # + 7 headers each
    assert exact["max_abs_error"] < 1e-4
    assert circa["max_abs_error"] < 1e-4 and circa["fault_rate"] < 0.01


def test_compare_calibration_runs_on_keys_requested_in_pieces() -> None:
    """`python -m privit.launch.bench_ops_compare` measures the FSS ReLU gate on more
    elements than one key request holds (it crashed: each piece got the whole material)."""
    from privit.launch.bench_ops_compare import calibrate
    from privit.protocols.compare import FSS_REQUEST_ELEMENTS

    model = calibrate(numel=FSS_REQUEST_ELEMENTS + 100, reps=1)
    for path in (model.fss_relu, model.fss_drelu, model.adder):
        assert path.per_elem_s >= 0 and path.per_elem_level_s >= 0
    assert model.fss_relu.per_elem_s + model.fss_relu.per_elem_level_s > 0
