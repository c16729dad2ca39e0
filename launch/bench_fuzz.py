"""Fuzz the wire decoder (parties/wire.py): every input must decode or raise WireError.

`python -m privit.launch.bench_fuzz [--inputs 100000] [--seed 0]` builds `inputs` frame
lists, deterministically from `seed`, and runs `decode` on each. The inputs mix:

1. random bytes as the header, with a random number of random array frames;
2. random msgpack structures (nested lists, maps, scalars, ext types) as the header;
3. valid encoded messages, left as they are or mutated: bit flips and truncation of the
   header, header fields replaced by values of the wrong type, array specs with foreign
   dtype codes or huge / empty / negative shapes, meta nested too deep, array frames
   truncated or extended, frames dropped or repeated, frames of unusual buffer types.

It prints how many inputs were accepted, how many raised WireError and how many raised
anything else (with the first few of those, by type and repr), and exits with status 1
if any did. `fuzz_decoder` returns the same counts.
"""
from __future__ import annotations

import argparse
import random
import time
from typing import Any

import msgpack
import numpy as np

from privit.parties.wire import KINDS, WIRE_DTYPES, Message, WireError, decode, encode

MAX_EXAMPLES = 5
# Values that a header field or an array spec may be swapped for: every msgpack type,
# unhashable ones included, and integers at and past the edges of int64 / uint64.
ODD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**31, 2**62, 2**63 - 1, -(2**63), 2**64 - 1, 0.5, float("nan"),
    "", "data", "<i8", "x" * 300, b"", b"<i8", [], [1], ["<i8"], [[]], {}, {"k": 1}, {"<i8": [2]},
    msgpack.ExtType(1, b"x"), msgpack.Timestamp(0),
)
HUGE_SHAPES: tuple[list[int], ...] = (
    [2**62, 4], [2**63 - 1], [2**64 - 1], [0, 2**62], [0, 2**63], [0, 2**64 - 1],
    [2**32, 2**32, 0], [0] * 8, [1] * 9, [-1], [2, -3], [True, 2], [2**31] * 8,
)


class _FrameLike:
    """A stand-in for zmq.Frame: decode reads its `.buffer`."""

    def __init__(self, buffer: Any) -> None:
        self.buffer = buffer


def _random_value(rng: random.Random, depth: int) -> Any:
    """A random msgpack-packable value, nested at most `depth` deep."""
    choice = rng.randrange(10 if depth > 0 else 7)
    if choice == 0:
        return rng.choice(ODD_VALUES[:13])
    if choice == 1:
        return rng.randrange(-(2**63), 2**64)
    if choice == 2:
        return rng.random() * 10 ** rng.randrange(-5, 300)
    if choice == 3:
        return rng.choice(("v", "k", "src", "seq", "lbl", "a", "meta", *KINDS, *WIRE_DTYPES))
    if choice == 4:
        return rng.randbytes(rng.randrange(8))
    if choice == 5:
        return "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(rng.randrange(6)))
    if choice == 6:
        return msgpack.ExtType(rng.randrange(128), rng.randbytes(rng.randrange(4)))
    if choice in (7, 8):
        return [_random_value(rng, depth - 1) for _ in range(rng.randrange(5))]
    return {_random_value(rng, 0) if rng.random() < 0.1 else rng.choice(("v", "k", "a", "meta", "x")):
            _random_value(rng, depth - 1) for _ in range(rng.randrange(5))}


def _random_message(rng: random.Random, nprng: np.random.Generator) -> Message:
    """A valid message: a few small arrays of allowed dtypes and maybe some meta."""
    arrays = []
    for _ in range(rng.randrange(4)):
        dtype = WIRE_DTYPES[rng.choice(sorted(WIRE_DTYPES))]
        shape = tuple(rng.randrange(4) for _ in range(rng.randrange(4)))
        arrays.append(nprng.integers(0, 100, size=shape).astype(dtype))
    meta = rng.choice((None, {"reason": "x"}, {"plan": [["beaver", [1, 2], 2]], "end": False, "r0": 0}))
    return Message(rng.choice(KINDS), rng.randrange(4), rng.randrange(1000), "open", arrays, meta)


def _header_of(msg: Message) -> dict[str, Any]:
    return msgpack.unpackb(encode(msg)[0], raw=False)


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _mutate_header_field(rng: random.Random, header: dict[str, Any]) -> dict[str, Any]:
    """Swap a header field, an array spec part or a meta value for a wrong one."""
    target = rng.randrange(6)
    if target == 0 or not header["a"]:
        key = rng.choice(sorted(header))
        header[key] = rng.choice(ODD_VALUES) if rng.random() < 0.7 else _random_value(rng, 3)
    elif target == 1:
        header["a"][rng.randrange(len(header["a"]))][0] = rng.choice(ODD_VALUES)
    elif target in (2, 3):
        spec = header["a"][rng.randrange(len(header["a"]))]
        spec[1] = rng.choice(HUGE_SHAPES) if target == 2 else rng.choice(ODD_VALUES)
    elif target == 4:
        header["a"][rng.randrange(len(header["a"]))] = _random_value(rng, 2)
    else:
        deep: Any = rng.choice((1, {"x": 1}, msgpack.ExtType(2, b""), None))
        for _ in range(rng.randrange(1, 6)):
            deep = [deep]
        header["meta"] = {"plan": deep} if rng.random() < 0.8 else rng.choice(ODD_VALUES)
    return header


