"""Secure channels: what a third process on the machine can and cannot do to a run.

Real ZeroMQ sockets on loopback. The "attacker" is this test process with its own sockets
(plain, raw TCP, or CURVE with a key of its own); the roles are `ZmqChannel`s with this
run's keys. Each attack is also shown to work against an --insecure channel where that is
meaningful, so the CURVE assertions cannot pass by accident.
"""
from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
import zmq

from privit.parties.channel import PeerError
from privit.parties.cluster import Cluster, ClusterError, Endpoint, key_name
from privit.parties.config import RunConfig
from privit.parties.counters import Counters
from privit.parties.keys import KeyFileError, RoleKeys, load_public_key
from privit.parties.memory import MemoryChannel
from privit.parties.transport import ZmqChannel
from privit.parties.wire import WIRE_VERSION, Message, encode

GENUINE = np.arange(4, dtype=np.int64)
FORGED = np.full(4, 10**14, dtype=np.int64)


def _name(role: int) -> str:
    return "dealer" if role == 1 else f"party {role}"


def _keys() -> list[RoleKeys]:
    return [RoleKeys.generate(key_name(r, 1)) for r in range(2)]


def _open(role: int, cluster: Cluster, keys: RoleKeys | None, timeout_s: float = 10.0) -> ZmqChannel:
    return ZmqChannel(role, cluster, [1 - role], Counters(), timeout_s, _name, keys=keys)


@pytest.fixture
def pair() -> Iterator[tuple[ZmqChannel, ZmqChannel, Cluster, list[RoleKeys]]]:
    """Role 0 and role 1 (a party and the dealer of a 1-party cluster) over CURVE."""
    keys = _keys()
    cluster = Cluster.local(1).with_keys(keys)
    a, b = _open(0, cluster, keys[0]), _open(1, cluster, keys[1])
    try:
        yield a, b, cluster, keys
    finally:
        a.close()
        b.close()


def _forged_frames(kind: str = "data", seq: int = 0, label: str = "open") -> list[bytes]:
    """What the issue's attacker queued: a frame claiming to be role 1's next message."""
    meta = {"reason": "forged"} if kind == "abort" else None
    arrays = [] if kind == "abort" else [FORGED]
    return [bytes(f) for f in encode(Message(kind, 1, seq, label, arrays, meta))]


def _plain_push(port: int, messages: list[list[bytes]]) -> None:
    """Queue `messages` on a plain (NULL-mechanism) connection to `port` (as many as the
    link takes before the server's refusal drops it), wait until the server has answered
    the handshake (it refuses it), then drop the socket without waiting (what could not be
    delivered is discarded: a CURVE server never takes it)."""
    ctx = zmq.Context()
    events = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
              | zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)

    def connect() -> tuple[zmq.Socket, zmq.Socket]:
        sock = ctx.socket(zmq.PUSH)
        mon = sock.get_monitor_socket(events)
        sock.connect(f"tcp://127.0.0.1:{port}")  # its pipe exists at once (ZMQ_IMMEDIATE 0)
        return sock, mon

    try:
        push, monitor = connect()
        # The server's refusal can drop the link's pipe before a message is queued (on a
        # loaded machine its I/O thread may answer before ours sends): like a persistent
        # attacker, retry that message on a fresh connection, until a deadline.
        queued, deadline = 0, time.monotonic() + 10.0
        for frames in messages:
            while time.monotonic() < deadline:
                try:
                    push.send_multipart(frames, flags=zmq.NOBLOCK)
                except zmq.Again:
                    if queued:
                        break  # this connection took what it could; enough of the flood
                    push.disable_monitor()
                    monitor.close(linger=0)
                    push.close(linger=0)
                    push, monitor = connect()
                    continue
                queued += 1
                break
        assert queued >= 1, "the forged messages could not be queued at all"
        monitor.poll(3000)  # the server's verdict (or a plain server's acceptance)
        push.disable_monitor()
        monitor.close(linger=0)
    finally:
        ctx.destroy(linger=500)  # an --insecure server takes the frames within this


