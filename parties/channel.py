"""The framed channel every role talks through: tags, buffering, counting, timeouts.

`FramedChannel` holds everything that does not depend on how bytes move: per-stream
sequence numbers (the deterministic tag of each message is (stream, seq, label)),
buffering of early arrivals, validation, byte and round counting at the one send point,
and the liveness rules of a wait (below). Subclasses move frames: `ZmqChannel`
(parties/transport.py) over TCP, `MemoryChannel` (parties/memory.py) in-process for
unit tests. Both therefore count exactly the same bytes and rounds.

How long a `recv` waits for a peer (liveness by heartbeat, the timeout for silence only):
1. while the medium reports the peer's link alive (`peer_alive`: for ZeroMQ, the link
   answers heartbeats, which the peer's I/O thread does even while its Python thread
   computes), the peer is working and we keep waiting;
2. once the medium reports the peer gone (`peer_gone`: its socket closed, or it stopped
   answering heartbeats), the wait fails at once, naming the peer;
3. pure silence -- no message and no live link -- fails after the timeout (`--timeout`),
   e.g. a peer that never started;
4. a peer that is alive but never sends (a deadlock, a lost message) is bounded by a
   separate, generous cap on one wait (`max_wait_s`, `--max-wait`).
The medium is asked about liveness only once a wait has lasted a poll interval
(`POLL_S`): most waits end sooner, and asking ZeroMQ costs more than a small message's
trip. The hot path of a message is `Encoder` / `Decoder` (parties/wire.py): the same
bytes as `encode`, the same checks as `decode`, with each header built and validated once.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privit.parties.counters import Counters
from privit.parties.wire import Decoder, Encoder, Message, WireError, encode


class PeerError(RuntimeError):
    """A peer timed out, died, aborted, or broke the protocol. The text names the peer."""


class PeerAborted(PeerError):
    """A peer told us it stopped (its own failure is the cause, not ours)."""

    def __init__(self, peer_name: str, reason: str) -> None:
        super().__init__(f"{peer_name} aborted: {reason}")
        self.peer_name = peer_name
        self.reason = reason


def abort_message(role: int, reason: str) -> Message:
    """The message a role sends its peers when it stops on an error (never counted)."""
    return Message("abort", role, 0, "abort", [], {"reason": reason[:500]})


MAX_MESSAGES_AHEAD = 100_000  # as the transport's high-water mark
MESSAGE_OVERHEAD_BYTES = 4096  # counted per buffered message besides its arrays
POLL_S = 0.25  # a receive checks deadlines and peer liveness at least this often
DEFAULT_MAX_WAIT_S = 3600.0  # the cap on one wait for a peer that is alive but never sends
STALL_S = 2.0  # a gap this much longer than a poll means this process was suspended


@dataclass(frozen=True)
class ChannelLimits:
    """Bounds on what a peer can make a role hold.

    max_frame_bytes: the largest array frame; a sender refuses to send a larger one and a
      ZeroMQ receiver drops the link of a peer that tries (ZMQ_MAXMSGSIZE).
    max_buffer_bytes: per peer, the array bytes of messages that arrived ahead of the one
      the role is waiting for; past it the run fails naming the peer.
    """

    max_frame_bytes: int = 1 << 30
    max_buffer_bytes: int = 2 << 30


DEFAULT_LIMITS = ChannelLimits()


class PeerWait:
    """One wait on `peer` under the liveness rules above, for `recv` (a message) and for a
    sender whose queue is full (parties/transport.py): call `check` before each block.

    Time this process spent suspended (SIGSTOP, a frozen VM) is not held against the
    peer: a gap between two checks much longer than a poll extends both bounds, and if
    the peer is gone by then the error says that we were suspended (its peers stop hearing
    the heartbeats of a suspended role and declare it dead). The texts: `during` ("while
    we wait for open"), `waiting` ("waiting for"), `detail` after the peer in a timeout,
    `cap_detail` after `during` at the cap, `stuck` what the peer did not do by then.
    """

    def __init__(self, channel: FramedChannel, peer: int, silence_s: float, cap_s: float,
                 during: str, waiting: str, detail: str = "", cap_detail: str = "",
                 stuck: str = "sent nothing") -> None:
        self.channel, self.peer = channel, peer
        self.silence_s, self.cap_s = silence_s, cap_s
        self.during, self.waiting, self.detail = during, waiting, detail
        self.cap_detail, self.stuck = cap_detail, stuck
        self.start = self.last_poll = self.heard_at = time.monotonic()
        # The medium is first asked about the peer after one poll interval (or before
        # blaming it for silence): most waits end sooner, and asking costs more than a
        # small message's whole trip (ZeroMQ's monitor sockets: ~50 us per wait). A peer
        # already gone when the wait starts is named after at most POLL_S.
        self.next_check = self.start + POLL_S
        self.suspended_s = 0.0

    def check(self) -> float:
        """Raise PeerError if the wait must end now; else the seconds to block before the
        next check (liveness is checked every POLL_S)."""
        channel, peer = self.channel, self.peer
        now = time.monotonic()
        stalled = now - self.last_poll - POLL_S
        if stalled > STALL_S:
            self.suspended_s += stalled
            self.heard_at += stalled
        self.last_poll = now
        if now >= self.next_check or now - self.heard_at >= self.silence_s:  # before blaming
            self.next_check = now + POLL_S
            gone = channel.peer_gone(peer)
            if gone is not None:
                own = (f"; this process was itself suspended for {self.suspended_s:.0f} s, so "
                       f"its peers may have declared it dead" if self.suspended_s else "")
                raise PeerError(f"{channel.role_name(peer)} is gone ({gone}) {self.during}{own}")
            if channel.peer_alive(peer):
                self.heard_at = now
        if now - self.heard_at >= self.silence_s:
            raise PeerError(f"timed out after {self.silence_s:g} s {self.waiting} "
                            f"{channel.role_name(peer)}{channel.link_state(peer)}{self.detail}")
        if now - self.start - self.suspended_s >= self.cap_s:
            raise PeerError(f"{channel.role_name(peer)} is alive but {self.stuck} for "
                            f"{self.cap_s:g} s {self.during}{self.cap_detail}: a deadlock or a "
                            f"lost message (--max-wait)")
        end = min(self.next_check, self.heard_at + self.silence_s,
                  self.start + self.suspended_s + self.cap_s)
        return max(0.0, end - now)


class FramedChannel(ABC):
    def __init__(
        self,
        role: int,
        peers: Sequence[int],
        counters: Counters,
        timeout_s: float,
        role_name: Callable[[int], str] = lambda r: f"role {r}",
        limits: ChannelLimits = DEFAULT_LIMITS,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        self.role = role
        self.peers = list(peers)
        self.counters = counters
        self.timeout_s = timeout_s
        self.max_wait_s = max_wait_s
        self.role_name = role_name
        self.limits = limits
        self._send_seq = {p: 0 for p in self.peers}
        self._recv_seq = {p: 0 for p in self.peers}
        self._early: dict[int, dict[int, Message]] = {p: {} for p in self.peers}
        self._early_bytes = {p: 0 for p in self.peers}
        self.heard_from: set[int] = set()  # peers that sent us at least one valid message
        self._encoder = Encoder()
        self._decoder = Decoder()
        self._names = {r: role_name(r) for r in (role, *self.peers)}

    def _name(self, role: int) -> str:
        """`role_name(role)`, computed once per role (the receive path names every sender)."""
        name = self._names.get(role)
        return self.role_name(role) if name is None else name

    # -- what subclasses provide -------------------------------------------------
    @abstractmethod
    def _transmit(self, dst: int, frames: list[Any]) -> None:
        """Hand frames for `dst` to the medium (may delay them for network emulation)."""

    @abstractmethod
    def _receive(self, timeout_s: float) -> tuple[list[Any], int | None] | None:
        """The next frames from any peer and the sender's role as the medium authenticated
        it (None where the medium cannot tell: an --insecure ZeroMQ channel), or None after
        `timeout_s` seconds."""

    def close(self) -> None:  # noqa: B027 - optional hook, most media need no cleanup
        """Release the medium's resources (sockets, threads)."""

    def link_state(self, peer: int) -> str:
        """Where `peer` is and how its link stands, for error messages ('' if unknown)."""
        return ""

    def peer_gone(self, peer: int) -> str | None:
        """A reason if the medium knows `peer` is gone (e.g. its socket disconnected)."""
        return None

    def peer_alive(self, peer: int) -> bool:
        """Whether the medium knows `peer`'s process is up now (e.g. its link answers
        heartbeats). False where it cannot tell: a wait is then bounded by silence."""
        return False

    # -- sending -------------------------------------------------------------------
    def send(
        self,
        dst: int,
        kind: str,
        label: str,
        arrays: Sequence[np.ndarray] = (),
        meta: dict[str, Any] | None = None,
    ) -> int:
        """Send one message; the only place bytes leave the process. Returns its size."""
        if dst not in self._send_seq:
            raise ValueError(f"{self.role_name(self.role)} has no link to {self.role_name(dst)}")
        seq = self._send_seq[dst]
        self._send_seq[dst] = seq + 1
        frames, nbytes, largest = self._encoder.encode(kind, self.role, seq, label, arrays, meta)
        if largest > self.limits.max_frame_bytes:
            raise WireError(
                f"{label}: a frame of {largest / 2**20:.1f} MiB to {self.role_name(dst)} exceeds "
                f"the frame limit of {self.limits.max_frame_bytes / 2**20:.0f} MiB (--max-frame-mb)"
            )
        self.counters.on_send(dst, nbytes)
        self._transmit(dst, frames)
        return nbytes

    def abort(self, reason: str) -> None:
        """Tell every peer we are stopping, best effort, without counting it."""
        for dst in self.peers:
            try:
                self._transmit(dst, encode(abort_message(self.role, reason)))
            except Exception:  # the peer may already be gone; we are failing anyway
                pass

    # -- receiving -----------------------------------------------------------------
    def recv(self, src: int, kind: str, label: str | None,
             timeout_s: float | None = None) -> Message:
        """The next message on the stream src -> us, which must be of `kind` and `label`
        (any label if None).

        How long it waits is the module docstring's rule: as long as `src` is alive, at
        once no longer when it is gone, `timeout_s` (default: the channel's) of silence,
        and at most max(`max_wait_s`, `timeout_s`) in all. Liveness is checked every
        POLL_S, also while other peers' messages keep arriving (PeerWait, which also
        discounts time this process spent suspended). Messages that arrive early (a later
        seq, or from another peer) are buffered.
        """
        if src not in self._recv_seq:
            raise ValueError(f"{self.role_name(self.role)} has no link to {self.role_name(src)}")
        self.counters.on_wait()
        seq = self._recv_seq[src]
        early = self._early[src]
        if seq not in early:  # else it arrived before: no wait at all
            silence_s = self.timeout_s if timeout_s is None else timeout_s
            wait = PeerWait(self, src, silence_s, max(self.max_wait_s, silence_s),
                            during=f"while we wait for {label}", waiting="waiting for",
                            detail=f" ({label}, message {seq})", cap_detail=f" (message {seq})")
            while seq not in early:
                received = self._receive(wait.check())
                if received is not None:
                    self._accept(*received)
        msg = early.pop(seq)
        self._early_bytes[src] -= _payload_bytes(msg)
        self._recv_seq[src] = seq + 1
        if msg.kind != kind or (label is not None and msg.label != label):
            raise WireError(
                f"protocol out of step with {self.role_name(src)}: message {seq} is "
                f"{msg.kind}/{msg.label!r}, expected {kind}/{label!r}"
            )
        return msg

    def _accept(self, frames: list[Any], sender: int | None) -> None:
        """Buffer one arrived message under its sender's stream.

        `sender` is the role the medium authenticated (CURVE key, or the in-memory hub); a
        header whose `src` differs is refused, so a peer can speak only for itself. The
        buffer of messages that arrived ahead of what we read is bounded in bytes per peer.
        """
        who = "a peer" if sender is None else self._name(sender)
        msg = self._decoder.decode(frames, who=who)
        if sender is not None and msg.src != sender:
            raise PeerError(f"{who} sent a message that claims to come from role {msg.src} "
                            f"({msg.kind}/{msg.label!r}); refused")
        if msg.src not in self._early:
            raise WireError(f"message from unknown sender id {msg.src} (label {msg.label!r})")
        self.heard_from.add(msg.src)
        who = self._name(msg.src)
        if msg.kind == "abort":
            reason = (msg.meta or {}).get("reason", "no reason given")
            raise PeerAborted(who, str(reason))
        if msg.seq < self._recv_seq[msg.src] or msg.seq in self._early[msg.src]:
            raise WireError(f"duplicate message {msg.seq} ({msg.label!r}) from {who}")
        if msg.seq - self._recv_seq[msg.src] > MAX_MESSAGES_AHEAD:
            raise PeerError(f"{who} sent message {msg.seq} while {self.role_name(self.role)} "
                            f"waits for message {self._recv_seq[msg.src]}: more than "
                            f"{MAX_MESSAGES_AHEAD} ahead")
        held = self._early_bytes[msg.src] + _payload_bytes(msg)
        if held > self.limits.max_buffer_bytes:
            raise PeerError(
                f"{who} sent {held / 2**20:.1f} MiB ahead of what {self.role_name(self.role)} has "
                f"read, over the limit of {self.limits.max_buffer_bytes / 2**20:.0f} MiB "
                f"(--max-buffer-mb)"
            )
        self._early_bytes[msg.src] = held
        self._early[msg.src][msg.seq] = msg


def _payload_bytes(msg: Message) -> int:
    """What a buffered message holds: its arrays, plus a flat allowance for its header and
    meta (at most the wire's header limit), so that array-less messages count too."""
    return sum(a.nbytes for a in msg.arrays) + MESSAGE_OVERHEAD_BYTES