def _odd_buffer(rng: random.Random, data: bytes) -> Any:
    """`data` (or something near it) as one of the frame types a receiver may see."""
    choice = rng.randrange(9)
    if choice == 0:
        return bytearray(data)
    if choice == 1:
        return memoryview(data)
    if choice == 2:
        return _FrameLike(memoryview(data))
    if choice == 3:  # a typed, multi-dimensional view of the same bytes
        usable = len(data) - len(data) % 4
        return np.frombuffer(data[:usable], np.uint8).view("<u4").reshape(-1, 1).data
    if choice == 4:  # strided: not contiguous
        return memoryview(data + data)[::2]
    if choice == 5:
        released = memoryview(data)
        released.release()
        return released
    if choice == 6:
        return np.zeros((0, 3), np.int64).data
    return rng.choice((_FrameLike("text"), _FrameLike(None), "text", 7, None, [data]))


def _mutate_frames(rng: random.Random, frames: list[Any]) -> list[Any]:
    """Damage the frames of a valid message in one of several ways."""
    frames = [bytes(f) for f in frames]
    header = frames[0]
    how = rng.randrange(7)
    if how == 0 and header:  # bit flips
        raw = bytearray(header)
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        frames[0] = bytes(raw)
    elif how == 1:
        frames[0] = header[:rng.randrange(len(header) + 1)]
    elif how == 2 and len(frames) > 1:
        i = rng.randrange(1, len(frames))
        data = frames[i]
        frames[i] = data[:rng.randrange(len(data))] if data and rng.random() < 0.5 \
            else data + rng.randbytes(rng.randrange(1, 9))
    elif how == 3:  # wrong frame count
        if len(frames) > 1 and rng.random() < 0.5:
            del frames[rng.randrange(1, len(frames))]
        else:
            frames.extend(rng.randbytes(rng.randrange(16)) for _ in range(rng.randrange(1, 3)))
    elif how == 4:
        i = rng.randrange(len(frames))
        frames[i] = _odd_buffer(rng, frames[i])
    else:
        frames[0] = header + rng.randbytes(rng.randrange(1, 4))  # trailing garbage
    return frames


def fuzz_input(rng: random.Random, nprng: np.random.Generator) -> list[Any]:
    """One fuzzed frame list, drawn from `rng` and `nprng`."""
    family = rng.randrange(10)
    if family == 0:
        return [rng.randbytes(rng.randrange(64))] + [
            rng.randbytes(rng.randrange(32)) for _ in range(rng.randrange(4))
        ]
    if family == 1:
        return [_pack(_random_value(rng, 4))] + [b"" for _ in range(rng.randrange(3))]
    msg = _random_message(rng, nprng)
    frames = [bytes(f) for f in encode(msg)]
    if family == 2:
        return frames
    if family in (3, 4, 5, 6):
        header = _mutate_header_field(rng, _header_of(msg))
        frames[0] = _pack(header)
        return frames if rng.random() < 0.7 else _mutate_frames(rng, frames)
    return _mutate_frames(rng, frames)


def fuzz_decoder(inputs: int, seed: int) -> dict[str, Any]:
    """Run `decode` on `inputs` fuzzed frame lists drawn from `seed`; count the outcomes.

    Returns {"inputs", "accepted", "wire_error", "other", "other_examples"}, the last a
    list of "TypeName: repr" strings for the first MAX_EXAMPLES other exceptions.
    """
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    counts: dict[str, Any] = {"inputs": inputs, "accepted": 0, "wire_error": 0, "other": 0,
                              "other_examples": []}
    for _ in range(inputs):
        frames = fuzz_input(rng, nprng)
        try:
            decode(frames, who="fuzzer")
        except WireError:
            counts["wire_error"] += 1
        except Exception as exc:  # the very thing this benchmark looks for
            counts["other"] += 1
            if len(counts["other_examples"]) < MAX_EXAMPLES:
                counts["other_examples"].append(f"{type(exc).__name__}: {exc!r:.200}")
        else:
            counts["accepted"] += 1
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m privit.launch.bench_fuzz")
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    counts = fuzz_decoder(args.inputs, args.seed)
    seconds = time.perf_counter() - start
    print(f"wire decoder fuzz: {counts['inputs']} inputs, seed {args.seed}, {seconds:.1f} s")
    print(f"  accepted   {counts['accepted']}")
    print(f"  WireError  {counts['wire_error']}")
    print(f"  other      {counts['other']}")
    for example in counts["other_examples"]:
        print(f"    {example}")
    if counts["other"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
