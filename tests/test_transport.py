"""ZmqChannel, Cluster and the handshake between real OS processes over TCP loopback."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from mp_harness import SPAWN, expect_ok, run_processes

from privit.parties import transport
from privit.parties.channel import PeerError
from privit.parties.cluster import Cluster, ClusterError, Endpoint
from privit.parties.config import NETWORK_PRESETS, PROTOCOL_VERSION, NetworkConfig, RunConfig
from privit.parties.counters import Counters
from privit.parties.keys import RoleKeys
from privit.parties.transport import TransportError, ZmqChannel
from privit.parties.wire import WireError


def _name(role: int) -> str:
    return f"party {role}"


def _open(role: int, cluster: Cluster, timeout_s: float = 10.0,
          network: NetworkConfig = NETWORK_PRESETS["none"]) -> ZmqChannel:
    n_roles = cluster.n_parties + 1
    peers = [r for r in range(n_roles) if r != role]
    return ZmqChannel(role, cluster, peers, Counters(), timeout_s, _name, network)


# -- cluster files -----------------------------------------------------------------

def test_cluster_roundtrip_and_roles(tmp_path: Path) -> None:
    cluster = Cluster((Endpoint("10.0.0.1", 5000), Endpoint("10.0.0.2", 5000)),
                      Endpoint("10.0.0.3", 6000))
    path = tmp_path / "cluster.json"
    cluster.save(path)
    assert Cluster.load(path) == cluster
    assert cluster.n_parties == 2
    assert cluster.endpoint(1) == Endpoint("10.0.0.2", 5000)
    assert cluster.endpoint(2) == cluster.dealer
    with pytest.raises(ClusterError, match="role 3 is not in this cluster"):
        cluster.endpoint(3)


def test_local_cluster_has_distinct_free_ports() -> None:
    cluster = Cluster.local(3)
    ports = [ep.port for ep in cluster.all_endpoints()]
    assert cluster.n_parties == 3 and len(set(ports)) == 4
    assert all(ep.host == "127.0.0.1" for ep in cluster.all_endpoints())


CLUSTER_ERRORS = {
    "bad JSON": ("{", "is not valid JSON: Expecting property name"),
    "not an object": ("[1]", "expected a JSON object, got list"),
    "missing parties": ('{"dealer": {"host": "a", "port": 1}}', "missing field 'parties'"),
    "missing dealer": ('{"parties": [{"host": "a", "port": 1}]}', "missing field 'dealer'"),
    "empty parties": ('{"parties": [], "dealer": {"host": "a", "port": 1}}', "non-empty list"),
    "missing port": ('{"parties": [{"host": "a"}], "dealer": {"host": "a", "port": 1}}',
                     r"parties\[0\]: missing field 'port'"),
    "port zero": ('{"parties": [{"host": "a", "port": 0}], "dealer": {"host": "a", "port": 1}}',
                  "port must be an integer in 1..65535, got 0"),
    "port too big": ('{"parties": [{"host": "a", "port": 70000}], "dealer": {"host": "a", "port": 1}}',
                     "got 70000"),
    "port string": ('{"parties": [{"host": "a", "port": "80"}], "dealer": {"host": "a", "port": 1}}',
                    "got '80'"),
    "empty host": ('{"parties": [{"host": "", "port": 1}], "dealer": {"host": "a", "port": 2}}',
                   "host must be a non-empty string"),
    "unknown field": ('{"parties": [{"host": "a", "port": 1, "x": 1}], "dealer": {"host": "a", "port": 2}}',
                      r"unknown fields \['x'\]"),
    "duplicate": ('{"parties": [{"host": "a", "port": 1}, {"host": "a", "port": 1}], '
                  '"dealer": {"host": "a", "port": 2}}', "party 1 and party 0 share the endpoint a:1"),
    "ssh not an object": ('{"parties": [{"host": "a", "port": 1, "ssh": "alice@a"}], '
                          '"dealer": {"host": "a", "port": 2}}',
                          r"parties\[0\]: 'ssh' must be an object"),
    "dealer duplicate": ('{"parties": [{"host": "a", "port": 1}], "dealer": {"host": "a", "port": 1}}',
                         "dealer and party 0 share"),
}


@pytest.mark.parametrize("case", sorted(CLUSTER_ERRORS))
def test_bad_cluster_files(tmp_path: Path, case: str) -> None:
    text, pattern = CLUSTER_ERRORS[case]
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ClusterError, match=pattern) as info:
        Cluster.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_cluster_file(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="cluster file .*nope.json does not exist"):
        Cluster.load(tmp_path / "nope.json")


# -- in-process transport checks ---------------------------------------------------------

def test_port_in_use_is_a_transport_error() -> None:
    cluster = Cluster.local(2)
    busy = socket.socket()
    busy.bind(("127.0.0.1", cluster.endpoint(1).port))
    busy.listen()
    try:
        with pytest.raises(TransportError, match=f"port 127.0.0.1:{cluster.endpoint(1).port} "
                                                 "for party 1 is already in use"):
            _open(1, cluster)
    finally:
        busy.close()
    with _open(1, cluster):  # free again: the failed attempt left nothing behind
        with pytest.raises(TransportError, match="for party 1 is already in use"):
            _open(1, cluster)


def _inject(port: int, frames: list[bytes]) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    push.send_multipart(frames)
    push.close(linger=2000)
    ctx.term()


def _header(**changes: Any) -> bytes:
    h = {"v": 1, "k": "data", "src": 1, "seq": 0, "lbl": "open", "a": [["<i8", [4]]], "meta": None}
    h.update(changes)
    return msgpack.packb(h, use_bin_type=True)


@pytest.mark.parametrize("frames, pattern", [
    ([b"\xc1\x00garbage", b"x"], "malformed header from a peer"),
    ([_header(), bytes(16)], r"truncated or oversized frame from a peer \('open'\): expected 32 bytes "
                             r"for <i8\[4\], got 16"),
    ([_header(), bytes(32), bytes(32)], "has 2 array frames, header says 1"),
    ([_header(src=5), bytes(32)], "unknown sender id 5"),
], ids=["garbage", "truncated", "extra frame", "unknown sender"])
def test_injected_malformed_frames_are_wire_errors(frames: list[bytes], pattern: str) -> None:
    cluster = Cluster.local(1)
    with _open(0, cluster, timeout_s=5.0) as ch:
        _inject(cluster.endpoint(0).port, frames)
        with pytest.raises(WireError, match=pattern):
            ch.recv(1, "data", "open")


# -- real processes ------------------------------------------------------------------

ARRAYS = [
    np.arange(12, dtype=np.int64).reshape(3, 4) - 6,
    np.array(2.5, dtype=np.float64),
    np.zeros(0, dtype=np.int32),
    np.arange(256, dtype=np.uint8),
    np.arange(1 << 20, dtype=np.int64) * -3,  # 8 MB: sent without copying
]


def echo_target(role: int, cluster: Cluster) -> dict[str, Any]:
    """Party 0 sends ARRAYS one message each; party 1 returns each, negated if signed."""
    with _open(role, cluster) as ch:
        if role == 1:
            for i in range(len(ARRAYS)):
                (a,) = ch.recv(0, "data", f"a{i}").arrays
                ch.send(0, "data", f"b{i}", [-a if a.dtype.kind in "if" else a])
        else:
            sizes = [ch.send(1, "data", f"a{i}", [a]) for i, a in enumerate(ARRAYS)]
            for i, a in enumerate(ARRAYS):
                (b,) = ch.recv(1, "data", f"b{i}").arrays
                assert b.dtype == a.dtype and b.shape == a.shape, (i, b.dtype, b.shape)
                np.testing.assert_array_equal(b, -a if a.dtype.kind in "if" else a)
            assert ch.counters.phases["setup"].bytes == sum(sizes)
        return ch.counters.report()["phases"]["setup"]


def test_two_processes_exchange_arrays() -> None:
    cluster = Cluster.local(1)
    p0, p1 = expect_ok(run_processes([(echo_target, (r, cluster)) for r in (0, 1)]))
    assert p0["messages"] == p1["messages"] == len(ARRAYS)
    assert p0["rounds"] == 1 and p1["rounds"] == len(ARRAYS) - 1


def all_to_all_target(role: int, cluster: Cluster, rounds: int,
                      die_after: int | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
    """Each round every role sends role*100 + round to all others and checks theirs.

    With die_after, this process SIGKILLs itself after that many rounds. Otherwise a
    peer error is returned (not raised) with how long after the last progress it came.
    """
    n_roles = cluster.n_parties + 1
    ch = _open(role, cluster, timeout_s)
    last_progress = time.monotonic()
    try:
        for k in range(rounds):
            if die_after is not None and k == die_after:
                os.kill(os.getpid(), signal.SIGKILL)
            for p in ch.peers:
                ch.send(p, "data", f"r{k}", [np.full(1000, role * 100 + k, dtype=np.int64)])
            for p in ch.peers:
                (got,) = ch.recv(p, "data", f"r{k}").arrays
                assert (got == p * 100 + k).all()
            last_progress = time.monotonic()
        return {"rounds": ch.counters.phases["setup"].rounds, "n_peers": n_roles - 1}
    except PeerError as exc:
        detected = time.monotonic() - last_progress
        ch.abort(f"{_name(role)} failed: {exc}")
        return {"error": str(exc), "detect_s": detected}
    finally:
        ch.close()


def test_three_processes_all_to_all() -> None:
    cluster = Cluster.local(2)
    results = expect_ok(run_processes([(all_to_all_target, (r, cluster, 4)) for r in range(3)]))
    assert results == [{"rounds": 4, "n_peers": 2}] * 3


def test_a_killed_peer_is_named_within_the_timeout() -> None:
    cluster = Cluster.local(2)
    timeout_s = 3.0
    calls = [(all_to_all_target, (r, cluster, 1000, 5 if r == 2 else None, timeout_s))
             for r in range(3)]
    start = time.monotonic()
    outcomes = run_processes(calls, timeout_s=20.0)
    assert outcomes[2].exitcode == -signal.SIGKILL
    for o in outcomes[:2]:
        assert o.ok, o.value
        error = o.value.get("error", "")
        assert "party 2 is gone" in error, error
        assert o.value["detect_s"] < timeout_s  # the socket monitor noticed, not the timeout
    assert time.monotonic() - start < 15.0


def last_words_target(role: int, cluster: Cluster) -> float:
    """Party 0 sends 2.5 MB through a 100 Mbit/s emulated link and exits at once; party 1
    must still get it (close() flushes the delay queue and the ZeroMQ queue)."""
    slow = NetworkConfig("custom", 0.0, 100e6)
    if role == 0:
        ch = _open(0, cluster, network=slow)
        ch.send(1, "data", "last", [np.ones(312_500, dtype=np.int64)])
        start = time.monotonic()
        ch.close()
        return time.monotonic() - start
    with _open(1, cluster) as ch:
        (got,) = ch.recv(0, "data", "last").arrays
        assert got.sum() == 312_500
        return 0.0


def test_a_peer_that_finished_still_delivers_its_last_message() -> None:
    cluster = Cluster.local(1)
    closing, _ = expect_ok(run_processes([(last_words_target, (r, cluster)) for r in (0, 1)]))
    assert closing >= 0.15  # close() waited for the 0.2 s emulated transfer


def large_last_words_target(role: int, cluster: Cluster, keys: list[RoleKeys]) -> int:
    """Party 0 sends one 128 MB array under CURVE and closes at once; party 1, which
    declares a closed peer gone as soon as it looks (no grace), must still get it whole:
    the peer decrypts a message as one box after its last byte arrived, and close() keeps
    the PULL socket (whose closing is what the peer sees) open while it may be landing."""
    n = 16 << 20
    peers = [1 - role]
    if role == 1:
        transport.GONE_GRACE_S = 0.0
    with ZmqChannel(role, cluster, peers, Counters(), 30.0, _name, keys=keys[role]) as ch:
        if role == 1:
            ch.send(0, "data", "go", [np.zeros(1, dtype=np.int64)])
            (got,) = ch.recv(0, "data", "last").arrays
            return int(got.sum())
        ch.recv(1, "data", "go")
        ch.send(1, "data", "last", [np.ones(n, dtype=np.int64)])
        return n


def test_a_large_last_message_lands_before_its_sender_closes() -> None:
    keys = [RoleKeys.generate(f"landing{r}") for r in range(2)]
    cluster = Cluster.local(1).with_keys(keys)
    sent, got = expect_ok(run_processes([(large_last_words_target, (r, cluster, keys))
                                         for r in (0, 1)], timeout_s=60.0))
    assert got == sent


# -- handshake between processes ----------------------------------------------------------

def _seeds_out(role: int, n_parties: int) -> dict[int, bytes]:
    if role == n_parties:
        return {p: os.urandom(16) for p in range(n_parties)}
    return {p: os.urandom(16) for p in range(role + 1, n_parties)}


def handshake_target(role: int, cluster: Cluster, cfg: RunConfig, version: int | None = None,
                     delay_s: float = 0.0) -> dict[str, Any]:
    """Run the handshake like a role process; returns seeds sent and received (hex)."""
    from privit.parties import handshake as hs

    if version is not None:
        hs.PROTOCOL_VERSION = version  # this process pretends to speak another version
    time.sleep(delay_s)
    with _open(role, cluster, timeout_s=10.0) as ch:
        sent = _seeds_out(role, cfg.n_parties)
        try:
            received = hs.handshake(ch, cfg, role, ch.peers, sent)
        except Exception as exc:
            ch.abort(f"{_name(role)} failed: {exc}")
            raise
        assert ch.counters.phases["setup"].messages == len(ch.peers)
        return {"sent": {p: s.hex() for p, s in sent.items()},
                "received": {p: s.hex() for p, s in received.items()}}


def test_handshake_passes_seeds_by_the_convention() -> None:
    cfg = RunConfig(n_parties=2, session_id="s1")
    cluster = Cluster.local(2)
    # The dealer starts late: parties' first messages wait in ZeroMQ until it binds.
    calls = [(handshake_target, (r, cluster, cfg, None, 0.5 if r == 2 else 0.0)) for r in range(3)]
    p0, p1, dealer = expect_ok(run_processes(calls))
    assert p0["received"] == {2: dealer["sent"][0]}
    assert p1["received"] == {0: p0["sent"][1], 2: dealer["sent"][1]}
    assert dealer["received"] == {} and p1["sent"] == {}


MISMATCHES = {
    # case: (what party 1 changes, party 0's error, party 1's error); the case name
    # is in every error message
    "config mismatch": ({"frac_bits": 12},
                     "config mismatch with party 1: frac_bits is 16 here, 12 there",
                     "config mismatch with party 0: frac_bits is 12 here, 16 there"),
    "session id mismatch": ({"session_id": "s2"},
                   "session id mismatch with party 1: 's1' here, 's2' there",
                   "session id mismatch with party 0: 's2' here, 's1' there"),
    "protocol version mismatch": ({"version": PROTOCOL_VERSION + 1},
                         f"protocol version mismatch with party 1: {PROTOCOL_VERSION} here, "
                         f"{PROTOCOL_VERSION + 1} there",
                         f"protocol version mismatch with party 0: {PROTOCOL_VERSION + 1} here, "
                         f"{PROTOCOL_VERSION} there"),
}


def mismatch_target(role: int, clusters: list[Cluster], barrier: Any) -> list[tuple[str, float]]:
    """Role `role` of each MISMATCHES case in turn (one process for all: imports are slow;
    the barrier starts every case together, as fresh processes would start).

    Returns, per case, the handshake's error ("" if it passed) and how long close() took
    after the abort: a failing role must not wait out the timeout for peers that are up.
    """
    from privit.parties import handshake as hs

    results = []
    own_version = hs.PROTOCOL_VERSION
    for (change, _, _), cluster in zip(MISMATCHES.values(), clusters, strict=True):
        cfg = RunConfig(n_parties=2, session_id="s1")
        hs.PROTOCOL_VERSION = own_version
        if role == 1:
            hs.PROTOCOL_VERSION = change.get("version", own_version)
            cfg = dataclasses.replace(cfg, **{k: v for k, v in change.items() if k != "version"})
        barrier.wait(30.0)
        ch = _open(role, cluster, timeout_s=20.0)
        error = ""
        try:
            hs.handshake(ch, cfg, role, ch.peers, _seeds_out(role, cfg.n_parties))
        except (hs.HandshakeError, PeerError) as exc:
            error = str(exc)
            ch.abort(f"{_name(role)} failed: {exc}")
        finally:
            start = time.monotonic()
            ch.close()
        results.append((error, time.monotonic() - start))
    return results


def test_handshake_mismatch_fails_on_every_side() -> None:
    """Party 1 differs from party 0 and the dealer: all three stop, naming the field."""
    clusters = [Cluster.local(2) for _ in MISMATCHES]
    barrier = SPAWN.Barrier(3)
    results = expect_ok(run_processes([(mismatch_target, (r, clusters, barrier)) for r in range(3)]))
    for i, (case, (_, seen_by_0, seen_by_1)) in enumerate(MISMATCHES.items()):
        errors = [r[i][0] for r in results]
        # Each role finds the difference itself (the dealer, like party 0, with party 1),
        # unless another role's abort, which quotes its finding, reaches it first.
        for error, own in zip(errors, (seen_by_0, seen_by_1, seen_by_0), strict=True):
            assert error == own or (" aborted: " in error and case in error), (case, errors)
        # Fast, or waiting for a peer that was still starting; never the 20 s LINGER.
        assert max(r[i][1] for r in results) < 8.0, (case, results)


def test_cluster_json_is_plain() -> None:
    cluster = Cluster.local(1)
    d = json.loads(json.dumps(cluster.to_dict()))
    assert Cluster.from_dict(d) == cluster


# -- handshake checks, in-process -------------------------------------------------------

def _hello(cfg: RunConfig, role: int, seed: bytes | None, **changes: Any) -> dict[str, Any]:
    from privit.parties.handshake import hello_meta

    meta = hello_meta(cfg, role, seed)
    meta.update(changes)
    return meta


def _wan_config(meta: dict[str, Any]) -> dict[str, Any]:
    wan = dataclasses.replace(RunConfig(n_parties=2, session_id="s"), network=NETWORK_PRESETS["wan"])
    return {**meta, "config": _hello(wan, 0, None)["config"]}


def _drop(key: str) -> Any:
    return lambda meta: {k: v for k, v in meta.items() if k != key}


def _set(**changes: Any) -> Any:
    return lambda meta: {**meta, **changes}


HELLO_ERRORS = {
    # case: (how party 0's hello to party 1 is spoiled, the error); no dealer involved
    "not a map": (lambda meta: None, "bad hello from party 0: no handshake fields"),
    "version type": (_set(version="1"), "bad hello from party 0: field 'version' is '1'"),
    "missing field": (_drop("session"), r"missing fields \['session'\], unknown fields \[\]"),
    "extra field": (_set(x=1), r"unknown fields \['x'\]"),
    "session type": (_set(session=None), "field 'session' has type NoneType"),
    "role type": (_set(role=True), "field 'role' has type bool"),
    "seed type": (_set(seed="abc"), "field 'seed' has type str"),
    "role claim": (_set(role=2), "party 0 claims to be role 2"),
    "n_parties": (_set(n_parties=3), "n_parties mismatch with party 0: 2 here, 3 there"),
    "config json": (_set(config="{"), "field 'config' is not JSON"),
    "config hash": (_set(config_hash="0" * 16), "config hash mismatch with party 0"),
    "nested config field": (_wan_config, "config mismatch with party 0: network.bandwidth_bps is 0.0 here, "
                            "400000000.0 there; network.latency_s is 0.0 here, 0.02 there; "
                            "network.name is 'none' here, 'wan' there$"),
    "missing seed": (_set(seed=None), "party 0 sent no seed; expected 16 bytes"),
    "short seed": (_set(seed=b"x" * 8), "party 0 sent a 8-byte seed; expected 16 bytes"),
}


@pytest.mark.parametrize("case", sorted(HELLO_ERRORS))
def test_hello_validation(case: str) -> None:
    from privit.parties.handshake import HandshakeError, check_hello

    spoil, pattern = HELLO_ERRORS[case]
    cfg = RunConfig(n_parties=2, session_id="s")
    assert check_hello(_hello(cfg, 0, bytes(16)), cfg, 1, 0) == bytes(16)
    with pytest.raises(HandshakeError, match=pattern) as info:
        check_hello(spoil(_hello(cfg, 0, bytes(16))), cfg, 1, 0)
    assert "\n" not in str(info.value)


def test_hello_seeds_follow_the_convention() -> None:
    from privit.parties.handshake import HandshakeError, check_hello, expects_seed

    cfg = RunConfig(n_parties=3, truncation="dealer", session_id="s")
    dealer = 3
    assert [expects_seed(dealer, p, dealer) for p in range(3)] == [True] * 3
    assert [expects_seed(p, dealer, dealer) for p in range(3)] == [False] * 3
    assert expects_seed(0, 2, dealer) and not expects_seed(2, 0, dealer)
    seed = bytes(range(16))
    assert check_hello(_hello(cfg, 0, seed), cfg, 2, 0) == seed
    assert check_hello(_hello(cfg, 2, None), cfg, 0, 2) is None
    with pytest.raises(HandshakeError, match="party 2 sent a seed; expected none"):
        check_hello(_hello(cfg, 2, seed), cfg, 0, 2)


def test_handshake_refuses_to_send_seeds_against_the_convention() -> None:
    from privit.parties.handshake import handshake
    from privit.parties.memory import MemoryChannel, MemoryHub

    cfg = RunConfig(n_parties=2)
    ch = MemoryChannel(MemoryHub(range(3)), 1, [0, 2], Counters(), 1.0, cfg.role_name)
    with pytest.raises(ValueError, match="party 1 must not send a seed to party 0"):
        handshake(ch, cfg, 1, [0, 2], {0: bytes(16)})
    with pytest.raises(ValueError, match="seed for party 1 has 3 bytes"):
        handshake(ch, cfg, 0, [1, 2], {1: b"abc"})


def test_transport_benchmark_runs() -> None:
    from privit.launch.bench_transport import format_rows, run_plan

    rows = run_plan([("rtt", 8, 50), ("oneway", 1_000_000, 3), ("echo", 1_000_000, 2)])
    assert [r["op"] for r in rows] == ["rtt", "oneway", "echo"]
    assert rows[0]["rtt_us"] > 0 and rows[1]["GB_per_s"] > 0 and rows[2]["GB_per_s"] > 0
    assert "GB/s" in format_rows(rows)
