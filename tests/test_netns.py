"""The `vit` job (vit_7_4_32) with each role in its own Linux network namespace.

Four namespaces made for this test only: one per role (party 0, party 1, dealer), each
with a veth whose peer is a port of a Linux bridge in the fourth namespace. Addresses are
in the private 10.213.77.0/24; nothing is added to the root namespace, and deleting the
namespaces removes the veths and the bridge with them. The roles are started with
`ip netns exec` and talk over CURVE, so the run crosses real (virtual) links, not loopback.

Needs root and `ip` with working `ip netns add` (CAP_NET_ADMIN); skipped otherwise.
Select it with `pytest -k netns`.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mp_harness import track_popen

SUBNET = "10.213.77"
PREFIX_LEN = 24
ROLES = ("p0", "p1", "dealer")  # the order of `cluster init --hosts`: parties, then dealer
ROLE_ADDRESSES = {"p0": f"{SUBNET}.1", "p1": f"{SUBNET}.2", "dealer": f"{SUBNET}.3"}
ROLE_ARGS = {"p0": ["party", "--id", "0"], "p1": ["party", "--id", "1"], "dealer": ["dealer"]}
KEY_FILES = {"p0": "party0.key", "p1": "party1.key", "dealer": "dealer.key"}
IFNAMSIZ = 15  # the kernel's limit on an interface name (16 bytes with the NUL)

IP_CMD_TIMEOUT_S = 30
LINK_DEADLINE_S = 20  # for every namespace to reach every other one
ROLE_TIMEOUT_S = 120  # the roles' own --timeout for any wait on a peer
RUN_DEADLINE_S = 240  # for all three roles to exit (well under pytest's 300 s)
REPORT_TIMEOUT_S = 120

PRIVIT = [sys.executable, "-m", "privit.launch.cli"]

# From inside a namespace: exit 0 if ADDR answers a TCP connect to port 9 (discard) with
# either an accept or a refusal: both mean a packet went there and came back.
TCP_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=1).close()
except ConnectionRefusedError:
    pass
except OSError as exc:
    sys.exit(f"{sys.argv[1]}: {exc}")
"""

READ_FILE = "import sys; print(open(sys.argv[1]).read())"  # `cat`, without relying on PATH


@dataclass(frozen=True)
class Lab:
    """The namespaces of one test: a role's namespace, interface and address by role name."""

    bridge_ns: str
    role_ns: dict[str, str]
    role_if: dict[str, str]
    ip: str  # path of the `ip` binary

    def exec_in(self, role: str, *cmd: str) -> list[str]:
        return [self.ip, "netns", "exec", self.role_ns[role], *cmd]


def _ip(ip: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ip, *args], capture_output=True, text=True, timeout=IP_CMD_TIMEOUT_S)


def _ip_or_skip(ip: str, *args: str) -> None:
    """Run `ip ARGS`; a failure is this machine's networking, not privit: skip."""
    proc = _ip(ip, *args)
    if proc.returncode != 0:
        pytest.skip(f"`ip {' '.join(args)}` failed: {proc.stderr.strip() or proc.returncode}")


@pytest.fixture
def netns_lab() -> Iterator[Lab]:
    """Four fresh namespaces (3 roles + bridge) wired up; always deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ip = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None)
    if ip is None:
        pytest.skip("no `ip` command (iproute2)")
    tag = f"pv{os.getpid()}"  # unique per test run; a pid has at most 7 digits
    bridge_ns = f"privit-{tag}-br"
    role_ns = {r: f"privit-{tag}-{r}" for r in ROLES}
    role_if = {r: f"{tag}r{i}" for i, r in enumerate(ROLES)}  # in the role's namespace
    port_if = {r: f"{tag}b{i}" for i, r in enumerate(ROLES)}  # its peer, on the bridge
    bridge = f"{tag}br"
    assert all(len(n) <= IFNAMSIZ for n in [bridge, *role_if.values(), *port_if.values()])

    created: list[str] = []
    try:
        for ns in [bridge_ns, *role_ns.values()]:
            proc = _ip(ip, "netns", "add", ns)
            if proc.returncode != 0:
                pytest.skip(f"`ip netns add` failed (needs CAP_SYS_ADMIN and CAP_NET_ADMIN): "
                            f"{proc.stderr.strip()}")
            created.append(ns)
        for ns in created:
            _ip_or_skip(ip, "-n", ns, "link", "set", "lo", "up")
        _ip_or_skip(ip, "-n", bridge_ns, "link", "add", bridge, "type", "bridge")
        _ip_or_skip(ip, "-n", bridge_ns, "link", "set", bridge, "up")
        for r in ROLES:
            # Made inside the role's namespace with the peer put straight into the bridge's:
            # no interface ever exists in the root namespace.
            _ip_or_skip(ip, "-n", role_ns[r], "link", "add", role_if[r], "type", "veth",
                        "peer", "name", port_if[r], "netns", bridge_ns)
            _ip_or_skip(ip, "-n", bridge_ns, "link", "set", port_if[r], "master", bridge)
            _ip_or_skip(ip, "-n", bridge_ns, "link", "set", port_if[r], "up")
            _ip_or_skip(ip, "-n", role_ns[r], "addr", "add",
                        f"{ROLE_ADDRESSES[r]}/{PREFIX_LEN}", "dev", role_if[r])
            _ip_or_skip(ip, "-n", role_ns[r], "link", "set", role_if[r], "up")
        yield Lab(bridge_ns, role_ns, role_if, ip)
    finally:
        failed = [f"{ns}: {proc.stderr.strip()}" for ns in reversed(created)
                  if (proc := _ip(ip, "netns", "del", ns)).returncode != 0]
        left = set(_ip(ip, "netns", "list").stdout.split()) & set(created)
        assert not failed and not left, f"namespaces not deleted: {failed or sorted(left)}"


def _reachable(lab: Lab, src: str, address: str) -> tuple[bool, str]:
    """Whether `address` answers from inside `src`'s namespace (ping, else a TCP probe)."""
    if shutil.which("ping"):
        cmd = lab.exec_in(src, "ping", "-c1", "-W1", address)
    else:
        cmd = lab.exec_in(src, sys.executable, "-I", "-c", TCP_PROBE, address)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=IP_CMD_TIMEOUT_S)
    return proc.returncode == 0, (proc.stderr or proc.stdout).strip()


