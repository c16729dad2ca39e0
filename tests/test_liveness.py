"""Liveness by heartbeat, the timeout for silence only, between real OS processes.

A peer whose process is alive keeps its link up (libzmq's I/O thread answers the ZMTP
heartbeats while its Python thread computes) and is waited for past the timeout; a killed
peer is named at once; a peer that never started is silence and times out; a frozen
(SIGSTOP) peer stops answering heartbeats and is declared dead after the timeout.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any

import numpy as np
import pytest
from mp_harness import SPAWN, expect_ok, run_processes

from privit.parties.channel import PeerError
from privit.parties.cluster import Cluster, key_name
from privit.parties.config import NETWORK_PRESETS, NetworkConfig
from privit.parties.counters import Counters
from privit.parties.keys import RoleKeys
from privit.parties.transport import ZmqChannel

TIMEOUT_S = 2.0
BUSY_S = 5.0  # how long the working peer sends nothing: well past TIMEOUT_S


def _name(role: int) -> str:
    return f"party {role}"


def _cluster(secure: bool) -> tuple[Cluster, list[RoleKeys | None]]:
    """Two roles on loopback, with a CURVE key pair each when `secure`."""
    cluster = Cluster.local(1)
    if not secure:
        return cluster, [None, None]
    keys = [RoleKeys.generate(key_name(r, 1)) for r in range(2)]
    return cluster.with_keys(keys), list(keys)


def _open(role: int, cluster: Cluster, keys: RoleKeys | None, timeout_s: float = TIMEOUT_S,
          network: NetworkConfig = NETWORK_PRESETS["none"]) -> ZmqChannel:
    return ZmqChannel(role, cluster, [1 - role], Counters(), timeout_s, _name, network,
                      keys=keys)


def busy_peer_target(role: int, cluster: Cluster, keys: RoleKeys | None,
                     network: NetworkConfig) -> dict[str, Any]:
    """After one exchange, party 1 computes for BUSY_S in pure Python (holding the GIL),
    sending nothing, then sends its result; party 0 waits for it with a TIMEOUT_S timeout."""
    with _open(role, cluster, keys, network=network) as ch:
        ch.send(1 - role, "data", "ping")
        ch.recv(1 - role, "data", "ping")
        if role == 1:
            end = time.monotonic() + BUSY_S
            steps = 0
            while time.monotonic() < end:
                steps += sum(range(1000)) > 0
            ch.send(0, "data", "result", [np.arange(4, dtype=np.int64)])
            return {"steps": steps}
        start = time.monotonic()
        (got,) = ch.recv(1, "data", "result").arrays
        return {"waited_s": time.monotonic() - start, "result": got.tolist()}


@pytest.mark.parametrize("mode", ["curve", "insecure", "wan"])
def test_a_peer_working_past_the_timeout_is_not_declared_dead(mode: str) -> None:
    """Party 1 is silent for BUSY_S > TIMEOUT_S while its process works: party 0 waits and
    gets the result (before heartbeats it failed with 'timed out after 2 s')."""
    cluster, keys = _cluster(secure=mode != "insecure")
    network = NETWORK_PRESETS["wan" if mode == "wan" else "none"]
    p0, p1 = expect_ok(run_processes(
        [(busy_peer_target, (r, cluster, keys[r], network)) for r in (0, 1)], timeout_s=60.0))
    assert p0["result"] == [0, 1, 2, 3]
    assert p0["waited_s"] > TIMEOUT_S  # it really waited past the timeout for a live peer
    assert p1["steps"] > 0


def test_a_peer_that_never_starts_times_out_naming_it() -> None:
    """Nothing ever listens on party 1's port: pure silence, the timeout ends the wait."""
    cluster, keys = _cluster(secure=True)
    with _open(0, cluster, keys[0]) as ch:
        start = time.monotonic()
        with pytest.raises(PeerError) as info:
            ch.recv(1, "data", "hello")
        waited = time.monotonic() - start
    port = cluster.endpoint(1).port
    assert str(info.value) == (f"timed out after 2 s waiting for party 1 at 127.0.0.1:{port} "
                               f"(no link: nothing answers there yet) (hello, message 0)")
    assert waited >= TIMEOUT_S