def _raw_tcp(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
        try:
            s.sendall(payload)
            s.settimeout(0.5)
            s.recv(64)  # whatever libzmq answers, or the close
        except OSError:
            pass


# ZMTP 3.0 greeting (NULL mechanism) followed by a long-frame header announcing 2 GiB.
ZMTP_GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + bytes(31)
TWO_GIB_FRAME = b"\x02" + (2**31).to_bytes(8, "big") + b"A" * 4096


def test_curve_pair_exchanges_data(pair) -> None:
    a, b, _, _ = pair
    b.send(0, "data", "open", [GENUINE])
    np.testing.assert_array_equal(a.recv(1, "data", "open").arrays[0], GENUINE)


def test_forged_frames_never_reach_the_protocol(pair) -> None:
    """Forged data, a forged abort, a replayed-looking hello and a flood of future frames
    from a plain (unauthenticated) socket: none is delivered; the genuine message is."""
    a, b, cluster, _ = pair
    port = cluster.endpoint(0).port
    flood = [_forged_frames(seq=s) for s in range(1, 200)]
    hello = [bytes(f) for f in encode(Message("hello", 1, 0, "hello", [], {"version": WIRE_VERSION}))]
    _plain_push(port, [_forged_frames(), _forged_frames("abort"), hello, *flood])
    _raw_tcp(port, b"GET / HTTP/1.0\r\n\r\n" + os.urandom(256))
    _raw_tcp(port, ZMTP_GREETING + TWO_GIB_FRAME)
    b.send(0, "data", "open", [GENUINE])
    np.testing.assert_array_equal(a.recv(1, "data", "open").arrays[0], GENUINE)
    assert a._early_bytes[1] == 0 and not a._early[1]  # nothing forged was buffered


def test_the_same_forgery_works_without_curve() -> None:
    """The control: over --insecure channels the forged frame is taken for the real one
    (the issue's silent corruption), so the test above is meaningful."""
    cluster = Cluster.local(1)
    a, b = _open(0, cluster, None), _open(1, cluster, None)
    try:
        _plain_push(cluster.endpoint(0).port, [_forged_frames()])
        deadline = time.monotonic() + 5
        while not a._early[1] and time.monotonic() < deadline:  # wait for it to land
            received = a._receive(0.1)
            if received is not None:
                a._accept(*received)
        b.send(0, "data", "open", [GENUINE])
        np.testing.assert_array_equal(a.recv(1, "data", "open").arrays[0], FORGED)
    finally:
        a.close()
        b.close()


def test_a_stranger_with_its_own_curve_key_is_refused(pair) -> None:
    """A CURVE client that knows role 0's public key but holds a key of its own: ZAP refuses
    it (the stranger sees an auth failure) and nothing it sent is delivered."""
    a, b, cluster, _ = pair
    stranger = RoleKeys.generate("stranger")
    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        monitor = push.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        push.setsockopt(zmq.CURVE_SERVERKEY, cluster.public_key(0).encode())
        push.setsockopt(zmq.CURVE_PUBLICKEY, stranger.public_key.encode())
        push.setsockopt(zmq.CURVE_SECRETKEY, stranger.secret_key.encode())
        push.connect(f"tcp://127.0.0.1:{cluster.endpoint(0).port}")
        push.send_multipart(_forged_frames(), flags=zmq.NOBLOCK)
        assert monitor.poll(5000), "the stranger was never refused"
        push.disable_monitor()
        monitor.close(linger=0)
    finally:
        ctx.destroy(linger=0)
    b.send(0, "data", "open", [GENUINE])
    np.testing.assert_array_equal(a.recv(1, "data", "open").arrays[0], GENUINE)


def test_wrong_key_on_file_is_one_line_naming_role_and_endpoint() -> None:
    """Role 1's cluster file lists a wrong key for role 0: role 0 cannot get an
    authenticated link to role 1 and says so, naming role 1 and its endpoint, long before
    the timeout."""
    keys = _keys()
    right = Cluster.local(1).with_keys(keys)
    wrong_view = right.with_keys([RoleKeys.generate("impostor"), keys[1]])
    a, b = _open(0, right, keys[0], timeout_s=20.0), _open(1, wrong_view, keys[1], timeout_s=20.0)
    try:
        start = time.monotonic()
        with pytest.raises(PeerError) as info:
            a.recv(1, "data", "open")
        elapsed = time.monotonic() - start
    finally:
        a.close()
        b.close()
    text = str(info.value)
    assert "dealer" in text and f"127.0.0.1:{right.endpoint(1).port}" in text, text
    assert "refused our key" in text, text
    assert "\n" not in text
    assert elapsed < 15, f"took {elapsed:.1f} s of a 20 s timeout"


def test_relay_sees_no_plaintext(tmp_path: Path) -> None:
    """A TCP relay between the roles records every byte: over CURVE it holds no header
    field, label, seed or array value; over --insecure (the control) it holds them all."""
    secret_label = "label-that-must-not-leak"
    seed = b"SEED-MUST-NOT-LEAK!!"
    marker = np.full(64, 0x1122334455667788, dtype=np.int64)
    for secure in (True, False):
        keys = _keys() if secure else [None, None]
        relay = _Relay()  # listening before the roles' ports are picked: no collision
        cluster = Cluster.local(1)
        if secure:
            cluster = cluster.with_keys(keys)  # type: ignore[arg-type]
        relay.target = cluster.endpoint(0).port
        # Role 1 reaches role 0 through the relay; role 0 listens on its real port.
        ep0 = cluster.endpoint(0)
        via_relay = Cluster((Endpoint(ep0.host, relay.port, ep0.public_key),), cluster.dealer)
        a, b = _open(0, cluster, keys[0]), _open(1, via_relay, keys[1])
        try:
            b.send(0, "hello", secret_label, [marker], meta={"seed": seed})
            got = a.recv(1, "hello", secret_label)
            np.testing.assert_array_equal(got.arrays[0], marker)
        finally:
            a.close()
            b.close()
            captured = relay.stop()
        assert captured, "the relay carried nothing"
        leaks = [s for s in (b"hello", secret_label.encode(), seed, marker.tobytes()[:8], b"lbl")
                 if s in captured]
        if secure:
            assert not leaks, f"plaintext on a CURVE link: {leaks}"
        else:
            assert len(leaks) == 5, f"control: the insecure link should show everything, saw {leaks}"


def test_a_recorded_session_replayed_is_refused() -> None:
    """Everything role 1 sent to role 0 in one CURVE session, recorded by a relay, then
    replayed byte for byte on a new connection: CURVE's per-connection keys and cookies
    make it worthless; nothing reaches role 0's protocol."""
    keys = _keys()
    relay = _Relay()  # listening before the roles' ports are picked: no collision
    cluster = Cluster.local(1).with_keys(keys)
    relay.target = cluster.endpoint(0).port
    ep0 = cluster.endpoint(0)
    via_relay = Cluster((Endpoint(ep0.host, relay.port, ep0.public_key),), cluster.dealer)
    a, b = _open(0, cluster, keys[0]), _open(1, via_relay, keys[1])
    try:
        b.send(0, "data", "open", [FORGED])
        np.testing.assert_array_equal(a.recv(1, "data", "open").arrays[0], FORGED)
        relay.stop()
        recorded = bytes(relay.client_to_server)
        assert len(recorded) > 200, "nothing recorded"
        _raw_tcp(ep0.port, recorded)  # the replay: the old HELLO, INITIATE and MESSAGE
        b.close()
        b2 = _open(1, cluster, keys[1])  # the genuine role 1, reconnecting directly
        try:
            b2._send_seq[0] = 1  # it continues role 1's stream: message 1
            b2.send(0, "data", "open", [GENUINE])
            np.testing.assert_array_equal(a.recv(1, "data", "open").arrays[0], GENUINE)
            assert not a._early[1]
        finally:
            b2.close()
    finally:
        a.close()
        b.close()


class _Relay:
    """Forwards one TCP connection at a time to `target_port`, recording what it carries."""

    def __init__(self, target_port: int = 0) -> None:
        """Listens at once (so no port picked later can be its own); `target` may be set
        after, before the first connection."""
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen()
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self.target = target_port
        self._captured = bytearray()
        self.client_to_server = bytearray()  # what the connecting side sent, in order
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for src, dst, outbound in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, outbound), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool) -> None:
        src.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            with self._lock:
                self._captured += data
                if outbound:
                    self.client_to_server += data
            try:
                dst.sendall(data)
            except OSError:
                break
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> bytes:
        self._stop.set()
        self._accept_thread.join(5)
        for t in self._threads:
            t.join(5)
        self._server.close()
        return bytes(self._captured)


