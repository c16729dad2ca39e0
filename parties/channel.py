"""The framed channel every role talks through: tags, buffering, counting, timeouts.

`FramedChannel` holds everything that does not depend on how bytes move: per-stream
sequence numbers (the deterministic tag of each message is (stream, seq, label)),
buffering of early arrivals, validation, byte and round counting at the one send point,
and timeouts that name the silent peer. Subclasses move frames: `ZmqChannel`
(parties/transport.py) over TCP, `MemoryChannel` (parties/memory.py) in-process for
unit tests. Both therefore count exactly the same bytes and rounds.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from privit.parties.counters import Counters
from privit.parties.wire import Message, WireError, decode, encode, message_nbytes


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


class FramedChannel(ABC):
    def __init__(
        self,
        role: int,
        peers: Sequence[int],
        counters: Counters,
        timeout_s: float,
        role_name: Callable[[int], str] = lambda r: f"role {r}",
    ) -> None:
        self.role = role
        self.peers = list(peers)
        self.counters = counters
        self.timeout_s = timeout_s
        self.role_name = role_name
        self._send_seq = {p: 0 for p in self.peers}
        self._recv_seq = {p: 0 for p in self.peers}
        self._early: dict[int, dict[int, Message]] = {p: {} for p in self.peers}
        self.heard_from: set[int] = set()  # peers that sent us at least one valid message

    # -- what subclasses provide -------------------------------------------------
    @abstractmethod
    def _transmit(self, dst: int, frames: list[Any]) -> None:
        """Hand frames for `dst` to the medium (may delay them for network emulation)."""

    @abstractmethod
    def _receive(self, timeout_s: float) -> list[Any] | None:
        """The next frames from any peer, or None after `timeout_s` seconds."""

    def close(self) -> None:  # noqa: B027 - optional hook, most media need no cleanup
        """Release the medium's resources (sockets, threads)."""

    def peer_gone(self, peer: int) -> str | None:
        """A reason if the medium knows `peer` is gone (e.g. its socket disconnected)."""
        return None

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
        msg = Message(kind, self.role, self._send_seq[dst], label, list(arrays), meta)
        self._send_seq[dst] += 1
        frames = encode(msg)
        nbytes = message_nbytes(frames)
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
    def recv(self, src: int, kind: str, label: str | None) -> Message:
        """The next message on the stream src -> us, which must be of `kind` and `label`
        (any label if None).

        Messages that arrive early (a later seq, or from another peer) are buffered.
        """
        if src not in self._recv_seq:
            raise ValueError(f"{self.role_name(self.role)} has no link to {self.role_name(src)}")
        self.counters.on_wait()
        seq = self._recv_seq[src]
        deadline = time.monotonic() + self.timeout_s
        while seq not in self._early[src]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PeerError(
                    f"timed out after {self.timeout_s:g} s waiting for {self.role_name(src)} "
                    f"({label}, message {seq})"
                )
            frames = self._receive(min(remaining, 0.25))
            if frames is None:
                gone = self.peer_gone(src)
                if gone is not None:
                    raise PeerError(f"{self.role_name(src)} is gone ({gone}) while we wait for {label}")
                continue
            self._accept(frames)
        msg = self._early[src].pop(seq)
        self._recv_seq[src] = seq + 1
        if msg.kind != kind or (label is not None and msg.label != label):
            raise WireError(
                f"protocol out of step with {self.role_name(src)}: message {seq} is "
                f"{msg.kind}/{msg.label!r}, expected {kind}/{label!r}"
            )
        return msg

    def _accept(self, frames: list[Any]) -> None:
        msg = decode(frames, who="a peer")
        if msg.src not in self._early:
            raise WireError(f"message from unknown sender id {msg.src} (label {msg.label!r})")
        self.heard_from.add(msg.src)
        who = self.role_name(msg.src)
        if msg.kind == "abort":
            reason = (msg.meta or {}).get("reason", "no reason given")
            raise PeerAborted(who, str(reason))
        if msg.seq < self._recv_seq[msg.src] or msg.seq in self._early[msg.src]:
            raise WireError(f"duplicate message {msg.seq} ({msg.label!r}) from {who}")
        self._early[msg.src][msg.seq] = msg
