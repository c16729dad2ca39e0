"""The wire decoder under fuzzing: valid messages round trip, and any other input is a WireError.

Every property runs a fixed, derandomized set of examples so the suite is deterministic.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from privit.launch.bench_fuzz import fuzz_decoder
from privit.parties.wire import (
    KINDS,
    MAX_META_DEPTH,
    MAX_META_ITEMS,
    MAX_NDIM,
    WIRE_DTYPES,
    WIRE_VERSION,
    Message,
    WireError,
    decode,
    encode,
)

FUZZ = settings(max_examples=200, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
WHO = "party 1"

U64 = st.integers(0, 2**64 - 1)
SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False) | st.text(max_size=12) | st.binary(max_size=12))


def _nested_lists(depth: int) -> st.SearchStrategy[list[Any]]:
    """Lists of scalars, nested at most `depth` deep."""
    items = SCALARS if depth == 1 else SCALARS | _nested_lists(depth - 1)
    return st.lists(items, max_size=4)


META = st.none() | st.dictionaries(st.text(max_size=8), SCALARS | _nested_lists(MAX_META_DEPTH), max_size=6)
FIXED_META = [None, {"reason": "x"}, {"r0": 0, "plan": [["beaver", [1, 2], 2]], "end": False}]
# Anything msgpack can carry: scalars, bytes, ext types, and nested lists and maps.
MSGPACK_VALUES = st.recursive(
    SCALARS | st.floats() | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=4) | st.sampled_from(["v", "k", "a", "meta"]), inner, max_size=4),
    max_leaves=6,
)


@st.composite
def messages(draw: st.DrawFn, min_arrays: int = 0, random_contents: bool = True) -> Message:
    """A valid message: up to 3 arrays of allowed dtypes and small shapes, any label and meta.

    Without `random_contents` the arrays hold 0, 1, 2, ... and meta is one of a few fixed
    maps (cheaper, for the fuzz tests, which then replace parts of the message).
    """
    arrays = []
    for _ in range(draw(st.integers(min_arrays, 3))):
        dtype = WIRE_DTYPES[draw(st.sampled_from(sorted(WIRE_DTYPES)))]
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
        arrays.append(draw(hnp.arrays(dtype, shape)) if random_contents
                      else np.arange(np.prod(shape, dtype=int), dtype=dtype).reshape(shape))
    meta = draw(META if random_contents else st.sampled_from(FIXED_META))
    return Message(draw(st.sampled_from(KINDS)), draw(U64), draw(U64), draw(st.text(max_size=40)),
                   arrays, meta)


class FrameLike:
    """A stand-in for zmq.Frame: decode reads its `.buffer`."""

    def __init__(self, buffer: memoryview) -> None:
        self.buffer = buffer


FRAME_TYPES: dict[str, Callable[[bytes], Any]] = {
    "bytes": bytes,
    "bytearray": bytearray,
    "memoryview": lambda b: memoryview(bytes(b)),
    "zmq-like": lambda b: FrameLike(memoryview(bytes(b))),
}


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _decode_or_wire_error(frames: list[Any]) -> Message | None:
    """decode(frames): a consistent Message, or None after a one-line WireError naming WHO."""
    try:
        msg = decode(frames, who=WHO)
    except WireError as exc:
        text = str(exc)
        assert WHO in text and "\n" not in text
        return None
    assert msg.kind in KINDS and isinstance(msg.label, str)
    assert len(msg.arrays) == len(frames) - 1
    assert all(a.dtype.str in WIRE_DTYPES for a in msg.arrays)
    return msg


def _valid_header(msg: Message) -> dict[str, Any]:
    return msgpack.unpackb(encode(msg)[0], raw=False)


# -- round trip ----------------------------------------------------------------------

@FUZZ
@given(msg=messages(), frame_type=st.sampled_from(sorted(FRAME_TYPES)))
def test_any_valid_message_round_trips(msg: Message, frame_type: str) -> None:
    got = decode([FRAME_TYPES[frame_type](f) for f in encode(msg)], who=WHO)
    assert (got.kind, got.src, got.seq, got.label) == (msg.kind, msg.src, msg.seq, msg.label)
    assert got.meta == msg.meta
    assert len(got.arrays) == len(msg.arrays)
    for out, sent in zip(got.arrays, msg.arrays, strict=True):
        # Bytes, not values: NaN payloads and -0.0 must come back bit for bit.
        assert out.dtype == sent.dtype and out.shape == sent.shape and out.tobytes() == sent.tobytes()


# -- arbitrary input -----------------------------------------------------------------

@FUZZ
@given(header=st.binary(max_size=96), arrays=st.lists(st.binary(max_size=32), max_size=4))
def test_random_bytes_decode_or_raise_wire_error(header: bytes, arrays: list[bytes]) -> None:
    _decode_or_wire_error([header, *arrays])


@FUZZ
@given(value=MSGPACK_VALUES, nframes=st.integers(0, 3))
def test_random_msgpack_structures_decode_or_raise_wire_error(value: Any, nframes: int) -> None:
    _decode_or_wire_error([_pack(value)] + [b"\0" * 8] * nframes)


@FUZZ
@given(msg=messages(random_contents=False), value=MSGPACK_VALUES,
       field=st.sampled_from(["v", "k", "src", "seq", "lbl", "a", "meta"]))
def test_any_header_field_value_decodes_or_raises_wire_error(msg: Message, field: str, value: Any) -> None:
    frames = [bytes(f) for f in encode(msg)]
    header = _valid_header(msg)
    header[field] = value
    packed = _pack(header)
    got = _decode_or_wire_error([packed, *frames[1:]])
    if got is not None:  # accepted: the value was a valid one, and decode kept it exactly
        assert encode(got)[0] == packed


@FUZZ
@given(msg=messages(min_arrays=1, random_contents=False), data=st.data())
def test_any_array_spec_decodes_or_raises_wire_error(msg: Message, data: st.DataObject) -> None:
    frames = [bytes(f) for f in encode(msg)]
    header = _valid_header(msg)
    spec = header["a"][data.draw(st.integers(0, len(header["a"]) - 1))]
    dims = st.integers(0, 2**64 - 1) | st.sampled_from([0, 1, 2**31, 2**62, 2**63]) | MSGPACK_VALUES
    part = data.draw(st.sampled_from(["dtype", "shape", "spec"]))
    if part == "dtype":
        spec[0] = data.draw(MSGPACK_VALUES)
    elif part == "shape":
        spec[1] = data.draw(st.lists(dims, max_size=MAX_NDIM + 1))
    else:
        header["a"] = data.draw(st.lists(MSGPACK_VALUES, max_size=3))
    _decode_or_wire_error([_pack(header), *frames[1:]])


@FUZZ
@given(msg=messages(random_contents=False), data=st.data())
def test_wrong_array_frames_and_frame_counts_raise_wire_error(msg: Message, data: st.DataObject) -> None:
    frames = [bytes(f) for f in encode(msg)]
    arrays = data.draw(st.lists(st.binary(max_size=64), max_size=len(frames) + 1))
    got = _decode_or_wire_error([frames[0], *arrays])
    if got is None:
        assert [len(a) for a in arrays] != [len(f) for f in frames[1:]]


@FUZZ
@given(msg=messages(random_contents=False), data=st.data())
def test_mutated_headers_decode_or_raise_wire_error(msg: Message, data: st.DataObject) -> None:
    frames = [bytes(f) for f in encode(msg)]
    raw = bytearray(frames[0])
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    cut = data.draw(st.integers(0, len(raw)))
    _decode_or_wire_error([bytes(raw), *frames[1:]])
    _decode_or_wire_error([bytes(raw[:cut]), *frames[1:]])


# -- frame types and meta bounds -------------------------------------------------------

def _header(**changes: Any) -> bytes:
    h: dict[str, Any] = {"v": WIRE_VERSION, "k": "data", "src": 0, "seq": 0, "lbl": "open",
                         "a": [["<i8", [2]]], "meta": None}
    h.update(changes)
    return _pack(h)


GOOD_ARRAY = np.arange(2, dtype=np.int64).tobytes()


def _released() -> memoryview:
    view = memoryview(GOOD_ARRAY)
    view.release()
    return view


@pytest.mark.parametrize("frame, pattern", [
    ("text", "is a str, not a readable buffer"),
    (None, "is a NoneType, not a readable buffer"),
    (FrameLike("text"), "is a FrameLike, not a readable buffer"),  # type: ignore[arg-type]
    (memoryview(GOOD_ARRAY * 2)[::2], "not a contiguous buffer"),
    (_released(), "is a memoryview, not a readable buffer"),
], ids=["str", "None", "frame-like of str", "strided", "released"])
def test_frames_that_are_not_buffers_raise_wire_error(frame: Any, pattern: str) -> None:
    with pytest.raises(WireError, match=pattern):
        decode([_header(), frame], who=WHO)
    with pytest.raises(WireError, match=pattern):
        decode([frame, GOOD_ARRAY], who=WHO)


def test_typed_and_empty_views_are_read_as_their_bytes() -> None:
    typed = np.arange(2, dtype=np.int64).reshape(2, 1).data  # a 2-d memoryview of format "l"
    got = decode([_header(), typed], who=WHO)
    np.testing.assert_array_equal(got.arrays[0], [0, 1])
    empty = decode([_header(a=[["<i8", [0, 3]]]), np.zeros((0, 3)).data], who=WHO)
    assert empty.arrays[0].shape == (0, 3)


@pytest.mark.parametrize("shape", [[0, 2**62], [0, 2**63], [0, 2**64 - 1], [2**32, 0, 2**32]], ids=str)
def test_empty_arrays_with_huge_dimensions_raise_wire_error(shape: list[int]) -> None:
    with pytest.raises(WireError, match="bad shape|too large"):
        decode([_header(a=[["<i8", shape]]), b""], who=WHO)


@pytest.mark.parametrize("value, pattern", [
    (1.0, "wire version 1.0"),
    (True, "wire version True"),
])
def test_wire_version_must_be_the_int(value: Any, pattern: str) -> None:
    with pytest.raises(WireError, match=pattern):
        decode([_header(v=value), GOOD_ARRAY], who=WHO)


@pytest.mark.parametrize("changes, pattern", [
    ({"k": ["data"]}, r"unknown message kind \['data'\]"),
    ({"a": [[["<i8"], [2]]]}, r"dtype \['<i8'\] .* not allowed"),
    ({"a": [[{"<i8": 1}, [2]]]}, r"dtype \{'<i8': 1\} .* not allowed"),
    ({"a": [["<i8", [2.0]]]}, r"bad shape \[2.0\]"),
])
def test_unhashable_or_mistyped_fields_raise_wire_error(changes: dict[str, Any], pattern: str) -> None:
    with pytest.raises(WireError, match=pattern):
        decode([_header(**changes), GOOD_ARRAY], who=WHO)


def test_header_with_str_and_bytes_field_names_raises_wire_error() -> None:
    raw = _pack({"v": 1, b"k": "data"})
    with pytest.raises(WireError, match="fields"):
        decode([raw, GOOD_ARRAY], who=WHO)


def test_meta_lists_are_bounded_in_depth_size_and_item_type() -> None:
    deepest: Any = 1
    for _ in range(MAX_META_DEPTH):
        deepest = [deepest]
    assert decode([_header(meta={"x": deepest}), GOOD_ARRAY], who=WHO).meta == {"x": deepest}
    with pytest.raises(WireError, match=r"meta\['x'\] nests lists deeper than"):
        decode([_header(meta={"x": [deepest]}), GOOD_ARRAY], who=WHO)
    with pytest.raises(WireError, match=r"meta\['x'\] holds a dict"):
        decode([_header(meta={"x": [1, [{"y": 1}]]}), GOOD_ARRAY], who=WHO)
    with pytest.raises(WireError, match=r"meta\['x'\] holds a ExtType"):
        decode([_header(meta={"x": [msgpack.ExtType(1, b"")]}), GOOD_ARRAY], who=WHO)
    many = [[0] * 60 for _ in range(MAX_META_ITEMS // 60)]
    with pytest.raises(WireError, match=f"more than {MAX_META_ITEMS} items"):
        decode([_header(meta={"x": many}), GOOD_ARRAY], who=WHO)


# -- the seeded fuzzer ----------------------------------------------------------------

def test_seeded_fuzzer_finds_only_wire_errors() -> None:
    counts = fuzz_decoder(2000, seed=1)
    assert counts["other"] == 0, counts["other_examples"]
    assert counts["accepted"] + counts["wire_error"] == 2000
    assert counts["accepted"] > 0 and counts["wire_error"] > 0
    assert fuzz_decoder(200, seed=1) == fuzz_decoder(200, seed=1)  # deterministic
