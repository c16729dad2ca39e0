"""The wire format: one message = one msgpack header frame + zero or more raw array frames.

Header (a msgpack map, every field validated before use, nothing ever unpickled):

    v     protocol version (int)
    k     kind: "hello" | "data" | "corr" | "abort" | "bye"
    src   sender role id (int, 0..n-1 parties, n = dealer)
    seq   deterministic sequence number of this message on its (src -> dst) stream
    lbl   label of the operation that sent it ("open", "beaver_mul", ...), for errors
    a     list of [dtype, shape] describing each following frame
    meta  small map of str -> scalar or list (handshake, abort text, offline plan), else nil;
          lists hold scalars or lists, at most MAX_META_DEPTH deep

Array frames are the raw little-endian bytes of C-contiguous numpy arrays; large
ones are handed to ZeroMQ without copying. Bytes on the wire are the sum of every
frame's length (header included); `message_nbytes` is that number.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Sequence
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
MAX_META_DEPTH = 3  # meta lists nest at most this deep: a plan is [[kind, [params...], count], ...]
MAX_META_ITEMS = 1 << 14  # list items in all of meta; a 256-request plan needs a few thousand
# Only these dtypes may travel; the code is the numpy `dtype.str` with byte order.
WIRE_DTYPES: dict[str, np.dtype] = {
    np.dtype(t).str: np.dtype(t)
    for t in ("<i8", "<u8", "<i4", "<u4", "<i2", "<u2", "|i1", "|u1", "<f8", "<f4")
}
_WIRE_CODES = {dtype: code for code, dtype in WIRE_DTYPES.items()}  # dtype -> its code
HEADER_KEYS = frozenset({"v", "k", "src", "seq", "lbl", "a", "meta"})
# Exact types, as msgpack builds them: its ExtType and Timestamp are not among them.
_META_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})
_BUFFER_TYPES = (bytes, bytearray, memoryview)


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


class Encoder:
    """`encode` for one sender's hot path, byte for byte the same frames, faster.

    Most messages carry no meta (protocol data, dealer material), and such a message's
    header differs from the previous one with the same kind, sender, label and array specs
    only in its sequence number. Its msgpack map is therefore built once as two byte
    strings, the fields before the seq value and those after it, and each message packs
    only its seq between them (msgpack writes a map as its entries in order, so the
    concatenation is exactly what `msgpack.packb` gives for the whole map; each new
    template is checked against it). Messages with meta take `encode` itself.
    Not thread-safe: one per channel, used by the protocol thread that sends.
    """

    MAX_TEMPLATES = 4096  # distinct (kind, src, label, specs); past it the cache restarts

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)
        self._templates: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}

    def encode(self, kind: str, src: int, seq: int, label: str,
               arrays: Sequence[np.ndarray], meta: dict[str, Any] | None,
               ) -> tuple[list[Any], int, int]:
        """The frames of the message, their total size (`message_nbytes`) and the size of
        its largest array frame."""
        if meta is not None or len(arrays) > MAX_ARRAYS:
            reference = encode(Message(kind, src, seq, label, list(arrays), meta))
            largest = max((memoryview(f).nbytes for f in reference[1:]), default=0)
            return reference, message_nbytes(reference), largest
        frames: list[Any] = [b""]
        specs: list[tuple[str, tuple[int, ...]]] = []
        nbytes = largest = 0
        for a in arrays:
            a = np.asarray(a, order="C")
            code = _WIRE_CODES.get(a.dtype)
            if code is None:
                a = _contiguous(a)
                code = a.dtype.str
            specs.append((code, a.shape))
            size = a.nbytes
            frames.append(memoryview(a).cast("B") if size else b"")  # type: ignore[arg-type]
            nbytes += size
            largest = max(largest, size)
        key = (kind, src, label, *specs)
        template = self._templates.get(key)
        if template is None:
            template = self._template(kind, src, label, specs)
        header = b"".join((template[0], self._packer.pack(int(seq)), template[1]))
        if len(header) > MAX_HEADER_BYTES:
            raise WireError(f"{label}: header of {len(header)} bytes (max {MAX_HEADER_BYTES})")
        frames[0] = header
        return frames, nbytes + len(header), largest

    def _template(self, kind: str, src: int, label: str,
                  specs: list[tuple[str, tuple[int, ...]]]) -> tuple[bytes, bytes]:
        if kind not in KINDS:
            raise WireError(f"unknown message kind {kind!r}")
        prefix, suffix = _header_parts(self._packer, kind, int(src), str(label), specs)
        if len(self._templates) >= self.MAX_TEMPLATES:
            self._templates.clear()
        self._templates[(kind, src, label, *specs)] = (prefix, suffix)
        return prefix, suffix


def _header_parts(packer: msgpack.Packer, kind: str, src: int, label: str,
                  specs: Sequence[tuple[str, tuple[int, ...]]]) -> tuple[bytes, bytes]:
    """The header of a message without meta as the bytes before its seq value and the
    bytes after it: `prefix + packb(seq) + suffix` is `encode`'s header for any seq
    (msgpack writes a map as its entries in order; checked here against msgpack)."""
    pack = packer.pack
    entries = {"v": WIRE_VERSION, "k": kind, "src": src, "seq": 0, "lbl": label,
               "a": [[code, list(shape)] for code, shape in specs], "meta": None}
    names = list(entries)
    cut = names.index("seq")
    map_header = bytes([0x80 | len(names)])  # a msgpack fixmap of that many entries
    prefix = b"".join([map_header] + [pack(n) + pack(entries[n]) for n in names[:cut]]
                      + [pack("seq")])
    suffix = b"".join(pack(n) + pack(entries[n]) for n in names[cut + 1:])
    if prefix + pack(0) + suffix != msgpack.packb(entries, use_bin_type=True):
        raise RuntimeError("a header template differs from msgpack's map")
    return prefix, suffix


def message_nbytes(frames: list[Any]) -> int:
    return sum(len(f) if isinstance(f, bytes) else memoryview(f).nbytes for f in frames)


def _frame_view(frame: Any, who: str, label: str | None) -> memoryview:
    """`frame`'s bytes as a flat, C-contiguous byte view, without copying.

    A frame is bytes, a bytearray, a memoryview (or another object with the buffer
    protocol), or an object whose `.buffer` is one (a zmq.Frame received with copy=False);
    anything else is a WireError. `label` is None for the header frame, else the
    message's label (errors name the frame).
    """
    buf = frame if isinstance(frame, _BUFFER_TYPES) else getattr(frame, "buffer", frame)
    try:  # memoryview() refuses non-buffers (TypeError) and released views (ValueError)
        view = memoryview(buf)
        flat = view.ndim == 1 and view.format == "B" and view.c_contiguous
    except (TypeError, ValueError, BufferError):
        raise WireError(
            f"{_frame_name(label)} from {who} is a {type(frame).__name__}, not a readable buffer"
        ) from None
    return view if flat else _flat_bytes(view, who, label)


def _flat_bytes(view: memoryview, who: str, label: str | None) -> memoryview:
    """A typed, multi-dimensional or strided view as flat bytes (the uncommon case)."""
    if not view.c_contiguous:
        raise WireError(f"{_frame_name(label)} from {who} is not a contiguous buffer")
    # cast() refuses views with a zero in their shape; an empty frame is just b"".
    return view.cast("B") if view.nbytes else memoryview(b"")


def _frame_name(label: str | None) -> str:
    return "header" if label is None else f"array frame ({label!r:.60})"


def _check_meta(meta: Any, who: str) -> dict[str, Any] | None:
    """`meta` if it is nil or a small map of str -> scalar or (nested) list of scalars.

    Lists nest at most MAX_META_DEPTH deep (an offline chunk's plan is a list of
    [kind, [params...], count]) and hold at most MAX_META_ITEMS items in all.
    """
    if meta is None:
        return None
    if not isinstance(meta, dict) or len(meta) > MAX_META_ENTRIES:
        raise WireError(f"bad header from {who}: 'meta' must be a small map")
    budget = MAX_META_ITEMS
    for key, value in meta.items():
        if not isinstance(key, str):
            raise WireError(f"bad header from {who}: meta key {key!r:.60} is not a string")
        if type(value) is list:
            budget = _check_meta_list(value, key, 1, budget, who)
        elif type(value) not in _META_SCALARS:
            raise WireError(f"bad header from {who}: meta[{key!r:.60}] has type {type(value).__name__}")
    return meta


def _check_meta_list(items: list[Any], key: str, depth: int, budget: int, who: str) -> int:
    """Check one list of meta[key] at nesting `depth`; returns the item budget left."""
    if depth > MAX_META_DEPTH:
        raise WireError(f"bad header from {who}: meta[{key!r:.60}] nests lists deeper than {MAX_META_DEPTH}")
    budget -= len(items)
    if budget < 0:
        raise WireError(f"bad header from {who}: meta lists hold more than {MAX_META_ITEMS} items")
    for item in items:
        kind = type(item)
        if kind is list:
            budget = _check_meta_list(item, key, depth + 1, budget, who)
        elif kind not in _META_SCALARS:
            raise WireError(f"bad header from {who}: meta[{key!r:.60}] holds a {kind.__name__}")
    return budget


def _field_names(header: Any) -> str:
    """The header's field names for an error message, sorted (str and bytes keys apart)."""
    if not isinstance(header, dict):
        return type(header).__name__
    return str(sorted(header, key=lambda k: (type(k).__name__, str(k))))