def killed_peer_target(role: int, cluster: Cluster, keys: RoleKeys | None,
                       timeout_s: float) -> dict[str, Any]:
    """Party 1 sends a ping, and once party 0 acknowledged it (so the ping has left),
    SIGKILLs itself; party 0 waits for its next message."""
    with _open(role, cluster, keys, timeout_s=timeout_s) as ch:
        if role == 1:
            ch.send(0, "data", "ping")
            ch.recv(0, "data", "ack")
            os.kill(os.getpid(), signal.SIGKILL)
        ch.recv(1, "data", "ping")
        ch.send(1, "data", "ack")
        start = time.monotonic()
        try:
            ch.recv(1, "data", "result")
        except PeerError as exc:
            return {"error": str(exc), "detect_s": time.monotonic() - start}
        return {"error": ""}


def test_a_killed_peer_is_named_long_before_the_timeout() -> None:
    cluster, keys = _cluster(secure=True)
    timeout_s = 30.0
    outcomes = run_processes(
        [(killed_peer_target, (r, cluster, keys[r], timeout_s)) for r in (0, 1)], timeout_s=60.0)
    assert outcomes[1].exitcode == -signal.SIGKILL
    assert outcomes[0].ok, outcomes[0].value
    error = outcomes[0].value["error"]
    assert error.startswith("party 1 is gone (its link at 127.0.0.1:"), error
    assert "while we wait for result" in error, error
    assert outcomes[0].value["detect_s"] < timeout_s / 2  # the closed link, not the timeout


# -- a frozen peer -----------------------------------------------------------------------

def _stoppable_role(role: int, cluster: Cluster, keys: RoleKeys | None, ready: Any,
                    out: Any) -> None:
    """Exchange one message, say ready, then wait for a message that never comes: party 0
    from party 1 (which the parent stops), party 1 from party 0."""
    ch = _open(role, cluster, keys)
    try:
        ch.send(1 - role, "data", "ping")
        ch.recv(1 - role, "data", "ping")
        ready.put((role, os.getpid()))
        try:
            ch.recv(1 - role, "data", "never")
            out.put((role, "no error", 0.0))
        except PeerError as exc:  # when, on the clock every process shares (monotonic)
            out.put((role, str(exc), time.monotonic()))
            ch.abort(f"{_name(role)} failed: {exc}")
    finally:
        ch.close()


def test_a_stopped_peer_is_declared_dead_after_the_heartbeat_timeout() -> None:
    """Party 1 is frozen (SIGSTOP: its I/O thread too, so its heartbeats stop). Party 0
    declares it dead once its link answered no heartbeat for the timeout. Resumed, party 1
    does not blame a timeout on party 0: party 0 is gone (or its abort arrived)."""
    cluster, keys = _cluster(secure=True)
    ready, out = SPAWN.Queue(), SPAWN.Queue()
    procs = [SPAWN.Process(target=_stoppable_role, args=(r, cluster, keys[r], ready, out),
                           daemon=True) for r in range(2)]
    for p in procs:
        p.start()
    try:
        pids = dict(ready.get(timeout=60) for _ in range(2))
        stopped_at = time.monotonic()
        os.kill(pids[1], signal.SIGSTOP)
        try:
            role0, error0, detected_at = out.get(timeout=30)
        finally:
            os.kill(pids[1], signal.SIGCONT)
        role1, error1, _ = out.get(timeout=30)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    assert (role0, role1) == (0, 1)
    assert error0.startswith("party 1 is gone (its link at 127.0.0.1:"), error0
    assert "answered no heartbeat for 2 s" in error0, error0
    assert detected_at - stopped_at >= TIMEOUT_S  # the heartbeat timeout, not one missed PING
    assert error1.startswith(("party 0 is gone", "party 0 aborted")), error1