# -- key files ------------------------------------------------------------------------

def test_key_files_roundtrip_with_private_mode(tmp_path: Path) -> None:
    keys = RoleKeys.generate("party0")
    secret, public = keys.save(tmp_path)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert RoleKeys.load(secret) == keys
    assert load_public_key(public) == keys.public_key
    assert keys.secret_key not in repr(keys)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    secret, _ = RoleKeys.generate("party0").save(tmp_path)
    secret.chmod(0o644)
    with pytest.raises(KeyFileError, match=r"readable by others \(mode 0644\); run: chmod 600"):
        RoleKeys.load(secret)


def test_missing_or_mismatched_key_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        RoleKeys.load(tmp_path / "nope.key")
    a, b = RoleKeys.generate("a"), RoleKeys.generate("b")
    mixed = RoleKeys("a", a.public_key, b.secret_key)
    path, _ = mixed.save(tmp_path)
    with pytest.raises(KeyFileError, match="public key does not match the secret key"):
        RoleKeys.load(path)


def test_own_key_must_match_the_cluster_file() -> None:
    keys = _keys()
    cluster = Cluster.local(1).with_keys(keys)
    with pytest.raises(ClusterError, match="not the one the cluster file lists for party 0"):
        _open(0, cluster, RoleKeys.generate("party0"))
    with pytest.raises(ClusterError, match="no public_key for dealer"):
        Cluster.local(1).public_key(1)