def decode(frames: list[Any], who: str = "peer") -> Message:
    """Validate and decode frames received from `who`.

    Any list of frames either decodes to a Message or raises WireError with a one-line
    text naming the problem: every field's type is checked before it is hashed, compared
    or used, so no other exception escapes. Array frames are not copied.
    """
    if not isinstance(frames, (list, tuple)) or not frames:
        raise WireError(f"empty message from {who}")
    raw_header = _frame_view(frames[0], who, None)
    if raw_header.nbytes > MAX_HEADER_BYTES:
        raise WireError(f"header from {who} is {raw_header.nbytes} bytes (max {MAX_HEADER_BYTES})")
    try:
        header = msgpack.unpackb(
            raw_header, raw=False, strict_map_key=True, max_bin_len=MAX_HEADER_BYTES,
            max_str_len=MAX_HEADER_BYTES, max_array_len=MAX_HEADER_BYTES,
            max_map_len=MAX_META_ENTRIES,
        )
    except Exception as exc:  # msgpack raises several unrelated types
        text = " ".join(str(exc).split())
        raise WireError(f"malformed header from {who}: {type(exc).__name__}: {text:.120}") from None
    if not isinstance(header, dict) or header.keys() != HEADER_KEYS:
        raise WireError(f"malformed header from {who}: fields {_field_names(header):.200}")
    version = header["v"]
    if type(version) is not int or version != WIRE_VERSION:
        raise WireError(f"wire version {version!r:.40} from {who}, expected {WIRE_VERSION}")
    kind, src, seq, label = header["k"], header["src"], header["seq"], header["lbl"]
    if not isinstance(kind, str) or kind not in KINDS:
        raise WireError(f"unknown message kind {kind!r:.40} from {who}")
    # `type(x) is int`: msgpack gives exactly int for integers, and this refuses bools.
    if type(src) is not int or src < 0:
        raise WireError(f"bad sender id {src!r:.40} from {who}")
    if type(seq) is not int or seq < 0:
        raise WireError(f"bad sequence number {seq!r:.40} from {who}")
    if not isinstance(label, str):
        raise WireError(f"bad label {label!r:.40} from {who}")
    specs = header["a"]
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise WireError(f"bad array list in header from {who}")
    if len(frames) != 1 + len(specs):
        raise WireError(
            f"message from {who} ({label!r:.60}) has {len(frames) - 1} array frames, "
            f"header says {len(specs)}"
        )
    arrays = [_decode_array(spec, frames[1 + i], who, label) for i, spec in enumerate(specs)]
    return Message(kind, src, seq, label, arrays, _check_meta(header["meta"], who))


