"""The launcher end to end: `privit run`, the cluster roles, failures, and cleanup.

Every test starts real OS processes (the CLI in a subprocess, which starts the roles).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mp_harness import error_lines, finish_popens, live_processes

from privit.parties.cluster import Cluster, key_name
from privit.parties.keys import RoleKeys

PRIVIT = [sys.executable, "-m", "privit.launch.cli"]
SLOW_CHAIN = ["--job", "matmul_chain", "--param", "rows=4", "--param",
              "dims=" + ",".join(["8"] * 400), "--network", "wan"]  # 399 rounds x 20 ms


def role_processes(marker: str, coordinator: int) -> list[int]:
    """Pids of live role processes whose command line mentions `marker`: exec'd roles
    (`privit.launch.roles`) and roles forked by `privit run` (launch/prefork.py), which
    carry their coordinator's command line but not its pid."""
    return [p.pid for p in live_processes()
            if marker in p.cmd and p.pid not in (os.getpid(), coordinator)]


def run_cli(args: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(PRIVIT + args, capture_output=True, text=True, timeout=timeout, **kw)


def test_run_mlp_job_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = run_cli(["run", "--job", "mlp", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "max abs error vs plaintext" in proc.stdout
    assert ("rounds      7 online (critical path); truncation exact (1 round per step, never "
            "fails)") in proc.stdout
    report = json.loads(out.read_text())
    import privit

    assert report["privit_version"] == privit.__version__
    for key in ("bytes", "rounds", "wall_s"):
        assert key in report["online"]
    # linear1, square, linear2, each + its exact truncation's round; the output opening
    assert report["online"]["rounds"] == 7
    assert report["offline"]["bytes"] > 0
    assert report["online"]["bytes"] == sum(p["online_bytes"] for p in report["per_party"])
    assert [p["role"] for p in report["per_party"]] == ["party 0", "party 1", "dealer"]
    assert {"lan_s", "wan_s"} <= set(report["projected"])
    assert report["network"]["name"] == "none"
    assert report["accuracy"]["max_abs_error"] < 1e-2
    assert report["accuracy"]["parties_agree"] is True
    names = [s["name"] for s in report["scopes"]]
    assert names == ["input", "linear1", "square", "linear2", "output"]
    # the scopes account for every online byte and round
    assert sum(s["bytes"] for s in report["scopes"]) == report["online"]["bytes"]
    assert sum(s["rounds"] for s in report["scopes"]) == report["online"]["rounds"]


def test_run_three_parties_dealer_truncation(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = run_cli(["run", "--parties", "3", "--job", "matmul_chain", "--param", "rows=5",
                    "--param", "dims=16,32,8", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["config"]["truncation"] == "dealer"
    # 2 matmuls x (1 Beaver round + 1 truncation round) + 1 output opening
    assert report["online"]["rounds"] == 5
    assert report["accuracy"]["max_abs_error"] < 1e-2


def test_run_wan_emulation_takes_at_least_rounds_times_rtt(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = run_cli(["run", "--job", "matmul_chain", "--param", "rows=2", "--param", "dims=4,4,4",
                    "--network", "wan", "--json", str(out)])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    rounds = report["online"]["rounds"]
    assert rounds == 5  # 2 matmuls x (1 Beaver round + 1 exact truncation) + the opening
    # every round here is a symmetric exchange (both parties send, then receive), which
    # waits one one-way latency (RTT / 2 = 20 ms), as with Cheetah's `tc netem` on lo
    assert report["online"]["wall_s"] >= rounds * 0.020
    assert report["online"]["wall_s"] < rounds * 0.020 + 0.25
    assert report["network"]["rtt_ms"] == pytest.approx(40.0)


def test_run_bad_options_are_usage_errors() -> None:
    proc = run_cli(["run", "--job", "nope"])
    assert proc.returncode != 0 and "unknown job 'nope'" in proc.stderr
    proc = run_cli(["run", "--parties", "3", "--truncation", "local"])
    assert proc.returncode != 0 and "local truncation" in proc.stderr
    proc = run_cli(["run", "--param", "rows"])
    assert proc.returncode != 0 and "KEY=VALUE" in proc.stderr


def _cluster(tmp_path: Path, n: int = 2) -> Path:
    """A loopback cluster file with a CURVE key pair per role (NAME.key beside it)."""
    path = tmp_path / "cluster.json"
    keys = [RoleKeys.generate(key_name(r, n)) for r in range(n + 1)]
    for k in keys:
        k.save(tmp_path)
    Cluster.local(n).with_keys(keys).save(path)
    return path


KEY_FILES = {"dealer": "dealer.key", "p0": "party0.key", "p1": "party1.key"}


def _start_roles(tmp_path: Path, cluster: Path, common: list[str],
                 per_role: dict[str, list[str]] | None = None) -> dict[str, subprocess.Popen[str]]:
    per_role = per_role or {}
    procs = {}
    specs = {"dealer": ["dealer"], "p0": ["party", "--id", "0"], "p1": ["party", "--id", "1"]}
    for name, head in specs.items():
        args = head + ["--cluster", str(cluster), "--json", str(tmp_path / f"{name}.json"),
                       "--key", str(cluster.parent / KEY_FILES[name])]
        procs[name] = subprocess.Popen(PRIVIT + args + common + per_role.get(name, []),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return procs


def _finish(procs: dict[str, subprocess.Popen[str]], timeout: float = 60) -> dict[str, tuple[int, str]]:
    return finish_popens(procs, timeout)


def _merged_report(tmp_path: Path) -> dict[str, Any]:
    """`privit report` over the three role reports in tmp_path."""
    merged = tmp_path / "merged.json"
    proc = run_cli(["report", str(tmp_path / "dealer.json"), str(tmp_path / "p0.json"),
                    str(tmp_path / "p1.json"), "--json", str(merged)])
    assert proc.returncode == 0, proc.stderr
    return json.loads(merged.read_text())


def test_cluster_roles_and_merged_report(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    common = ["--job", "mlp", "--session-id", "t1", "--timeout", "30"]
    results = _finish(_start_roles(tmp_path, cluster, common))
    assert all(code == 0 for code, _ in results.values()), results
    # a role started by hand prints one status line per phase, in order
    for name, role in (("p0", "party 0"), ("p1", "party 1"), ("dealer", "dealer")):
        phases = [line.removeprefix(f"{role}: ").split()[0] for line in results[name][1].splitlines()
                  if line.startswith(f"{role}: ") and " done (" in line]
        assert phases == ["startup", "handshake", "offline", "online"], results[name][1]
    assert "7 online rounds" in results["p0"][1]
    report = _merged_report(tmp_path)
    assert report["online"]["rounds"] == 7
    assert report["accuracy"]["max_abs_error"] < 1e-2


def test_config_mismatch_stops_every_role_naming_it(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    common = ["--job", "mlp", "--session-id", "t2", "--timeout", "10"]
    results = _finish(_start_roles(tmp_path, cluster, common, {"p1": ["--frac-bits", "12"]}))
    for name, (code, err) in results.items():
        assert code != 0, f"{name} should fail"
        assert "frac_bits" in err, f"{name}: {err}"
        assert len(error_lines(err)) == 1, err


def test_precision_mismatch_is_refused(tmp_path: Path) -> None:
    """--precision is hashed with the job's parameters: a party at another level is refused
    even where it names the same fractional bits and truncation."""
    cluster = _cluster(tmp_path)
    common = ["--model", "vit_digits_teacher", "--session-id", "t4", "--timeout", "20",
              "--truncation", "dealer"]  # precise refuses local truncation
    results = _finish(_start_roles(tmp_path, cluster, common, {
        "p1": ["--precision", "precise", "--frac-bits", "16"]}))
    for name, (code, err) in results.items():
        assert code != 0, f"{name} should fail"
        assert "precision" in err, f"{name}: {err}"


def test_session_id_mismatch_is_named(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    procs = _start_roles(tmp_path, cluster, ["--job", "mlp", "--timeout", "10"],
                         {"dealer": ["--session-id", "a"], "p0": ["--session-id", "a"],
                          "p1": ["--session-id", "b"]})
    results = _finish(procs)
    assert results["p1"][0] != 0 and "session" in results["p1"][1]
    assert all(code != 0 for code, _ in results.values())


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    cluster_path = _cluster(tmp_path)
    cluster = Cluster.load(cluster_path)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    blocker.bind((cluster.dealer.host, cluster.dealer.port))
    blocker.listen()
    try:
        proc = run_cli(["dealer", "--cluster", str(cluster_path), "--job", "mlp", "--timeout", "5",
                        "--key", str(tmp_path / "dealer.key")], timeout=30)
    finally:
        blocker.close()
    assert proc.returncode != 0
    assert "already in use" in proc.stderr and str(cluster.dealer.port) in proc.stderr


def _tcp_links(pid: int) -> list[tuple[int, int]]:
    """(local port, remote port) of each established TCP connection of process `pid`."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    links = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "01" and fields[9] in inodes:  # 01: ESTABLISHED
                links.append((int(fields[1].rsplit(":", 1)[1], 16),
                              int(fields[2].rsplit(":", 1)[1], 16)))
    return links


def _wait_until_linked(proc: subprocess.Popen[str], cluster: Cluster, role: int,
                       timeout_s: float = 60.0) -> None:
    """Until `role`'s process has a TCP link to every other role's port and every other
    role one to its port: its start-up (imports) is over and its channel is up."""
    own = cluster.endpoint(role).port
    others = {cluster.endpoint(r).port for r in range(cluster.n_parties + 1) if r != role}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        links = _tcp_links(proc.pid)
        dialled = {remote for local, remote in links if local != own}
        accepted = sum(1 for local, _ in links if local == own)
        if others <= dialled and accepted >= len(others):
            return
        time.sleep(0.05)
    raise AssertionError(f"role {role} did not link up with its peers")


def test_killed_party_makes_the_others_fail_naming_it(tmp_path: Path) -> None:
    """Party 1 is killed once its links are up: party 0 and the dealer fail, naming it,
    long before their timeout (the closed link, not the silence, tells them)."""
    cluster = _cluster(tmp_path)
    common = SLOW_CHAIN + ["--session-id", "t3", "--timeout", "5"]
    procs = _start_roles(tmp_path, cluster, common)
    _wait_until_linked(procs["p1"], Cluster.load(cluster), 1)
    assert procs["p1"].poll() is None, "party 1 finished before it could be killed"
    procs["p1"].kill()
    start = time.monotonic()
    results = _finish(procs, timeout=30)
    assert time.monotonic() - start < 15
    code, err = results["p0"]
    assert code != 0 and "party 1" in err, err
    code, err = results["dealer"]
    assert code != 0 and "party" in err, f"the dealer must not exit 0 for a failed run: {err}"


def test_run_under_injection_attack_is_intact(tmp_path: Path) -> None:
    """While the roles run, a third process floods party 0's and the dealer's ports with
    forged frames (data claiming party 1, aborts), ZMQ garbage and raw TCP garbage: every
    role exits 0 and the result is accurate (without CURVE one forged frame made it wrong
    by ~1e14 with exit 0)."""
    import msgpack
    import zmq

    cluster_path = _cluster(tmp_path)
    cluster = Cluster.load(cluster_path)
    forged_data = [msgpack.packb({"v": 1, "k": "data", "src": 1, "seq": s, "lbl": "output",
                                  "a": [["<i8", [4, 10]]], "meta": None}) for s in range(8)]
    forged_abort = msgpack.packb({"v": 1, "k": "abort", "src": 1, "seq": 0, "lbl": "abort",
                                  "a": [], "meta": {"reason": "forged"}})
    stop = threading.Event()
    sent = [0]

    def attack() -> None:
        ctx = zmq.Context()
        targets = [cluster.endpoint(0).port, cluster.endpoint(2).port]
        socks = []
        for port in targets:
            push = ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.SNDHWM, 1000)
            push.connect(f"tcp://127.0.0.1:{port}")
            socks.append(push)
        while not stop.is_set():
            for push in socks:
                try:
                    for header in forged_data:
                        push.send_multipart([header, bytes(320)], flags=zmq.NOBLOCK)
                    push.send_multipart([forged_abort], flags=zmq.NOBLOCK)
                    push.send_multipart([b"\xc1garbage"], flags=zmq.NOBLOCK)
                    sent[0] += 10
                except zmq.Again:
                    pass
            for port in targets:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                        raw.sendall(b"\x00" * 64 + os.urandom(64))
                except OSError:
                    pass
            stop.wait(0.05)
        for push in socks:
            push.close(linger=0)
        ctx.term()

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    try:
        results = _finish(_start_roles(tmp_path, cluster_path,
                                       ["--job", "mlp", "--session-id", "t6", "--timeout", "30"]))
    finally:
        stop.set()
        attacker.join(10)
    assert sent[0] > 0
    assert all(code == 0 for code, _ in results.values()), results
    report = _merged_report(tmp_path)
    assert report["security"]["channels"] == "curve"
    assert report["accuracy"]["max_abs_error"] < 1e-2


def test_sigint_leaves_no_child_behind(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    proc = subprocess.Popen(PRIVIT + ["run", *SLOW_CHAIN, "--keep-dir", str(keep)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(role_processes(str(keep), proc.pid)) < 3:
        time.sleep(0.1)
    assert len(role_processes(str(keep), proc.pid)) == 3, "roles did not start"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode != 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and role_processes(str(keep), proc.pid):
        time.sleep(0.1)
    assert role_processes(str(keep), proc.pid) == []


def test_coordinator_killed_hard_roles_exit_by_themselves(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    proc = subprocess.Popen(PRIVIT + ["run", *SLOW_CHAIN, "--keep-dir", str(keep)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(role_processes(str(keep), proc.pid)) < 3:
        time.sleep(0.1)
    proc.kill()  # SIGKILL: no cleanup code runs in the coordinator
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and role_processes(str(keep), proc.pid):
        time.sleep(0.1)
    assert role_processes(str(keep), proc.pid) == []


def test_role_failing_at_start_up_stops_its_peers_quickly(tmp_path: Path) -> None:
    """Party 1 cannot bind its port: it tells the others, who stop long before their
    60 s timeout, each naming party 1 and the cause."""
    cluster_path = _cluster(tmp_path)
    cluster = Cluster.load(cluster_path)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    blocker.bind((cluster.parties[1].host, cluster.parties[1].port))
    blocker.listen()
    try:
        start = time.monotonic()
        results = _finish(_start_roles(tmp_path, cluster_path,
                                       ["--job", "mlp", "--session-id", "t5", "--timeout", "60"]),
                          timeout=50)
        elapsed = time.monotonic() - start
    finally:
        blocker.close()
    assert all(code != 0 for code, _ in results.values()), results
    assert "already in use" in results["p1"][1]
    for name in ("dealer", "p0"):
        err = results[name][1]
        assert "party 1 aborted" in err and "failed to start" in err, f"{name}: {err}"
        assert len(error_lines(err)) == 1, err
    assert elapsed < 40, f"peers waited {elapsed:.1f} s: they were not told"


def test_unexpected_error_is_one_line_with_its_place(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """An exception no check anticipated is one line with its type and module:line;
    --debug adds the traceback."""
    from privit.launch import cli, job_registry

    class Broken(dict):  # type: ignore[type-arg]
        def items(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("registry exploded")

    monkeypatch.setattr(job_registry, "JOBS", Broken())
    # setenv records the variable's absence, so the teardown removes what --debug sets.
    monkeypatch.setenv("PRIVIT_DEBUG", "")
    for argv, traceback_shown in ((["privit", "jobs"], False), (["privit", "--debug", "jobs"], True)):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            cli.run_cli()
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        first = err.strip().splitlines()[0]
        assert first.startswith("privit: error: RuntimeError: registry exploded (privit.launch.cli:"), err
        assert ("Traceback (most recent call last)" in err) == traceback_shown, err


def test_report_of_a_file_that_is_no_role_report_is_a_clear_error(tmp_path: Path) -> None:
    odd = tmp_path / "odd.json"
    odd.write_text('{"parties": []}')
    empty = tmp_path / "empty.json"
    empty.write_text("")
    for path in (odd, empty):
        proc = run_cli(["report", str(path)], timeout=60)
        assert proc.returncode != 0
        assert "not a privit role report" in proc.stderr and path.name in proc.stderr, proc.stderr


@pytest.mark.parametrize("exit_by, told", [
    ("os.kill(os.getpid(), signal.SIGTERM)", "party 1: was killed by SIGTERM"),
    ("sys.exit(143)", "party 1: stopped (SIGTERM) and exited 143"),  # as a stopped role does
    ("sys.exit(3)", "party 1: exited with status 3"),
])
def test_run_tells_a_killed_role_from_one_that_stopped(tmp_path: Path, exit_by: str,
                                                       told: str) -> None:
    """`privit run`'s line for a role that wrote neither a report nor an error line: a role
    that stopped on SIGTERM exits 143 after its clean-up, which is not a kill."""
    from privit.launch.coordinator import RoleProcess, _failure_summary

    proc = subprocess.Popen([sys.executable, "-c", f"import os, signal, sys; {exit_by}"])
    proc.wait(30)
    role = RoleProcess(1, "party 1", proc, tmp_path / "report.json", tmp_path / "stderr.txt",
                       proc.returncode)
    assert _failure_summary([role]) == told