def test_cluster_file_rejects_bad_and_shared_keys() -> None:
    good = RoleKeys.generate("x").public_key
    d = {"parties": [{"host": "127.0.0.1", "port": 5000, "public_key": "short"}],
         "dealer": {"host": "127.0.0.1", "port": 5001}}
    with pytest.raises(ClusterError, match="not a CURVE key"):
        Cluster.from_dict(d)
    d["parties"][0]["public_key"] = good
    d["dealer"]["public_key"] = good  # type: ignore[index]
    with pytest.raises(ClusterError, match="share one public key"):
        Cluster.from_dict(d)


# -- what one party learns ----------------------------------------------------------------

def _received_words(monkeypatch: pytest.MonkeyPatch, x_value: float, n: int = 4096) -> np.ndarray:
    """Every 64-bit word party 1 receives from party 0 while they multiply party 0's
    secret x (all elements = x_value) by party 1's secret y."""
    from privit.parties.inmemory_run import run_in_memory
    from privit.protocols import beaver, ring, sharing
    from privit.protocols.registry import CORRELATIONS

    seen: list[np.ndarray] = []
    original = MemoryChannel._receive

    def spy(self: MemoryChannel, timeout_s: float):  # type: ignore[no-untyped-def]
        got = original(self, timeout_s)
        if got is not None and self.role == 1 and got[1] == 0:
            header = msgpack.unpackb(got[0][0])
            if header["k"] == "data":
                seen.extend(np.frombuffer(f, dtype=np.int64) for f in got[0][1:])
        return got

    monkeypatch.setattr(MemoryChannel, "_receive", spy)
    cfg = RunConfig(n_parties=2, session_id="uniform")
    gen = torch.Generator().manual_seed(5)
    y_plain = torch.randn(n, generator=gen, dtype=torch.float64)

    def job(sess):  # type: ignore[no-untyped-def]
        x = sharing.share_input(sess, 0, ring.encode(torch.full((n,), x_value), 16)
                                if sess.party_id == 0 and not sess.is_tracing else None, (n,))
        y = sharing.share_input(sess, 1, ring.encode(y_plain, 16)
                                if sess.party_id == 1 and not sess.is_tracing else None, (n,))
        return beaver.beaver_mul(sess, x, y)

    run_in_memory(cfg, job, CORRELATIONS)
    monkeypatch.setattr(MemoryChannel, "_receive", original)
    words = np.concatenate(seen)
    assert words.size >= n, "party 1 received less than one word per element"
    return words


def _chi_square(counts: np.ndarray, expected: np.ndarray) -> float:
    return float(((counts - expected) ** 2 / expected).sum())


