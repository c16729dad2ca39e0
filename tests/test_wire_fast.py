"""The channel's fast paths for the wire (`Encoder`, `Decoder`) against the reference
`encode` / `decode`: the same bytes out, the same messages and the same errors in.

Counted bytes are pinned across the suite, so the encoder must write exactly what
`encode` writes; the decoder skips re-validating a header it has seen, so it must accept
exactly what `decode` accepts. Every property runs a fixed, derandomized set of examples.
"""
from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privit.parties import wire
from privit.parties.wire import Decoder, Encoder, Message, WireError, decode, encode, message_nbytes

FUZZ = settings(max_examples=150, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
WHO = "party 1"
SEQS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1]
ARRAYS = [
    np.zeros(1, dtype=np.int64),
    np.arange(12, dtype=np.int64).reshape(3, 4),
    np.arange(12, dtype=np.int64).reshape(3, 4).T,  # not C-contiguous: sent as a copy
    np.arange(6, dtype=">i4"),  # big-endian: sent little-endian
    np.array(7, dtype=np.uint8),  # 0-d
    np.zeros((0, 5), dtype=np.float32),  # empty
]


def _outcome(fn: Any, frames: list[Any]) -> tuple[str, Any]:
    """("ok", fields and array bytes) or ("error", the WireError's text)."""
    try:
        msg = fn(frames, WHO)
    except WireError as exc:
        return "error", str(exc)
    return "ok", (msg.kind, msg.src, msg.seq, msg.label, msg.meta,
                  [(a.dtype.str, a.shape, a.tobytes()) for a in msg.arrays])


def _primed(msg: Message) -> Decoder:
    """A Decoder that has decoded `msg` once (so it knows its header)."""
    dec = Decoder()
    dec.decode([bytes(f) for f in encode(msg)], WHO)
    return dec


@pytest.mark.parametrize("seq", SEQS)
@pytest.mark.parametrize("kind", ["data", "corr"])
def test_encoder_writes_exactly_what_encode_writes(kind: str, seq: int) -> None:
    enc = Encoder()
    for arrays in ([], ARRAYS[:1], ARRAYS, ARRAYS[2:4]):
        for label in ("open", "beaver_mul", "ü" * 40, "seq"):
            ref = encode(Message(kind, 3, seq, label, arrays))
            frames, nbytes, largest = enc.encode(kind, 3, seq, label, arrays, None)
            assert [bytes(f) for f in frames] == [bytes(f) for f in ref]
            assert nbytes == message_nbytes(ref)
            assert largest == max((memoryview(f).nbytes for f in ref[1:]), default=0)


def test_encoder_takes_encode_for_meta_and_refuses_what_encode_refuses() -> None:
    enc = Encoder()
    meta = {"reason": "stop", "plan": [["beaver", [1, 2], 2]]}
    frames, nbytes, _ = enc.encode("abort", 0, 0, "abort", [], meta)
    assert [bytes(f) for f in frames] == [bytes(f) for f in encode(Message("abort", 0, 0, "abort", [], meta))]
    assert nbytes == message_nbytes(frames)
    with pytest.raises(WireError, match="unknown message kind"):
        enc.encode("nonsense", 0, 0, "x", [ARRAYS[0]], None)
    with pytest.raises(WireError, match="cannot be sent"):
        enc.encode("data", 0, 0, "x", [np.zeros(2, dtype=np.complex64)], None)
    with pytest.raises(WireError, match="header of"):
        enc.encode("data", 0, 0, "x" * wire.MAX_HEADER_BYTES, [], None)


