"""The wire format: round trips for every allowed dtype, and every malformed message."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from privit.parties.wire import (
    MAX_ARRAYS,
    MAX_HEADER_BYTES,
    WIRE_DTYPES,
    WIRE_VERSION,
    Message,
    WireError,
    decode,
    encode,
    message_nbytes,
)

SHAPES = [(), (0,), (7,), (3, 4), (2, 1, 5)]


def _roundtrip(msg: Message) -> Message:
    # bytes(...) as a receiver gets them: nothing shared with the sender's arrays.
    return decode([bytes(f) for f in encode(msg)], who="party 1")


@pytest.mark.parametrize("code", sorted(WIRE_DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_roundtrip_every_dtype_and_shape(code: str, shape: tuple[int, ...]) -> None:
    dtype = WIRE_DTYPES[code]
    rng = np.random.default_rng(0)
    if dtype.kind == "f":
        arr = rng.standard_normal(shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    got = _roundtrip(Message("data", 1, 5, "open", [arr]))
    assert got.kind == "data" and got.src == 1 and got.seq == 5 and got.label == "open"
    (out,) = got.arrays
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_array_equal(out, arr)


def test_roundtrip_several_arrays_and_meta() -> None:
    a = np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2]  # not contiguous
    b = np.arange(5, dtype=">i4")  # big-endian: sent as little-endian values
    meta = {"reason": "x", "n": 3, "f": 0.5, "ok": True, "seed": bytes(16), "none": None,
            "plan": [["beaver", [1, 2], 2]]}
    got = _roundtrip(Message("corr", 2, 0, "corr", [a, b], meta))
    np.testing.assert_array_equal(got.arrays[0], a)
    np.testing.assert_array_equal(got.arrays[1], b)
    assert got.arrays[1].dtype == np.dtype("<i4")
    assert got.meta == meta


def test_a_large_offline_chunk_fits() -> None:
    plan = [["beaver_matmul", [197, 192, 768], 3] for _ in range(256)]
    arrays = [np.zeros(2, dtype=np.int64)] * MAX_ARRAYS
    got = _roundtrip(Message("corr", 2, 0, "corr", arrays, {"plan": plan, "end": False}))
    assert len(got.arrays) == MAX_ARRAYS and got.meta is not None and len(got.meta["plan"]) == 256


def test_nbytes_is_the_sum_of_frames() -> None:
    frames = encode(Message("data", 0, 0, "x", [np.zeros((10, 10), np.int64), np.zeros(3, np.uint8)]))
    assert message_nbytes(frames) == len(frames[0]) + 800 + 3


@pytest.mark.parametrize("arr, needle", [
    (np.zeros(3, dtype=np.bool_), "cannot be sent"),
    (np.zeros(3, dtype=np.complex64), "cannot be sent"),
    (np.zeros(3, dtype=np.float16), "cannot be sent"),
])
def test_encode_rejects_dtypes(arr: np.ndarray, needle: str) -> None:
    with pytest.raises(WireError, match=needle):
        encode(Message("data", 0, 0, "x", [arr]))


def test_encode_rejects_unknown_kind_too_many_arrays_and_huge_header() -> None:
    with pytest.raises(WireError, match="unknown message kind 'gossip'"):
        encode(Message("gossip", 0, 0, "x"))
    with pytest.raises(WireError, match="arrays in one message"):
        encode(Message("data", 0, 0, "x", [np.zeros(1)] * (MAX_ARRAYS + 1)))
    with pytest.raises(WireError, match="header of"):
        encode(Message("data", 0, 0, "x", [], {"reason": "y" * MAX_HEADER_BYTES}))


# -- malformed messages ------------------------------------------------------------

def _header(**changes: object) -> dict[str, object]:
    h: dict[str, object] = {"v": WIRE_VERSION, "k": "data", "src": 0, "seq": 0, "lbl": "open",
                            "a": [["<i8", [2]]], "meta": None}
    h.update(changes)
    return h


def _pack(h: object) -> bytes:
    return msgpack.packb(h, use_bin_type=True)


GOOD_ARRAY = np.arange(2, dtype=np.int64).tobytes()


def _without(key: str) -> dict[str, object]:
    h = _header()
    del h[key]
    return h


MALFORMED = {
    "empty": ([], "empty message"),
    "not msgpack": ([b"\xc1", GOOD_ARRAY], "malformed header"),
    "trailing garbage": ([_pack(_header()) + b"\x00", GOOD_ARRAY], "malformed header"),
    "not a map": ([_pack([1, 2, 3]), GOOD_ARRAY], "malformed header .*fields list"),
    "missing field": ([_pack(_without("seq")), GOOD_ARRAY], r"fields \['a', 'k', 'lbl', 'meta'"),
    "extra field": ([_pack(_header(x=1)), GOOD_ARRAY], r"fields .*'x'"),
    "wire version": ([_pack(_header(v=99)), GOOD_ARRAY], "wire version 99"),
    "unknown kind": ([_pack(_header(k="gossip")), GOOD_ARRAY], "unknown message kind 'gossip'"),
    "src is a string": ([_pack(_header(src="0")), GOOD_ARRAY], "bad sender id '0'"),
    "src is a bool": ([_pack(_header(src=True)), GOOD_ARRAY], "bad sender id True"),
    "negative seq": ([_pack(_header(seq=-1)), GOOD_ARRAY], "bad sequence number -1"),
    "label not a string": ([_pack(_header(lbl=7)), GOOD_ARRAY], "bad label 7"),
    "array list not a list": ([_pack(_header(a="x")), GOOD_ARRAY], "bad array list"),
    "array spec malformed": ([_pack(_header(a=[["<i8"]])), GOOD_ARRAY], "bad array spec"),
    "unknown dtype": ([_pack(_header(a=[["|O", [2]]])), GOOD_ARRAY], r"dtype '\|O' .* not allowed"),
    "negative dimension": ([_pack(_header(a=[["<i8", [-2]]])), GOOD_ARRAY], r"bad shape \[-2\]"),
    "too many dimensions": ([_pack(_header(a=[["<i8", [1] * 9]])), GOOD_ARRAY], "bad shape"),
    "shape mismatch": ([_pack(_header(a=[["<i8", [3]]])), GOOD_ARRAY], "expected 24 bytes .* got 16"),
    "huge shape": ([_pack(_header(a=[["<i8", [2**62, 4]]])), b""], "truncated or oversized"),
    "truncated buffer": ([_pack(_header()), GOOD_ARRAY[:-3]], "truncated .* got 13"),
    "too many frames": ([_pack(_header()), GOOD_ARRAY, GOOD_ARRAY], "has 2 array frames, header says 1"),
    "too few frames": ([_pack(_header())], "has 0 array frames, header says 1"),
    "meta not a map": ([_pack(_header(meta=[1])), GOOD_ARRAY], "'meta' must be a small map"),
    "meta value type": ([_pack(_header(meta={"x": {"y": 1}})), GOOD_ARRAY], r"meta\['x'\] has type dict"),
    "header too big": ([b"\x00" * (MAX_HEADER_BYTES + 1), GOOD_ARRAY], "header from party 1 is"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_messages_raise_wire_error(case: str) -> None:
    frames, pattern = MALFORMED[case]
    with pytest.raises(WireError, match=pattern) as info:
        decode(frames, who="party 1")
    assert "party 1" in str(info.value)
    assert "\n" not in str(info.value)
