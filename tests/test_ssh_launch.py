"""`privit launch` end to end against a real SSH server started here (tests/ssh_test_server.py).

The cluster: parties 0 and 1 on "remote" hosts, reached over SSH on 127.0.0.1 (their `ssh`
objects make them SSH-launched even though the host is local), the dealer a local process.
Party 0's secret key is already "on its host" (`ssh.secret_key`) and is not in the
launcher's key folder; party 1's key is copied over by the launcher. The costs of a launched
run must equal those of the in-memory runner on the same config (the same framing and
counting as real processes).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mp_harness import live_processes, track_popen
from ssh_test_server import DROP_USER, REFUSE_USER, STRAND_USER, SshTestServer, fresh_host_public_key

from privit.launch.job_registry import make_job
from privit.launch.jobs import ALL_INPUTS
from privit.launch.vit_spec import VitSpec
from privit.parties.cluster import Cluster, key_name
from privit.parties.config import JobSpec, RunConfig
from privit.parties.inmemory_run import run_in_memory_detailed
from privit.parties.keys import RoleKeys
from privit.protocols.registry import CORRELATIONS

PRIVIT = [sys.executable, "-m", "privit.launch.cli"]
SLOW_CHAIN = ["--job", "matmul_chain", "--param", "rows=4", "--param",
              "dims=" + ",".join(["8"] * 400), "--network", "wan"]  # 399 rounds x 20 ms
ROLE_MARKERS = ("privit.launch.role_supervisor", "privit.launch.roles")


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshTestServer]:
    server = SshTestServer(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


def _write_cluster(tmp: Path, server: SshTestServer) -> Path:
    """cluster.json and keys: party 0's key "on its host" only, party 1's and the dealer's
    in the launcher's folder `keys`."""
    server.commands.clear()
    keys = [RoleKeys.generate(key_name(role, 2)) for role in range(3)]
    cluster = Cluster.local(2).with_keys(keys)
    keys[0].save(tmp / "host0")
    for k in keys[1:]:
        k.save(tmp / "keys")
    data = cluster.to_dict()
    data["parties"][0]["ssh"] = server.ssh_section(secret_key=str(tmp / "host0" / "party0.key"),
                                                   workdir=str(tmp))
    data["parties"][1]["ssh"] = server.ssh_section(workdir=str(tmp))
    path = tmp / "cluster.json"
    path.write_text(json.dumps(data))
    return path


def _launch(tmp: Path, cluster: Path, args: list[str]) -> subprocess.Popen[str]:
    return track_popen(subprocess.Popen(
        PRIVIT + ["launch", str(cluster), "--keys", str(tmp / "keys"), "--out", str(tmp / "out"),
                  *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "TMPDIR": str(tmp)}))  # the local run folder


def _expected_costs(cfg: RunConfig) -> list[tuple[int, int]]:
    """(online rounds, offline bytes) of party 0, party 1, dealer, from the in-memory runner.
    Its online bytes can differ from real processes' by a byte per message: real roles send
    their hello, client key and barrier first, so their online messages carry higher
    sequence numbers, which msgpack encodes in more bytes past 127 and 255."""
    run = run_in_memory_detailed(cfg, make_job(cfg, ALL_INPUTS).run, CORRELATIONS)
    return [(r["phases"]["online"]["rounds"], r["phases"]["offline"]["bytes"])
            for r in (*run.reports, run.dealer_report)]


