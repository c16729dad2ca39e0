"""`ZmqChannel`: the framed channel over ZeroMQ TCP between OS processes.

Topology: every role binds ONE PULL socket on its cluster endpoint and connects one PUSH
socket to each peer's endpoint. A message is one multipart ZeroMQ message (the frames of
parties/wire.py); ZeroMQ keeps each link FIFO and the framing layer checks the sequence
numbers anyway. A PUSH socket may connect before its peer has bound: ZeroMQ queues and
retries (every 20 ms, backing off to 200 ms), so roles may start in any order.

- High-water marks are finite but far above need (HWM_MESSAGES per socket): two parties
  that both send a large message before receiving do not block, and a peer cannot queue
  without bound. Array frames of 16 MiB or more are tracked until ZeroMQ has sent them,
  and a sender waits while a link holds more than MAX_QUEUED_BYTES of them (`_make_room`):
  the peer's I/O thread takes them off the wire whatever its Python thread does, so this
  bounds a fast sender's memory without coupling it to the peer's progress. Array frames of 64 KiB or more
  (`COPY_THRESHOLD`) are handed to ZeroMQ without copying, so an array passed to `send`
  must not be changed in place afterwards (protocols build new tensors; with network
  emulation the frames are copied anyway). Smaller frames are copied, which is faster.
- Receiving: every frame comes as a zero-copy `zmq.Frame` (its `more` flag says whether
  another part follows, with no getsockopt call from Python); the header is copied to
  bytes, array frames stay Frames whose buffers are ours and writable; `Session.recv`
  hands large ones to torch as they are and copies small ones.
- Peer liveness: each PUSH socket sends ZMTP heartbeats (PING every `heartbeat_ivl_s`,
  at most 1 s) and drops its link when nothing (no PONG) came back for the channel's
  timeout (ZMQ_HEARTBEAT_TIMEOUT). The peer's libzmq I/O thread answers the PINGs
  whatever its Python thread is doing, so a link that stays up means the peer's
  process is alive, even in a long computation; a peer that dies closes it at once, and
  one that is frozen (SIGSTOP, a frozen VM) or unreachable lets it drop after the
  timeout. The PULL socket sends no heartbeats of its own (it answers the peers'): its
  PONGs would queue behind a large frame the peer is sending, and the PUSH side's
  heartbeats already cover the peer.
- Each PUSH socket has a socket monitor. EVENT_HANDSHAKE_SUCCEEDED marks the link up
  (`peer_alive`); EVENT_DISCONNECTED after that means the peer's socket closed or its
  heartbeats stopped. A peer that finished normally closes too, so `peer_gone` reports
  it only once nothing has arrived for `GONE_GRACE_S` (its last messages, sent before it
  closed, have had time to land). A link that never came up (the peer never started) is
  neither alive nor gone: the wait for it ends at the timeout.
- close(): delivers what is queued (the emulation's delay queue, then ZeroMQ's), bounded
  by the timeout (LINGER), then releases the sockets; links to peers known to be gone
  are dropped at once. The PUSH sockets live in one private `zmq.Context` and the PULL
  socket in another, so the PUSH context can be terminated (which waits for the queued
  frames to reach the kernel) while the PULL socket is still open: peers never see us
  close before our last messages left. A large last message still has to be read and
  (under CURVE, as one box) decrypted by the peer after it reached the kernel, which at
  256 MB took longer than `GONE_GRACE_S`: the peer saw our PULL close and declared us
  gone with the message half landed. So the PULL socket also stays open until each large
  message has had the time it would take at `LANDING_BYTES_PER_S` since it was handed to
  ZeroMQ (bounded by the timeout; a small last message adds nothing). No global context
  is used (pyzmq's own helper thread for zero-copy sends aside).
- Bind host: by default the endpoint's own host; pass bind_host="0.0.0.0" to listen on
  every interface when the cluster file names an address that is not local (NAT,
  containers), i.e. across machines.
"""
from __future__ import annotations

