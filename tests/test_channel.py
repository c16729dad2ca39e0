"""FramedChannel over the in-memory medium: tags, buffering, errors, bytes and rounds."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from privit.parties.channel import ChannelLimits, PeerError
from privit.parties.counters import Counters
from privit.parties.memory import MemoryChannel, MemoryHub
from privit.parties.wire import Message, WireError, encode, message_nbytes


def _name(role: int) -> str:
    return "dealer" if role == 2 else f"party {role}"


def _channels(n_roles: int = 3, timeout_s: float = 5.0) -> list[MemoryChannel]:
    hub = MemoryHub(range(n_roles))
    return [
        MemoryChannel(hub, r, [p for p in range(n_roles) if p != r], Counters(), timeout_s, _name)
        for r in range(n_roles)
    ]


def test_messages_arrive_in_order_with_their_arrays() -> None:
    a, b, _ = _channels()
    x = np.arange(6, dtype=np.int64).reshape(2, 3)
    a.send(1, "data", "open", [x])
    a.send(1, "data", "mul", [x + 1, x + 2])
    np.testing.assert_array_equal(b.recv(0, "data", "open").arrays[0], x)
    got = b.recv(0, "data", None).arrays  # None: any label
    np.testing.assert_array_equal(got[1], x + 2)


def test_early_arrivals_from_another_peer_are_buffered() -> None:
    a, b, dealer = _channels()
    dealer.send(1, "corr", "corr", [np.ones(2, np.int64)])
    a.send(1, "data", "open", [np.zeros(2, np.int64)])
    # Waiting for party 0 first: the dealer's message arrives first and is kept.
    assert b.recv(0, "data", "open").label == "open"
    start = time.monotonic()
    assert b.recv(2, "corr", "corr").arrays[0].tolist() == [1, 1]
    assert time.monotonic() - start < 0.1  # served from the buffer, no waiting


def test_label_and_kind_mismatch_are_clear_errors() -> None:
    a, b, _ = _channels()
    a.send(1, "data", "beaver_mul")
    with pytest.raises(WireError, match=r"out of step with party 0: message 0 is data/'beaver_mul', "
                                        r"expected data/'open'"):
        b.recv(0, "data", "open")
    a.send(1, "corr", "open")
    with pytest.raises(WireError, match=r"message 1 is corr/'open', expected data/'open'"):
        b.recv(0, "data", "open")


def test_duplicate_message_is_an_error() -> None:
    a, b, _ = _channels()
    frames = [bytes(f) for f in encode(Message("data", 0, 0, "open"))]
    b_inbox = b.hub.inboxes[1]
    b_inbox.put((frames, 0))
    b_inbox.put((frames, 0))
    b.recv(0, "data", "open")
    with pytest.raises(WireError, match=r"duplicate message 0 \('open'\) from party 0"):
        b.recv(0, "data", "open")


def test_message_from_unknown_sender_is_an_error() -> None:
    _, b, _ = _channels()
    b.hub.inboxes[1].put(([bytes(f) for f in encode(Message("data", 7, 0, "open"))], None))
    with pytest.raises(WireError, match="unknown sender id 7"):
        b.recv(0, "data", "open")


def test_a_peer_cannot_speak_for_another() -> None:
    """The authenticated sender is the dealer; its frame claims party 0: refused, naming
    the dealer (the one whose channel said it), not party 0."""
    _, b, _ = _channels()
    b.hub.inboxes[1].put(([bytes(f) for f in encode(Message("data", 0, 0, "open"))], 2))
    with pytest.raises(PeerError, match=r"dealer sent a message that claims to come from role 0"):
        b.recv(0, "data", "open")


def test_duplicate_after_consumption_is_an_error() -> None:
    a, b, _ = _channels()
    a.send(1, "data", "open")
    b.recv(0, "data", "open")
    b.hub.inboxes[1].put(([bytes(f) for f in encode(Message("data", 0, 0, "open"))], 0))
    with pytest.raises(WireError, match=r"duplicate message 0"):
        b.recv(0, "data", "open")


def test_early_buffer_is_bounded_in_bytes_per_peer() -> None:
    """A peer that floods future messages fails the run once it holds more than the limit."""
    hub = MemoryHub(range(3))
    limits = ChannelLimits(max_buffer_bytes=100_000)
    b = MemoryChannel(hub, 1, [0, 2], Counters(), 5.0, _name, limits=limits)
    a = MemoryChannel(hub, 0, [1, 2], Counters(), 5.0, _name)
    big = np.zeros(2000, dtype=np.int64)  # 16 kB each
    for _ in range(8):
        a.send(1, "data", "flood", [big])
    with pytest.raises(PeerError, match=r"party 0 sent 0.1 MiB ahead of what party 1 has read"):
        b.recv(2, "corr", "corr")  # waiting on the dealer while party 0 floods


def test_oversized_frame_is_refused_by_its_sender() -> None:
    hub = MemoryHub(range(3))
    a = MemoryChannel(hub, 0, [1, 2], Counters(), 5.0, _name,
                      limits=ChannelLimits(max_frame_bytes=1000))
    with pytest.raises(WireError, match=r"exceeds the frame limit"):
        a.send(1, "data", "big", [np.zeros(200, dtype=np.int64)])


def test_abort_reaches_a_waiting_peer() -> None:
    a, b, dealer = _channels()
    a.abort("party 0 failed: out of memory")
    with pytest.raises(PeerError, match="party 0 aborted: party 0 failed: out of memory"):
        b.recv(2, "corr", "corr")  # waiting for the dealer, the abort of party 0 still stops us
    with pytest.raises(PeerError, match="party 0 aborted"):
        dealer.recv(0, "data", "x")


def test_timeout_names_the_silent_peer() -> None:
    _, b, _ = _channels(timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(PeerError, match=r"timed out after 0.3 s waiting for dealer \(corr, message 0\)"):
        b.recv(2, "corr", "corr")
    assert 0.3 <= time.monotonic() - start < 1.5


def test_links_only_to_peers() -> None:
    hub = MemoryHub(range(3))
    a = MemoryChannel(hub, 0, [1], Counters(), 1.0, _name)
    with pytest.raises(ValueError, match="party 0 has no link to dealer"):
        a.send(2, "data", "x")
    with pytest.raises(ValueError, match="has no link to dealer"):
        a.recv(2, "data", "x")


def test_bytes_are_the_exact_frame_sizes() -> None:
    a, b, _ = _channels()
    x, y = np.arange(100, dtype=np.int64), np.arange(7, dtype=np.uint8)
    meta = {"reason": "abc"}
    sizes = [a.send(1, "data", "open", [x]), a.send(1, "data", "open", [x, y], meta),
             a.send(2, "data", "y", [])]
    expected = [message_nbytes(encode(Message("data", 0, s, lbl, arrs, m)))
                for s, lbl, arrs, m in [(0, "open", [x], None), (1, "open", [x, y], meta),
                                        (0, "y", [], None)]]
    assert sizes == expected
    assert sizes[0] == len(encode(Message("data", 0, 0, "open", [x]))[0]) + 800
    setup = a.counters.phases["setup"]
    assert setup.bytes == sum(expected) and setup.messages == 3
    assert dict(a.counters.bytes_to) == {1: expected[0] + expected[1], 2: expected[2]}
    assert b.counters.phases["setup"].bytes == 0  # receiving is free
    a.abort("stop")
    assert a.counters.phases["setup"].messages == 3  # aborts are not counted


def test_bytes_follow_the_phase() -> None:
    a, _, _ = _channels()
    a.counters.set_phase("online")
    n = a.send(1, "data", "x", [np.zeros(4, np.int64)])
    assert a.counters.phases["online"].bytes == n and a.counters.phases["setup"].bytes == 0


def _rounds(ch: MemoryChannel) -> int:
    return ch.counters.phases["setup"].rounds


def test_rounds_send_send_recv_recv_is_one_round() -> None:
    a, b, dealer = _channels()
    for peer in (0, 2):
        (a if peer == 0 else dealer).send(1, "data", "x")
    b.send(0, "data", "x")
    b.send(2, "data", "x")
    b.recv(0, "data", "x")
    b.recv(2, "data", "x")
    assert _rounds(b) == 1


def test_rounds_recv_without_send_is_free_and_alternation_counts() -> None:
    a, b, _ = _channels()
    for _ in range(3):
        a.send(1, "data", "x")
    b.recv(0, "data", "x")
    b.recv(0, "data", "x")
    assert _rounds(b) == 0  # only receiving: no round of our own
    b.send(0, "data", "y")
    b.recv(0, "data", "x")
    assert _rounds(b) == 1
    b.send(0, "data", "y")  # a send that is never followed by a wait costs no round
    assert _rounds(b) == 1
    assert _rounds(a) == 0


# -- how long a wait lasts: liveness, silence, the cap -----------------------------------

class _WatchedChannel(MemoryChannel):
    """Party 1 over memory, whose medium reports each peer alive, gone or neither, as a
    test sets it (ZmqChannel learns this from heartbeats and socket monitors)."""

    def __init__(self, hub: MemoryHub, timeout_s: float, max_wait_s: float) -> None:
        super().__init__(hub, 1, [0, 2], Counters(), timeout_s, _name)
        self.max_wait_s = max_wait_s
        self.alive: set[int] = set()
        self.gone: dict[int, str] = {}
        self.liveness_checks = 0

    def peer_alive(self, peer: int) -> bool:
        self.liveness_checks += 1
        return peer in self.alive

    def peer_gone(self, peer: int) -> str | None:
        return self.gone.get(peer)


def _watched(timeout_s: float, max_wait_s: float) -> tuple[MemoryChannel, _WatchedChannel,
                                                          MemoryChannel]:
    hub = MemoryHub(range(3))
    a = MemoryChannel(hub, 0, [1, 2], Counters(), timeout_s, _name)
    b = _WatchedChannel(hub, timeout_s, max_wait_s)
    dealer = MemoryChannel(hub, 2, [0, 1], Counters(), timeout_s, _name)
    return a, b, dealer


def test_a_live_peer_is_waited_for_past_the_timeout() -> None:
    a, b, _ = _watched(timeout_s=0.2, max_wait_s=60.0)
    b.alive.add(0)
    sender = threading.Timer(1.0, lambda: a.send(1, "data", "late", [np.arange(3)]))
    sender.start()
    try:
        (got,) = b.recv(0, "data", "late").arrays
    finally:
        sender.join()
    assert got.tolist() == [0, 1, 2]
    assert b.liveness_checks >= 2  # checked again after the first 0.2 s had passed


def test_a_prompt_message_costs_no_liveness_check() -> None:
    """Asking the medium about a peer is dear (ZeroMQ's monitor sockets), so a wait asks
    only after a poll interval: a message already buffered, or one that arrives sooner,
    is taken without asking."""
    a, b, _ = _watched(timeout_s=5.0, max_wait_s=60.0)
    a.send(1, "data", "first", [np.arange(2)])
    b.recv(0, "data", "first")
    a.send(1, "data", "second", [np.arange(2)])
    a.send(1, "data", "third", [np.arange(2)])
    b.recv(0, "data", "second")  # buffers "third" on the way
    b.recv(0, "data", "third")
    assert b.liveness_checks == 0


def test_a_live_peer_that_never_sends_meets_the_cap() -> None:
    _, b, _ = _watched(timeout_s=0.2, max_wait_s=0.6)
    b.alive.add(0)
    with pytest.raises(PeerError, match=r"^party 0 is alive but sent nothing for 0.6 s while we "
                                        r"wait for never \(message 0\): a deadlock"):
        b.recv(0, "data", "never")


def test_a_gone_peer_is_named_while_others_keep_sending() -> None:
    """The dealer streams messages to party 1, which waits for party 0, gone: liveness is
    checked while arrivals keep the receive busy, not only when it idles."""
    _, b, dealer = _watched(timeout_s=30.0, max_wait_s=60.0)
    b.gone[0] = "its socket closed"
    stop = threading.Event()
    sent = [0]

    def stream() -> None:
        while not stop.is_set() and sent[0] < 2000:
            dealer.send(1, "corr", "corr", [np.zeros(4, dtype=np.int64)])
            sent[0] += 1
            stop.wait(0.002)

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        with pytest.raises(PeerError, match=r"^party 0 is gone \(its socket closed\) while we "
                                            r"wait for open$"):
            b.recv(0, "data", "open")
        stopped_at = sent[0]
    finally:
        stop.set()
        streamer.join()
    assert stopped_at < 2000  # named while the stream still ran