def test_a_known_header_with_a_new_seq_skips_the_full_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is taken (the reference decode is not called) and gives decode's
    message; a header it has not seen goes through decode."""
    arr = np.arange(4, dtype=np.int64)
    dec = _primed(Message("data", 1, 0, "open", [arr]))
    calls = []
    monkeypatch.setattr(wire, "decode", lambda frames, who="peer": calls.append(1) or decode(frames, who))
    for seq in SEQS:
        frames = [bytes(f) for f in encode(Message("data", 1, seq, "open", [arr]))]
        assert _outcome(dec.decode, frames) == _outcome(decode, frames)
    assert calls == []
    dec.decode([bytes(f) for f in encode(Message("data", 1, 5, "close", [arr]))], WHO)
    assert calls == [1]


def test_a_known_header_still_checks_its_array_frames() -> None:
    arr = np.arange(4, dtype=np.int64)
    dec = _primed(Message("data", 1, 0, "open", [arr]))
    header = bytes(encode(Message("data", 1, 9, "open", [arr]))[0])
    for frames in ([header], [header, arr.tobytes()[:-1]], [header, arr.tobytes() + b"x"],
                   [header, arr.tobytes(), b""], [header, 5]):
        outcome = _outcome(dec.decode, frames)
        assert outcome[0] == "error" and outcome == _outcome(decode, frames)


def test_a_header_written_otherwise_is_never_remembered() -> None:
    """A valid header that is not Encoder's canonical form (here: seq written as a uint16)
    decodes, but through the full check every time."""
    arr = np.arange(2, dtype=np.int64)
    header = {"v": wire.WIRE_VERSION, "k": "data", "src": 1, "seq": 0, "lbl": "open",
              "a": [["<i8", [2]]], "meta": None}
    canonical = msgpack.packb(header, use_bin_type=True)
    odd = canonical.replace(b"\xa3seq\x00", b"\xa3seq\xcd\x00\x07")
    dec = Decoder()
    for _ in range(2):
        assert dec.decode([odd, arr.tobytes()], WHO).seq == 7
    assert dec._known == {}


@FUZZ
@given(seq=st.sampled_from(SEQS), data=st.data())
def test_mutated_known_headers_decode_as_decode_does(seq: int, data: st.DataObject) -> None:
    """Flip bits of, cut, or extend a header the decoder knows: its verdict (message or
    error text) is decode's."""
    arrays = [np.arange(6, dtype=np.int64).reshape(2, 3), np.arange(3, dtype=np.uint8)]
    dec = _primed(Message("data", 1, 0, "open", arrays))
    frames = [bytes(f) for f in encode(Message("data", 1, seq, "open", arrays))]
    raw = bytearray(frames[0])
    for _ in range(data.draw(st.integers(0, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    raw = raw[:data.draw(st.integers(0, len(raw)))] + data.draw(st.binary(max_size=3))
    mutated = [bytes(raw), *frames[1:]]
    assert _outcome(dec.decode, mutated) == _outcome(decode, mutated)


@FUZZ
@given(label=st.text(max_size=12), seq=st.integers(0, 2**64 - 1),
       shape=st.lists(st.integers(0, 3), max_size=3))
def test_messages_round_trip_through_encoder_and_decoder(label: str, seq: int, shape: list[int]) -> None:
    arr = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    enc, dec = Encoder(), Decoder()
    for s in (seq, (seq + 1) % 2**64):  # the second one takes both fast paths
        frames, _, _ = enc.encode("data", 2, s, label, [arr], None)
        got = dec.decode([bytes(f) for f in frames], WHO)
        assert (got.kind, got.src, got.seq, got.label, got.meta) == ("data", 2, s, label, None)
        assert got.arrays[0].shape == arr.shape and got.arrays[0].tobytes() == arr.tobytes()


def test_long_headers_are_not_remembered() -> None:
    """What a peer can make the decoder hold is bounded: headers longer than
    MAX_HEADER_LEN (a long label, many arrays) always take the full check."""
    arr = np.arange(2, dtype=np.int64)
    dec = _primed(Message("data", 1, 0, "x" * Decoder.MAX_HEADER_LEN, [arr]))
    assert dec._known == {}
    dec = _primed(Message("data", 1, 0, "x" * 64, [arr]))
    assert len(dec._known) == 1