import errno
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from privit.parties.channel import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_WAIT_S,
    ChannelLimits,
    FramedChannel,
    PeerWait,
    abort_message,
)
from privit.parties.cluster import Cluster, Endpoint
from privit.parties.config import NETWORK_PRESETS, NetworkConfig
from privit.parties.counters import Counters
from privit.parties.keys import RoleKeys
from privit.parties.netem import DelaySender
from privit.parties.wire import MAX_ARRAYS, MAX_HEADER_BYTES, encode, message_nbytes

_log = logging.getLogger(__name__)

COPY_THRESHOLD = 1 << 16
TRACK_THRESHOLD = 16 << 20  # array frames this large are tracked until ZeroMQ has sent them
MAX_QUEUED_BYTES = 128 << 20  # per link: tracked bytes handed to ZeroMQ and not yet sent
SEND_POLL_S = 0.25
GONE_GRACE_S = 0.5
LANDING_BYTES_PER_S = 20e6  # the slowest a large message is encrypted, sent and decrypted:
# pyzmq 25.1's bundled libzmq (setup.py's lower bound) moved 128 MiB under CURVE at 31-35
# MB/s end to end on the 2-core AMD EPYC VM (pyzmq 27.3: 200-215 MB/s); close() keeps the
# PULL socket open this long per byte of a large message after handing it to ZeroMQ
ABORT_LINGER_S = 1.0  # after abort(): for peers that are up
ABORT_STARTING_LINGER_S = 5.0  # after abort(): for peers never connected (maybe starting)
RECONNECT_IVL_MS = 20
RECONNECT_IVL_MAX_MS = 200
HEARTBEAT_IVL_MAX_S = 1.0  # PING at least this often (more often for timeouts under 4 s)
# A link is up once its ZMTP handshake (CURVE or NULL) succeeded; a TCP connection whose
# handshake keeps failing is a peer that does not accept our key, or a wrong key on file.
_MECHANISM_MISMATCH = int(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_MONITOR_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED
HANDSHAKE_FAILURE_GRACE_S = 2.0  # failed handshakes for this long, and none succeeded: an error
HWM_MESSAGES = 100_000  # per socket: far above any protocol step's outstanding messages
CURVE_FRAME_OVERHEAD = 64  # CURVE adds 33 bytes to every frame; this leaves a margin
_SNDMORE = int(zmq.SNDMORE)


class TransportError(RuntimeError):
    """The transport cannot be set up or used (port in use, bad address, closed)."""


def tcp_address(host: str, port: int) -> str:
    """A ZeroMQ TCP address; IPv6 literals get brackets."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


@dataclass
class _Link:
    """One outgoing link: the PUSH socket to a peer and what its monitor told us."""

    address: str
    push: zmq.Socket
    monitor: zmq.Socket
    connected: bool = False
    disconnected_at: float | None = None
    handshake_failed_at: float | None = None  # first failure since the last success
    handshake_failure: str = ""
    # Large frames handed to ZeroMQ and not yet sent: (tracker, bytes), oldest first.
    queued: deque[tuple[zmq.MessageTracker, int]] = field(default_factory=deque)


class _RoleAuthenticator(ThreadAuthenticator):
    """ZAP handler of one role's receiving socket: admits exactly the CURVE keys of this
    run's other roles, and labels each admitted connection with its role id, which ZeroMQ
    then attaches to every message as its "User-Id" property."""

    def __init__(self, context: zmq.Context, key_roles: dict[str, int]) -> None:
        super().__init__(context, log=logging.getLogger("privit.zap"))
        self._key_roles = dict(key_roles)

    def callback(self, domain: str, key: bytes | str) -> bool:
        """The credentials check (pyzmq calls it with the client's Z85 key)."""
        text = key.decode("ascii") if isinstance(key, bytes) else key
        return text in self._key_roles

    def curve_user_id(self, client_public_key: bytes) -> str:
        return str(self._key_roles[z85.encode(client_public_key).decode("ascii")])


def _set_curve_client(sock: zmq.Socket, server_key: str, keys: RoleKeys) -> None:
    """Make `sock` a CURVE client of the server whose public key is `server_key`."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode("ascii"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public_key.encode("ascii"))
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret_key.encode("ascii"))


def _handshake_failure_text(event: int, value: int, secure: bool) -> str:
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return f"it refused our key (ZAP status {value})"
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == _MECHANISM_MISMATCH:
        return ("one side runs --insecure and the other CURVE" if secure
                else "it runs CURVE and this role --insecure")
    if secure:
        return ("the CURVE handshake failed: the cluster file's public key for it is not its "
                "key, or it is not a privit role")
    return "the handshake failed (it is not a privit role, or it expects CURVE)"


class ZmqChannel(FramedChannel):
    def __init__(
        self,
        role: int,
        cluster: Cluster,
        peers: Sequence[int],
        counters: Counters,
        timeout_s: float,
        role_name: Callable[[int], str],
        network: NetworkConfig = NETWORK_PRESETS["none"],
        bind_host: str | None = None,
        keys: RoleKeys | None = None,
        limits: ChannelLimits = DEFAULT_LIMITS,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        """`keys`: this role's CURVE key pair; every link is then authenticated and
        encrypted, and only the keys the cluster lists for `peers` are admitted. None is
        an --insecure channel (plain TCP, the sender named by its own header).
        `timeout_s` bounds silence: a wait with no live link, and a link whose peer
        answers no heartbeat (module docstring)."""
        super().__init__(role, peers, counters, timeout_s, role_name, limits, max_wait_s)
        if role in self.peers:
            raise ValueError(f"{role_name(role)} cannot be its own peer")
        self.cluster = cluster
        self.network = network
        self.keys = keys
        self._auth: _RoleAuthenticator | None = None
        self._closed = False
        self._aborted = False
        self._last_arrival = time.monotonic()
        self._landed_by = 0.0  # monotonic time by which every large message sent has landed
        self._rcvtimeo_ms = -1
        self._linger_ms = max(0, int(timeout_s * 1000))
        self.heartbeat_ivl_s = min(HEARTBEAT_IVL_MAX_S, timeout_s / 4)
        self._push_ctx = zmq.Context()
        self._pull_ctx = zmq.Context()
        self._links: dict[int, _Link] = {}
        self._pull: zmq.Socket | None = None
        self._delay: DelaySender | None = None
        try:
            if keys is not None:
                cluster.check_own_key(role, keys)
                self._auth = _RoleAuthenticator(
                    self._pull_ctx, {cluster.public_key(p): p for p in self.peers})
                self._auth.start()
                self._auth.configure_curve_callback("*", credentials_provider=self._auth)
            self._pull = self._bind(cluster.endpoint(role), bind_host)
            _log.debug("%s listens on %s (%s)", role_name(role),
                       tcp_address(bind_host or cluster.endpoint(role).host,
                                   cluster.endpoint(role).port),
                       "CURVE" if keys is not None else "plain TCP, --insecure")
            for peer in self.peers:
                self._links[peer] = self._connect(cluster.endpoint(peer))
                _log.debug("%s connects to %s at %s", role_name(role), role_name(peer),
                           self._links[peer].address)
        except BaseException:
            self._release(drop_pending=True)
            raise
        if network.emulated:
            # From here on only the delay thread touches the PUSH sockets.
            self._delay = DelaySender(network, self._push_send, name=f"netem-{role}")

    # -- setup ------------------------------------------------------------------------
    def _bind(self, ep: Endpoint, bind_host: str | None) -> zmq.Socket:
        host = bind_host or ep.host
        sock = self._pull_ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, HWM_MESSAGES)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, int(":" in host))
        # A peer that sends a larger frame is disconnected by ZeroMQ before it is buffered.
        # libzmq checks the frame as it arrives, CURVE's 33 bytes of box and nonce included.
        sock.setsockopt(zmq.MAXMSGSIZE,
                        max(self.limits.max_frame_bytes, MAX_HEADER_BYTES) + CURVE_FRAME_OVERHEAD)
        if self.keys is not None:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.secret_key.encode("ascii"))
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.public_key.encode("ascii"))
        try:
            sock.bind(tcp_address(host, ep.port))
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            who = self.role_name(self.role)
            if exc.errno == errno.EADDRINUSE:
                raise TransportError(f"port {host}:{ep.port} for {who} is already in use") from None
            hint = "" if bind_host else " (across machines, bind to 0.0.0.0)"
            raise TransportError(
                f"cannot bind {who} to {host}:{ep.port}: {exc.strerror}{hint}"
            ) from None
        return sock

    def _connect(self, ep: Endpoint) -> _Link:
        sock = self._push_ctx.socket(zmq.PUSH)
        try:
            sock.setsockopt(zmq.SNDHWM, HWM_MESSAGES)
            if self.keys is not None:
                if ep.public_key is None:  # check_own_key/public_key ran first; for mypy
                    raise TransportError(f"no public key for {ep}")
                _set_curve_client(sock, ep.public_key, self.keys)
            # ZMTP heartbeats (libzmq >= 4.2): the link drops when the peer answers none
            # for the timeout; the monitor then reports EVENT_DISCONNECTED.
            sock.setsockopt(zmq.HEARTBEAT_IVL, max(1, int(self.heartbeat_ivl_s * 1000)))
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, int(self.timeout_s * 1000)))
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise TransportError(f"cannot set up the link to {ep}: {exc.strerror}") from None
        except BaseException:
            sock.close(linger=0)
            raise
        sock.setsockopt(zmq.LINGER, self._linger_ms)
        sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
        sock.setsockopt(zmq.IPV6, int(":" in ep.host))
        monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
        address = tcp_address(ep.host, ep.port)
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
            raise TransportError(f"cannot connect to {ep}: {exc.strerror}") from None
        return _Link(address, sock, monitor)

    # -- moving frames ----------------------------------------------------------------
    def _push_send(self, dst: int, frames: list[Any]) -> None:
        # Frame by frame rather than send_multipart, whose per-frame checks cost ~3 us.
        # Large array frames (memoryviews of 64 KiB or more) go without copying.
        # Room is made once per message, before its first frame: ZeroMQ sends a multipart
        # message only once its last part is queued, so waiting between the parts for an
        # earlier part of the same message to leave would wait forever.
        link = self._links[dst]
        tracked = self._delay is None
        large = sum(f.nbytes for f in frames
                    if isinstance(f, memoryview) and f.nbytes >= TRACK_THRESHOLD)
        if large:
            if tracked:
                self._make_room(dst, link, large)
            self._landed_by = max(self._landed_by, time.monotonic() + large / LANDING_BYTES_PER_S)
        last = len(frames) - 1
        for i, frame in enumerate(frames):
            copy = not isinstance(frame, memoryview) or frame.nbytes < COPY_THRESHOLD
            flags = _SNDMORE if i < last else 0
            if copy or frame.nbytes < TRACK_THRESHOLD or not tracked:
                link.push.send(frame, flags, copy=copy)
                continue
            tracker = link.push.send(frame, flags, copy=False, track=True)
            link.queued.append((tracker, frame.nbytes))

    def _make_room(self, dst: int, link: _Link, nbytes: int) -> None:
        """Wait until ZeroMQ has sent enough of this link's earlier large frames that
        `nbytes` more stay within MAX_QUEUED_BYTES: a sender that produces faster than the
        link (CURVE encrypts at ~0.5 GB/s) holds a bounded queue, not every message. The
        wait follows recv's rules (channel.PeerWait): on while the peer is alive, an error
        naming it once it is gone, the timeout for silence, the cap. Not with network
        emulation, whose delay thread sends (and already holds copies of what is queued)."""
        queued = sum(n for _, n in link.queued)
        wait: PeerWait | None = None
        while link.queued and (link.queued[0][0].done or queued + nbytes > MAX_QUEUED_BYTES):
            tracker, size = link.queued[0]
            if not tracker.done:
                wait = wait or PeerWait(self, dst, self.timeout_s,
                                        max(self.max_wait_s, self.timeout_s),
                                        during="while we send to it", waiting="sending to",
                                        stuck="took nothing we sent")
                try:
                    tracker.wait(min(SEND_POLL_S, max(wait.check(), 1e-3)))
                except zmq.NotDone:
                    continue
            link.queued.popleft()
            queued -= size

    def _transmit(self, dst: int, frames: list[Any]) -> None:
        if self._closed:
            raise TransportError(f"{self.role_name(self.role)}'s channel is closed")
        if self._delay is not None:
            self._delay.send(dst, frames, message_nbytes(frames))
        else:
            self._push_send(dst, frames)

    def _receive(self, timeout_s: float) -> tuple[list[Any], int | None] | None:
        if self._closed or self._pull is None:
            raise TransportError(f"{self.role_name(self.role)}'s channel is closed")
        # A blocking receive with RCVTIMEO wakes up faster than NOBLOCK + Poller (no
        # exception and no poller object per call: ~25 us less per round trip here).
        timeout_ms = max(0, int(timeout_s * 1000))
        if timeout_ms != self._rcvtimeo_ms:
            self._pull.setsockopt(zmq.RCVTIMEO, timeout_ms)
            self._rcvtimeo_ms = timeout_ms
        pull = self._pull
        try:
            # Every frame as a zmq.Frame: its `more` flag is read from the message itself,
            # where asking the socket (RCVMORE) is a getsockopt call per frame; together
            # ~4 us less per message here. The header's bytes are copied (it is small).
            header = pull.recv(copy=False)
        except zmq.Again:
            return None
        # Under CURVE, the role the ZAP handler bound to this connection; else unknown.
        sender = None if self.keys is None else int(header.get("User-Id"))
        frames: list[Any] = [header.bytes]
        # The other parts of a multipart message are already here.
        more = header.more
        overflow = False
        while more:
            frame = pull.recv(copy=False)
            more = frame.more
            if len(frames) <= MAX_ARRAYS:
                frames.append(frame)
            else:
                overflow = True  # read and drop the rest; not kept in memory
        if overflow:
            frames.append(b"")  # one frame more than a header may list: decode refuses it
        self._last_arrival = time.monotonic()
        return frames, sender

    # -- peer liveness ----------------------------------------------------------------
    def _poll_monitors(self) -> None:
        for link in self._links.values():
            while True:
                try:
                    event = recv_monitor_message(link.monitor, zmq.NOBLOCK)
                except zmq.Again:
                    break
                kind = event["event"]
                if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    link.connected = True
                    link.disconnected_at = None
                    link.handshake_failed_at = None
                elif kind == zmq.EVENT_DISCONNECTED and link.connected:
                    link.connected = False
                    link.disconnected_at = time.monotonic()
                elif kind & _HANDSHAKE_FAILED and not link.connected:
                    if link.handshake_failed_at is None:
                        link.handshake_failed_at = time.monotonic()
                    link.handshake_failure = _handshake_failure_text(
                        kind, int(event["value"]), self.keys is not None)

    def link_state(self, peer: int) -> str:
        if self._closed or peer not in self._links:
            return ""
        self._poll_monitors()
        link = self._links[peer]
        where = link.address[len("tcp://"):]
        if link.connected:
            return f" at {where} (link up)"
        if link.disconnected_at is not None:
            return f" at {where} (link lost)"
        if link.handshake_failure:
            return f" at {where} (no link: {link.handshake_failure})"
        return f" at {where} (no link: nothing answers there yet)"

    def peer_gone(self, peer: int) -> str | None:
        if self._closed or peer not in self._links:
            return None
        self._poll_monitors()
        link = self._links[peer]
        if link.handshake_failed_at is not None and not link.connected and peer not in self.heard_from:
            if time.monotonic() - link.handshake_failed_at >= HANDSHAKE_FAILURE_GRACE_S:
                where = link.address[len("tcp://"):]
                return f"unreachable: no authenticated link at {where}: {link.handshake_failure}"
            return None
        if link.disconnected_at is None:
            return None
        quiet = time.monotonic() - max(link.disconnected_at, self._last_arrival)
        if quiet < GONE_GRACE_S:
            return None
        return (f"its link at {link.address[len('tcp://'):]} dropped: its socket closed, or "
                f"it answered no heartbeat for {self.timeout_s:g} s")

    def peer_alive(self, peer: int) -> bool:
        if self._closed or peer not in self._links:
            return False
        self._poll_monitors()
        return self._links[peer].connected

    # -- teardown ---------------------------------------------------------------------
    def abort(self, reason: str) -> None:
        """Tell every peer we are stopping.

        The run is failing, so close() then waits less than the whole timeout for the
        aborts to leave: ABORT_LINGER_S for a peer known to be up (its link connected, or
        it sent us something; if it closed meanwhile, the abort could never leave) and
        ABORT_STARTING_LINGER_S for one never seen, which may still be starting and needs
        the abort to stop.
        """
        self._aborted = True
        super().abort(reason)

    def close(self) -> None:
        """Deliver queued messages (bounded by the timeout), then release every socket.

        Links to peers already known to be gone are closed without waiting.
        """
        if self._closed:
            return
        self._closed = True
        error: BaseException | None = None
        if self._delay is not None:
            wait_s = ABORT_LINGER_S if self._aborted else self.timeout_s
            try:
                if not self._delay.close(wait_s):
                    error = TransportError(
                        f"{self.role_name(self.role)} could not hand every delayed message "
                        f"to ZeroMQ within {wait_s:g} s of its emulated delivery time"
                    )
            except BaseException as exc:  # report after the sockets are released
                error = exc
        try:
            self._poll_monitors()
        except zmq.ZMQError:
            pass
        self._release(drop_pending=False)
        if isinstance(error, TransportError):
            raise error
        if error is not None:
            raise TransportError(str(error)) from error

    def _release(self, drop_pending: bool) -> None:
        """Close every socket. Unless `drop_pending`, queued frames to peers that are not
        known to be gone get up to LINGER to leave (see `abort` for a failing run)."""
        for peer, link in self._links.items():
            linger_ms: int | None = None  # the socket's LINGER: the timeout
            if drop_pending or link.disconnected_at is not None:
                linger_ms = 0
            elif self._aborted:
                seen = link.connected or peer in self.heard_from
                wait_s = ABORT_LINGER_S if seen else ABORT_STARTING_LINGER_S
                linger_ms = min(self._linger_ms, int(wait_s * 1000))
            try:
                link.push.disable_monitor()
            except zmq.ZMQError:
                pass
            link.monitor.close(linger=0)
            link.push.close(linger=linger_ms)
        # Terminating the PUSH context waits (up to LINGER) for queued frames to leave.
        self._push_ctx.term()
        if not drop_pending and not self._aborted:
            # Our PULL socket closing is what the peers see as our link dropping: keep it
            # open while a large last message may still be landing (module docstring).
            time.sleep(max(0.0, min(self._landed_by - time.monotonic(), self.timeout_s)))
        if self._pull is not None:
            self._pull.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._pull_ctx.term()

    def __enter__(self) -> ZmqChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def notify_abort(cluster: Cluster, role: int, peers: Sequence[int], reason: str,
                 keys: RoleKeys | None, linger_s: float = ABORT_STARTING_LINGER_S) -> None:
    """Best effort: tell `peers` that `role` stopped, for a role that has no channel.

    A role that fails before its channel is up (its port is taken, say) would otherwise
    leave its peers waiting out their whole timeout. This connects one PUSH socket per
    peer, queues one abort message each and gives them `linger_s` to leave (the peers may
    still be starting). Never raises.
    """
    ctx = zmq.Context()
    linger_ms = int(linger_s * 1000)
    try:
        frames = encode(abort_message(role, reason))
        for peer in peers:
            try:
                ep = cluster.endpoint(peer)
            except ValueError:
                continue
            if keys is not None and ep.public_key is None:
                continue  # the peer admits only this run's keys: nothing to reach it with
            sock = ctx.socket(zmq.PUSH)
            try:
                sock.setsockopt(zmq.LINGER, linger_ms)
                if keys is not None and ep.public_key is not None:
                    _set_curve_client(sock, ep.public_key, keys)
                sock.setsockopt(zmq.IPV6, int(":" in ep.host))
                sock.connect(tcp_address(ep.host, ep.port))
                sock.send_multipart(frames, flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            finally:
                sock.close(linger=linger_ms)
    finally:
        # Waits up to LINGER for the queued aborts to reach the peers, never longer.
        ctx.destroy(linger=linger_ms)
