"""The wire format: one message = one msgpack header frame + zero or more raw array frames.

Header (a msgpack map, every field validated before use, nothing ever unpickled):

    v     protocol version (int)
    k     kind: "hello" | "data" | "corr" | "abort" | "bye"
    src   sender role id (int, 0..n-1 parties, n = dealer)
    seq   deterministic sequence number of this message on its (src -> dst) stream
    lbl   label of the operation that sent it ("open", "beaver_mul", ...), for errors
    a     list of [dtype, shape] describing each following frame
    meta  small map of str -> scalar (handshake and abort text only), else nil

Array frames are the raw little-endian bytes of C-contiguous numpy arrays; large
ones are handed to ZeroMQ without copying. Bytes on the wire are the sum of every
frame's length (header included); `message_nbytes` is that number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

WIRE_VERSION = 1
KINDS = ("hello", "data", "corr", "abort", "bye")
MAX_HEADER_BYTES = 1 << 16
MAX_NDIM = 8
MAX_ARRAYS = 1024  # an offline chunk carries a few arrays for each of up to 256 requests
MAX_META_ENTRIES = 64
# Only these dtypes may travel; the code is the numpy `dtype.str` with byte order.
WIRE_DTYPES: dict[str, np.dtype] = {
    np.dtype(t).str: np.dtype(t)
    for t in ("<i8", "<u8", "<i4", "<u4", "<i2", "<u2", "|i1", "|u1", "<f8", "<f4")
}
HEADER_KEYS = frozenset({"v", "k", "src", "seq", "lbl", "a", "meta"})


class WireError(ValueError):
    """A frame that is malformed, truncated or not what the protocol expects."""


@dataclass
class Message:
    kind: str
    src: int
    seq: int
    label: str
    arrays: list[np.ndarray] = field(default_factory=list)
    meta: dict[str, Any] | None = None


def _contiguous(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, order="C")  # not ascontiguousarray: it turns a 0-d array into 1-d
    if a.dtype.str not in WIRE_DTYPES:
        # Normalise native byte order spellings ("=i8") and reject anything else.
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        if a.dtype.str not in WIRE_DTYPES:
            raise WireError(f"dtype {a.dtype} cannot be sent")
    return a


def encode(msg: Message) -> list[Any]:
    """Frames for `msg`: [header bytes, array buffers...]."""
    if msg.kind not in KINDS:
        raise WireError(f"unknown message kind {msg.kind!r}")
    if len(msg.arrays) > MAX_ARRAYS:
        raise WireError(f"{msg.label}: {len(msg.arrays)} arrays in one message (max {MAX_ARRAYS})")
    arrays = [_contiguous(a) for a in msg.arrays]
    header = {
        "v": WIRE_VERSION,
        "k": msg.kind,
        "src": int(msg.src),
        "seq": int(msg.seq),
        "lbl": str(msg.label),
        "a": [[a.dtype.str, list(a.shape)] for a in arrays],
        "meta": msg.meta,
    }
    frames: list[Any] = [msgpack.packb(header, use_bin_type=True)]
    if len(frames[0]) > MAX_HEADER_BYTES:
        raise WireError(f"{msg.label}: header of {len(frames[0])} bytes (max {MAX_HEADER_BYTES})")
    frames.extend(memoryview(a).cast("B") if a.nbytes else b"" for a in arrays)  # type: ignore[arg-type]
    return frames


def message_nbytes(frames: list[Any]) -> int:
    return sum(len(f) if isinstance(f, bytes) else memoryview(f).nbytes for f in frames)


def _check_meta(meta: Any, who: str) -> dict[str, Any] | None:
    if meta is None:
        return None
    if not isinstance(meta, dict) or len(meta) > MAX_META_ENTRIES:
        raise WireError(f"bad header from {who}: 'meta' must be a small map")
    for key, value in meta.items():
        if not isinstance(key, str):
            raise WireError(f"bad header from {who}: meta key {key!r} is not a string")
        if not isinstance(value, (str, int, float, bool, bytes, type(None), list)):
            raise WireError(f"bad header from {who}: meta[{key!r}] has type {type(value).__name__}")
    return meta


def decode(frames: list[Any], who: str = "peer") -> Message:
    """Validate and decode frames received from `who`; raise WireError naming the problem."""
    if not frames:
        raise WireError(f"empty message from {who}")
    raw_header = bytes(frames[0])
    if len(raw_header) > MAX_HEADER_BYTES:
        raise WireError(f"header from {who} is {len(raw_header)} bytes (max {MAX_HEADER_BYTES})")
    try:
        header = msgpack.unpackb(
            raw_header, raw=False, strict_map_key=True, max_bin_len=MAX_HEADER_BYTES,
            max_str_len=MAX_HEADER_BYTES, max_array_len=MAX_HEADER_BYTES,
            max_map_len=MAX_META_ENTRIES,
        )
    except Exception as exc:  # msgpack raises several unrelated types
        raise WireError(f"malformed header from {who}: {type(exc).__name__}: {exc}") from None
    if not isinstance(header, dict) or set(header) != HEADER_KEYS:
        keys = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise WireError(f"malformed header from {who}: fields {keys}")
    if header["v"] != WIRE_VERSION:
        raise WireError(f"wire version {header['v']!r} from {who}, expected {WIRE_VERSION}")
    kind, src, seq, label = header["k"], header["src"], header["seq"], header["lbl"]
    if kind not in KINDS:
        raise WireError(f"unknown message kind {kind!r} from {who}")
    if not isinstance(src, int) or isinstance(src, bool) or src < 0:
        raise WireError(f"bad sender id {src!r} from {who}")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise WireError(f"bad sequence number {seq!r} from {who}")
    if not isinstance(label, str):
        raise WireError(f"bad label {label!r} from {who}")
    specs = header["a"]
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise WireError(f"bad array list in header from {who}")
    if len(frames) != 1 + len(specs):
        raise WireError(
            f"message from {who} ({label}) has {len(frames) - 1} array frames, header says {len(specs)}"
        )
    arrays = []
    for i, spec in enumerate(specs):
        arrays.append(_decode_array(spec, frames[1 + i], who, label))
    return Message(kind, src, seq, label, arrays, _check_meta(header["meta"], who))


def _decode_array(spec: Any, frame: Any, who: str, label: str) -> np.ndarray:
    if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[1], list)):
        raise WireError(f"bad array spec {spec!r} from {who}")
    dtype_code, shape = spec
    if dtype_code not in WIRE_DTYPES:
        raise WireError(f"dtype {dtype_code!r} from {who} is not allowed")
    if len(shape) > MAX_NDIM or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise WireError(f"bad shape {shape!r} from {who}")
    dtype = WIRE_DTYPES[dtype_code]
    expected = dtype.itemsize * math.prod(shape)  # Python ints: a huge shape cannot wrap
    buf = memoryview(frame.buffer if hasattr(frame, "buffer") else frame).cast("B")
    if buf.nbytes != expected:
        raise WireError(
            f"truncated or oversized frame from {who} ({label}): "
            f"expected {expected} bytes for {dtype_code}{shape}, got {buf.nbytes}"
        )
    return np.frombuffer(buf, dtype=dtype).reshape(shape)