def _wait_all_reachable(lab: Lab) -> None:
    """Poll until every role's namespace reaches every other role's address."""
    pending = {(src, dst) for src in ROLES for dst in ROLES if src != dst}
    last: dict[tuple[str, str], str] = {}
    deadline = time.monotonic() + LINK_DEADLINE_S
    while pending and time.monotonic() < deadline:
        for src, dst in sorted(pending):
            ok, why = _reachable(lab, src, ROLE_ADDRESSES[dst])
            if ok:
                pending.discard((src, dst))
            else:
                last[(src, dst)] = why
    assert not pending, f"no connectivity after {LINK_DEADLINE_S} s: " + "; ".join(
        f"{s} -> {d} ({ROLE_ADDRESSES[d]}): {last.get((s, d), '')}" for s, d in sorted(pending))


def _tx_bytes(lab: Lab, role: str) -> int:
    """Bytes sent so far on the role's veth, as its namespace's kernel counts them."""
    path = f"/sys/class/net/{lab.role_if[role]}/statistics/tx_bytes"  # /sys of the namespace
    proc = subprocess.run(lab.exec_in(role, sys.executable, "-I", "-c", READ_FILE, path),
                          capture_output=True, text=True, timeout=IP_CMD_TIMEOUT_S, check=True)
    return int(proc.stdout)


def _run_roles(lab: Lab, folder: Path, common: list[str]) -> dict[str, tuple[int | None, str]]:
    """Start every role in its namespace; (exit code, stderr) of each. Always reaped."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # as `privit run` does: 3 roles share 2 cores
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for r in ROLES:
            args = [*ROLE_ARGS[r], "--cluster", str(folder / "cluster.json"),
                    "--key", str(folder / KEY_FILES[r]), "--json", str(folder / f"{r}.json"),
                    *common]
            procs[r] = track_popen(subprocess.Popen(
                lab.exec_in(r, *PRIVIT, *args), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, env=env))
        deadline = time.monotonic() + RUN_DEADLINE_S
        results: dict[str, tuple[int | None, str]] = {}
        for r, p in procs.items():
            try:
                _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for q in procs.values():
                    q.kill()
                stuck = {name: q.communicate()[1][-2000:] for name, q in procs.items()
                         if name not in results}
                pytest.fail(f"roles still ran after {RUN_DEADLINE_S} s (killed): {stuck}")
            results[r] = (p.returncode, err)
        return results
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()


def test_netns_vit_7_4_32_across_three_namespaces(netns_lab: Lab, tmp_path: Path) -> None:
    lab = netns_lab
    _wait_all_reachable(lab)

    hosts = ",".join(ROLE_ADDRESSES[r] for r in ROLES)
    proc = subprocess.run([*PRIVIT, "cluster", "init", "--out", str(tmp_path), "--parties", "2",
                           "--hosts", hosts], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    cluster = json.loads((tmp_path / "cluster.json").read_text())
    cluster_hosts = {"p0": cluster["parties"][0]["host"], "p1": cluster["parties"][1]["host"],
                     "dealer": cluster["dealer"]["host"]}
    assert cluster_hosts == ROLE_ADDRESSES
    for key in KEY_FILES.values():
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600, key

    tx_before = {r: _tx_bytes(lab, r) for r in ROLES}
    common = ["--job", "vit", "--param", "model=vit_7_4_32", "--timeout", str(ROLE_TIMEOUT_S),
              "--session-id", f"netns-{os.getpid()}"]
    t0 = time.monotonic()
    results = _run_roles(lab, tmp_path, common)
    roles_wall_s = time.monotonic() - t0
    assert all(code == 0 for code, _ in results.values()), results

    merged_path = tmp_path / "merged.json"
    proc = subprocess.run([*PRIVIT, "report", *(str(tmp_path / f"{r}.json") for r in
                                                ("dealer", "p0", "p1")),
                           "--json", str(merged_path)],
                          capture_output=True, text=True, timeout=REPORT_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    merged = json.loads(merged_path.read_text())

    assert merged["security"]["channels"] == "curve"
    assert merged["job"]["params"] == {"model": "vit_7_4_32"}  # no checkpoint: seeded random
    acc = merged["accuracy"]
    assert acc["images"] == 1  # the default batch of a random model
    assert acc["argmax_agreement"] >= 0.9, acc
    assert acc["parties_agree"], acc
    rounds = merged["online"]["rounds"]
    assert 0 < rounds < 10_000, rounds
    assert merged["online"]["bytes"] > 0

    # Every byte a role counted as sent left through its veth (the kernel adds TCP/IP and
    # CURVE framing on top), so the run really crossed the bridge, not loopback.
    for r in ROLES:
        role_report = json.loads((tmp_path / f"{r}.json").read_text())
        counted = sum(role_report["counters"]["bytes_to"].values())
        assert counted > 0, r
        sent = _tx_bytes(lab, r) - tx_before[r]
        assert sent >= counted, f"{r}: veth sent {sent} B, role counted {counted} B"
    print(f"\nnetns roles: {cluster_hosts}; online rounds {rounds}, "
          f"argmax agreement {acc['argmax_agreement']}, roles ran {roles_wall_s:.1f} s")