def test_shares_received_are_uniform_and_independent_of_the_input(monkeypatch) -> None:
    """Per bit position the frequency of ones is 1/2 within 5 sigma; the top byte is
    uniform (chi-square, 255 df, below mean + 6 sd = 391); and the top bytes seen for two
    very different inputs of party 0 are homogeneous (the same bound)."""
    runs = [_received_words(monkeypatch, v) for v in (0.0, 12345.678)]
    bound = 255 + 6 * (2 * 255) ** 0.5
    tops = []
    for words in runs:
        bits = (words.view(np.uint64)[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
        ones = bits.sum(axis=0).astype(np.float64)
        sd = (words.size * 0.25) ** 0.5
        assert np.all(np.abs(ones - words.size / 2) < 5 * sd), "a bit position is biased"
        top = np.bincount((words.view(np.uint64) >> np.uint64(56)).astype(np.int64), minlength=256)
        assert _chi_square(top, np.full(256, words.size / 256)) < bound
        tops.append(top)
    a, b = tops
    pooled = (a + b) / (a.sum() + b.sum())
    stat_ab = _chi_square(a, pooled * a.sum()) + _chi_square(b, pooled * b.sum())
    assert stat_ab < bound, f"the two inputs' shares differ: chi-square {stat_ab:.0f}"


# -- found in review ------------------------------------------------------------------------

def test_notify_abort_returns_when_a_peer_cannot_be_reached() -> None:
    """A peer without a key on file (nothing to reach it with) or one that is down: the
    best-effort abort gives up within its linger, it never hangs the failing role."""
    from privit.parties.transport import notify_abort

    keys = _keys()
    no_key_for_dealer = Cluster((Endpoint("127.0.0.1", Cluster.local(1).endpoint(0).port,
                                          keys[0].public_key),), Endpoint("127.0.0.1", 9))
    done = threading.Event()
    worker = threading.Thread(target=lambda: (notify_abort(no_key_for_dealer, 0, [1], "x", keys[0],
                                                           linger_s=0.5), done.set()), daemon=True)
    worker.start()
    worker.join(10)
    assert done.is_set(), "notify_abort hung"


def test_a_frame_at_the_limit_passes_over_curve() -> None:
    """ZMQ_MAXMSGSIZE leaves room for CURVE's per-frame bytes: a frame of exactly the
    frame limit arrives (the sender refuses anything larger)."""
    from privit.parties.channel import ChannelLimits

    keys = _keys()
    cluster = Cluster.local(1).with_keys(keys)
    limits = ChannelLimits(max_frame_bytes=1 << 20)
    a = ZmqChannel(0, cluster, [1], Counters(), 10.0, _name, keys=keys[0], limits=limits)
    b = ZmqChannel(1, cluster, [0], Counters(), 10.0, _name, keys=keys[1], limits=limits)
    try:
        full = np.arange((1 << 20) // 8, dtype=np.int64)
        b.send(0, "data", "open", [full])
        np.testing.assert_array_equal(a.recv(1, "data", "open").arrays[0], full)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize(("change", "message"), [
    ({"name": 5}, "config.name must be str"),
    ({"teacher": 0}, "config.teacher must be bool"),
    ({"dim": 1 << 20}, "config.dim = 1048576 is outside"),
    ({"depth": True}, "config.depth must be int"),
])
def test_an_announced_architecture_is_checked_strictly(change: dict, message: str) -> None:
    """What party 0 announces is another role's input: exact types, bounded sizes."""
    from privit.models.config import get_config
    from privit.models.private_weights import ArchitectureError, PrivateArch, alpha_from_mu

    config = get_config("vit_7_4_32")
    data = PrivateArch.from_alpha(config, alpha_from_mu(config, 0.5, 0)).to_dict()
    data["config"].update(change)
    with pytest.raises(ArchitectureError, match=message):
        PrivateArch.from_dict(data)


def test_a_key_that_does_not_decode_is_refused() -> None:
    from privit.parties.keys import check_public_key

    with pytest.raises(KeyFileError, match="does not decode to 32 bytes"):
        check_public_key("#" * 40, "cluster file")


def test_a_fast_sender_holds_a_bounded_queue_of_large_frames(
        pair: tuple[ZmqChannel, ZmqChannel, Cluster, list[RoleKeys]]) -> None:
    """Frames of 16 MiB or more are tracked: a sender never holds more than
    MAX_QUEUED_BYTES of them unsent per link (over CURVE, ~0.5 GB/s), and it does not need
    the peer's Python thread to read them (its I/O thread drains the link): 8 messages of
    32 MiB go out before the receiver reads any, and all arrive intact."""
    from privit.parties import transport

    a, b, _, _ = pair
    size = (32 << 20) // 8
    for i in range(8):
        b.send(0, "data", "big", [np.full(size, i, dtype=np.int64)])
        held = sum(n for _, n in b._links[0].queued)
        assert held <= transport.MAX_QUEUED_BYTES, held
    for i in range(8):
        got = a.recv(1, "data", "big").arrays[0]
        assert got.shape == (size,) and int(got[0]) == i and int(got[-1]) == i


def test_one_message_of_large_frames_over_the_queue_bound_is_sent(
        pair: tuple[ZmqChannel, ZmqChannel, Cluster, list[RoleKeys]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ZeroMQ sends a multipart message only once its last part is queued, so the queue
    bound is applied per message: a message whose large frames sum past MAX_QUEUED_BYTES
    goes out whole (it once waited forever for its own first frame; the dealer's FSS keys
    for a 197x768 ReLU are such a message)."""
    import threading

    from privit.parties import transport

    monkeypatch.setattr(transport, "MAX_QUEUED_BYTES", 24 << 20)
    a, b, _, _ = pair
    size = (16 << 20) // 8
    parts = [np.full(size, i, dtype=np.int64) for i in range(3)]
    sender = threading.Thread(target=b.send, args=(0, "data", "big", parts), daemon=True)
    sender.start()
    sender.join(timeout=30)
    assert not sender.is_alive(), "the sender waited on its own message"
    got = a.recv(1, "data", "big").arrays
    assert [int(g[0]) for g in got] == [0, 1, 2] and all(g.shape == (size,) for g in got)