def _local_run_costs(tmp: Path, args: list[str]) -> list[tuple[int, int, int]]:
    """(online bytes, online rounds, offline bytes) per role of `privit run` with `args`."""
    out = tmp / "local-run.json"
    proc = subprocess.run(PRIVIT + ["run", *args, "--json", str(out)], capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    return _costs(json.loads(out.read_text()))


def _costs(report: dict[str, Any]) -> list[tuple[int, int, int]]:
    return [(p["online_bytes"], p["online_rounds"], p["offline_bytes"]) for p in report["per_party"]]


def _role_pids() -> list[int]:
    """Live role and supervisor processes of this test session (conftest marks every process
    it starts, at any depth, with PRIVIT_TEST_SESSION; the SSH server passes it on too), so
    that roles of other programs on the machine do not count. Tests run one at a time."""
    marker = f"PRIVIT_TEST_SESSION={os.environ['PRIVIT_TEST_SESSION']}".encode()
    return [p.pid for p in live_processes()
            if marker in p.environ and any(m in p.cmd for m in ROLE_MARKERS)]


def _party1_role() -> int | None:
    for pid in _role_pids():
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"privit.launch.roles" in cmd and cmd[cmd.index(b"--role") + 1] == b"1":
            return pid
    return None


def _has_socket(pid: int) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
        return any(os.readlink(fd).startswith("socket:") for fd in fds)
    except OSError:
        return False


def _wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("job", ["mlp", "vit"])
def test_launch_over_ssh_merges_the_reports(tmp_path: Path, ssh_server: SshTestServer,
                                            job: str) -> None:
    cluster = _write_cluster(tmp_path, ssh_server)
    merged_path = tmp_path / "merged.json"
    # mlp without CURVE: every role then prints its --insecure warning, which shows the
    # prefixes; the vit job with CURVE and the default model, as `privit run` runs it
    extra = ["--job", "mlp", "--insecure"] if job == "mlp" else []
    proc = _launch(tmp_path, cluster, [*extra, "--json", str(merged_path), "--timeout", "120"])
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    report = json.loads(merged_path.read_text())
    params = {} if job == "mlp" else VitSpec.from_params({}).to_params()
    cfg = RunConfig(n_parties=2, job=JobSpec.make(job, **params))
    costs = _costs(report)
    assert [(rounds, offline) for _, rounds, offline in costs] == _expected_costs(cfg)
    assert costs == _local_run_costs(tmp_path, extra)  # to the byte: the same messages
    assert [p["role"] for p in report["per_party"]] == ["party 0", "party 1", "dealer"]
    folders = list((tmp_path / "out").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("privit-launch-")
    assert sorted(p.name for p in folders[0].iterdir()) == ["dealer.json", "party0.json", "party1.json"]
    assert "party 0: over ssh" in err and "party 1: over ssh" in err and "dealer: local process" in err
    if job == "mlp":
        for name in ("party 0", "party 1", "dealer"):
            assert f"[{name}] privit {name}: WARNING: --insecure" in err
        assert report["security"]["channels"] == "insecure"
    else:
        assert report["accuracy"]["parties_agree"] is True
        assert report["security"]["channels"] == "curve"
        # party 0's key stayed where it was; only party 1's travelled, and only to its host
        copies = [c for c in ssh_server.commands if "cat >" in c and ".key" in c]
        assert len(copies) == 1 and "party1.key" in copies[0]
    # every run folder is gone (all were made in tmp_path), and no role is left
    assert not list(tmp_path.glob("privit-launch*"))
    assert _role_pids() == []


@pytest.mark.parametrize("how", ["kill party 1", "SIGINT", "kill the launcher"])
def test_a_killed_role_or_ctrl_c_stops_every_role(tmp_path: Path, ssh_server: SshTestServer,
                                                  how: str) -> None:
    cluster = _write_cluster(tmp_path, ssh_server)
    proc = _launch(tmp_path, cluster, [*SLOW_CHAIN, "--timeout", "60"])
    pid = _wait_for(_party1_role, 60, "party 1's role process")
    _wait_for(lambda: len(_role_pids()) == 6, 60, "every role and its supervisor")
    # mid-run: party 1 has opened its ZeroMQ sockets (it is past start-up, in the
    # handshake or later; the online phase alone takes 399 rounds x 20 ms)
    _wait_for(lambda: _has_socket(pid), 60, "party 1's sockets")
    if how == "SIGINT":
        proc.send_signal(signal.SIGINT)
    elif how == "kill the launcher":
        # no chance to clean up: the roles' supervisors see their stdin end and stop them
        proc.kill()
    else:
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    last = err.strip().splitlines()[-1]
    if how == "kill the launcher":
        assert proc.returncode == -signal.SIGKILL
        _wait_for(lambda: not _role_pids(), 20, "every role process to exit")
        assert len(list(tmp_path.glob("privit-launch*"))) == 3  # nobody was left to remove them
        return
    if how == "SIGINT":
        assert proc.returncode == 130, err
        assert last == "privit launch: interrupted by SIGINT; every role stopped"
    else:
        assert proc.returncode == 1, err
        assert last == "privit launch: failed: party 1 was killed by SIGKILL; every role stopped"
    _wait_for(lambda: not _role_pids(), 20, "every role process to exit")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("privit-launch*"))


def _cli(args: list[str]) -> Any:
    from click.testing import CliRunner

    from privit.launch.cli import main

    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("change, message", [
    ({"usr": "x"}, "parties[1].ssh: unknown fields ['usr']"),
    ({"port": "22"}, "parties[1].ssh: 'port' must be a non-empty integer, got '22'"),
    ({"port": 0}, "parties[1].ssh: 'port' must be in 1..65535, got 0"),
    ({"python": ""}, "parties[1].ssh: 'python' must be a non-empty string, got ''"),
])
def test_a_bad_ssh_object_is_a_one_line_error(tmp_path: Path, ssh_server: SshTestServer,
                                             change: dict[str, Any], message: str) -> None:
    cluster = _write_cluster(tmp_path, ssh_server)
    data = json.loads(cluster.read_text())
    data["parties"][1]["ssh"].update(change)
    cluster.write_text(json.dumps(data))
    result = _cli(["launch", str(cluster), "--keys", str(tmp_path / "keys"), "--job", "mlp"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cluster file ") and message in lines[0]
    assert ssh_server.commands == []


@pytest.mark.parametrize("problem", ["closed port", "untrusted host key"])
def test_an_unreachable_host_fails_before_any_role_starts(tmp_path: Path, ssh_server: SshTestServer,
                                                         problem: str) -> None:
    cluster = _write_cluster(tmp_path, ssh_server)
    data = json.loads(cluster.read_text())
    if problem == "closed port":
        data["parties"][1]["ssh"]["port"] = Cluster.local(1).parties[0].port
    else:
        other = tmp_path / "other_known_hosts"
        other.write_text(f"[127.0.0.1]:{ssh_server.port} {fresh_host_public_key()}\n")
        data["parties"][1]["ssh"]["known_hosts"] = str(other)
    cluster.write_text(json.dumps(data))
    result = _cli(["launch", str(cluster), "--keys", str(tmp_path / "keys"), "--job", "mlp",
                   "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("privit launch: failed: party 1: cannot connect to privit-test@127.0.0.1:")
    assert last.endswith("; every role stopped")
    assert not any("role_supervisor" in c for c in ssh_server.commands)
    assert any("mktemp" in c for c in ssh_server.commands)  # party 0 was prepared ...
    assert not list(tmp_path.glob("privit-launch*"))  # ... and its run folder removed
    assert _role_pids() == []
    assert not (tmp_path / "out").exists()


def test_targets_of_a_cluster_file_with_ssh_objects(tmp_path: Path, ssh_server: SshTestServer) -> None:
    from privit.launch.launch_plan import load_targets

    path = _write_cluster(tmp_path, ssh_server)
    cluster = Cluster.load(path)  # what a role started by hand reads: the ssh objects pass
    party0, party1, dealer = load_targets(path, cluster)
    assert (party0.name, party0.key_name, dealer.name, dealer.key_name) == (
        "party 0", "party0", "dealer", "dealer")
    assert dealer.ssh is None  # 127.0.0.1 without an ssh object: a local process
    assert party0.ssh is not None and party1.ssh is not None
    assert party0.ssh.secret_key == str(tmp_path / "host0" / "party0.key")
    assert party1.ssh.secret_key is None and party1.ssh.workdir == str(tmp_path)
    assert (party1.ssh.host, party1.ssh.port, party1.ssh.user, party1.ssh.python) == (
        "127.0.0.1", ssh_server.port, "privit-test", sys.executable)
    # a host that is not local needs no ssh object to be reached over ssh, with defaults
    data = json.loads(path.read_text())
    data["dealer"]["host"] = "dealer.example.org"
    path.write_text(json.dumps(data))
    remote = load_targets(path, Cluster.load(path))[2].ssh
    assert remote is not None and (remote.host, remote.port, remote.user, remote.python,
                                   remote.client_key) == ("dealer.example.org", 22, None,
                                                          "python3", None)


@pytest.mark.parametrize("user", [REFUSE_USER, DROP_USER])
def test_a_refused_session_or_a_lost_connection_names_the_role(
        tmp_path: Path, ssh_server: SshTestServer, user: str) -> None:
    """An SSH failure of one role's link, whether the server refuses the session channel
    (before anything starts) or the connection goes away while the role runs, is one line
    that names the role and its host; every role is stopped and every run folder removed."""
    cluster = _write_cluster(tmp_path, ssh_server)
    data = json.loads(cluster.read_text())
    data["parties"][1]["ssh"]["user"] = user
    cluster.write_text(json.dumps(data))
    proc = _launch(tmp_path, cluster, [*SLOW_CHAIN, "--timeout", "60"])
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.strip().splitlines() if line.startswith("privit")]
    where = f"party 1 on {user}@127.0.0.1:{ssh_server.port}"
    if user == REFUSE_USER:
        assert lines[-1].startswith(f"privit launch: failed: {where}: ssh session refused: ")
    else:
        assert lines[-1].startswith(f"privit launch: failed: {where}: ssh connection lost")
    assert lines[-1].endswith("; every role stopped")
    assert proc.returncode == 1
    _wait_for(lambda: not _role_pids(), 30, "every role process to exit")
    assert not list(tmp_path.glob("privit-launch*"))


def test_a_role_whose_link_is_lost_is_stopped_before_its_folder_is_removed(
        tmp_path: Path, ssh_server: SshTestServer) -> None:
    """Party 1's connection goes away while its role runs on, stdin still open (the host has
    not noticed; STRAND_USER). The role here is frozen (SIGSTOP), so it cannot end by itself
    as a role whose peers stopped does: the launcher must stop it over a fresh connection,
    by the pids its start recorded, before it removes the run folder."""
    cluster = _write_cluster(tmp_path, ssh_server)
    data = json.loads(cluster.read_text())
    data["parties"][1]["ssh"]["user"] = STRAND_USER
    cluster.write_text(json.dumps(data))
    proc = _launch(tmp_path, cluster, [*SLOW_CHAIN, "--timeout", "60"])
    pid = _wait_for(_party1_role, 60, "party 1's role process")
    _wait_for(lambda: _has_socket(pid), 60, "party 1's sockets")
    os.kill(pid, signal.SIGSTOP)
    try:
        assert ssh_server.cut_links() == 1
        out, err = proc.communicate(timeout=120)
        lines = [line for line in err.strip().splitlines() if line.startswith("privit")]
        where = f"party 1 on {STRAND_USER}@127.0.0.1:{ssh_server.port}"
        assert lines[-1].startswith(f"privit launch: failed: {where}: ssh connection lost"), err
        assert proc.returncode == 1
        # stopped by the launcher before it exited (a few seconds for the reaping)
        _wait_for(lambda: not _role_pids(), 5, "every role process to exit")
        assert not list(tmp_path.glob("privit-launch*"))
    finally:
        for left in _role_pids():  # without the fix: the frozen role and its supervisor
            with contextlib.suppress(ProcessLookupError):
                os.kill(left, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_role_that_stopped_after_clean_up_is_told_from_a_killed_one(
        tmp_path: Path, sig: signal.Signals) -> None:
    """A role that gets SIGTERM stops as on an error and exits 143 itself; one that gets
    SIGKILL is killed. Its supervisor passes the difference on (an exit status, or death by
    the same signal), and `privit launch` words each as what happened."""
    from privit.launch.role_supervisor import PID_FILE
    from privit.launch.ssh_launch import _exit_text

    cfg = RunConfig(n_parties=2, channels="insecure", job=JobSpec.make("mlp"), timeout_s=60)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    Cluster.local(2).save(tmp_path / "cluster.json")  # no peer ever comes: party 1 waits
    supervisor = track_popen(subprocess.Popen(
        [sys.executable, "-m", "privit.launch.role_supervisor", "--config", "config.json",
         "--cluster", "cluster.json", "--role", "1"], cwd=tmp_path, stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    try:
        pid_file = tmp_path / PID_FILE
        role = int(_wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 60,
                             "the role's pid"))
        _wait_for(lambda: _has_socket(role), 60, "the role's sockets")  # its handlers are set
        os.kill(role, sig)
        _, err = supervisor.communicate(timeout=30)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(10)
    if sig == signal.SIGTERM:
        assert supervisor.returncode == 143, err
        assert _exit_text("party 1", 143, None) == "party 1 stopped (SIGTERM) and exited 143"
    else:
        assert supervisor.returncode == -signal.SIGKILL, err
        assert _exit_text("party 1", -signal.SIGKILL, None) == "party 1 was killed by SIGKILL"
    _wait_for(lambda: not _role_pids(), 20, "the role to exit")