_SEQ_KEY = b"\xa3seq"  # the msgpack str "seq": the header's seq value follows it
_UINT_WIDTHS = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}  # msgpack uint 8/16/32/64 markers


def _packed_uint(raw: bytes, at: int) -> tuple[int, int] | None:
    """The msgpack unsigned integer at `raw[at]` and the offset after it, or None."""
    if at >= len(raw):
        return None
    marker = raw[at]
    if marker < 0x80:
        return marker, at + 1
    width = _UINT_WIDTHS.get(marker)
    if width is None or at + 1 + width > len(raw):
        return None
    return int.from_bytes(raw[at + 1:at + 1 + width], "big"), at + 1 + width


@dataclass(frozen=True)
class _KnownHeader:
    """What a validated header without meta says, but for its seq."""

    kind: str
    src: int
    label: str
    specs: tuple[tuple[np.dtype, tuple[int, ...], int], ...]  # dtype, shape, bytes


class Decoder:
    """`decode` for one receiver's hot path: the same results and errors, faster.

    A peer's data messages repeat a few headers that differ only in their seq. Once a
    header without meta has passed `decode`'s checks and is exactly what `Encoder` writes
    for its fields (`_header_parts`), its bytes before and after the seq value are
    remembered. A later header that is exactly such a pair of byte strings around one
    msgpack unsigned integer is then the same valid header with another seq, so only that
    seq is parsed and only the array frames are checked (count, and each frame's length
    against its dtype and shape). Anything else (meta, a new label or shape, any other
    byte) goes through `decode`. Not thread-safe: one per channel, its receiving thread.
    """

    MAX_HEADERS = 4096  # remembered headers; past it the cache restarts
    MAX_HEADER_LEN = 1024  # longer headers are not remembered: the cache stays < 10 MiB

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True)
        self._known: dict[tuple[bytes, bytes], _KnownHeader] = {}

    def decode(self, frames: list[Any], who: str = "peer") -> Message:
        raw = frames[0] if type(frames) is list and frames else None
        if type(raw) is bytes and len(raw) <= MAX_HEADER_BYTES:
            at = raw.find(_SEQ_KEY) + len(_SEQ_KEY)
            if at >= len(_SEQ_KEY):
                parsed = _packed_uint(raw, at)
                if parsed is not None:
                    known = self._known.get((raw[:at], raw[parsed[1]:]))
                    if known is not None:
                        return self._known_message(known, parsed[0], frames, who)
        msg = decode(frames, who)
        if msg.meta is None and type(raw) is bytes and len(raw) <= self.MAX_HEADER_LEN:
            self._remember(raw, msg)
        return msg

    def _known_message(self, known: _KnownHeader, seq: int, frames: list[Any],
                       who: str) -> Message:
        specs = known.specs
        if len(frames) != 1 + len(specs):
            raise WireError(
                f"message from {who} ({known.label!r:.60}) has {len(frames) - 1} array frames, "
                f"header says {len(specs)}"
            )
        arrays = []
        for (dtype, shape, expected), frame in zip(specs, frames[1:], strict=True):
            buf = _frame_view(frame, who, known.label)
            if buf.nbytes != expected:
                raise WireError(
                    f"truncated or oversized frame from {who} ({known.label!r:.60}): "
                    f"expected {expected} bytes for {dtype.str}{list(shape)!r:.80}, "
                    f"got {buf.nbytes}"
                )
            arrays.append(np.frombuffer(buf, dtype=dtype).reshape(shape))
        return Message(known.kind, known.src, seq, known.label, arrays, None)

    def _remember(self, raw: bytes, msg: Message) -> None:
        specs = [(a.dtype.str, a.shape) for a in msg.arrays]
        prefix, suffix = _header_parts(self._packer, msg.kind, msg.src, msg.label, specs)
        if raw != prefix + self._packer.pack(msg.seq) + suffix:
            return  # valid, but not written as Encoder writes it: always the full check
        if len(self._known) >= self.MAX_HEADERS:
            self._known.clear()
        self._known[(prefix, suffix)] = _KnownHeader(
            msg.kind, msg.src, msg.label, tuple((a.dtype, a.shape, a.nbytes) for a in msg.arrays))


def _decode_array(spec: Any, frame: Any, who: str, label: str) -> np.ndarray:
    """The array that `spec` ([dtype code, shape]) says `frame` holds, viewing its bytes."""
    if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[1], list)):
        raise WireError(f"bad array spec {spec!r:.80} from {who}")
    dtype_code, shape = spec
    dtype = WIRE_DTYPES.get(dtype_code) if isinstance(dtype_code, str) else None
    if dtype is None:
        raise WireError(f"dtype {dtype_code!r:.40} from {who} is not allowed")
    if len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
        raise WireError(f"bad shape {shape!r:.80} from {who}")
    expected = dtype.itemsize * math.prod(shape)  # Python ints: a huge shape cannot wrap
    buf = _frame_view(frame, who, label)
    if buf.nbytes != expected:
        raise WireError(
            f"truncated or oversized frame from {who} ({label!r:.60}): "
            f"expected {expected} bytes for {dtype_code}{shape!r:.80}, got {buf.nbytes}"
        )
    # An empty array may still name huge dimensions, which numpy refuses (it bounds the
    # product of the non-zero ones); a non-empty one is bounded by its real buffer.
    if expected == 0 and dtype.itemsize * math.prod(d for d in shape if d) > sys.maxsize:
        raise WireError(f"bad shape {shape!r:.80} from {who}: too large for an empty array")
    return np.frombuffer(buf, dtype=dtype).reshape(shape)
