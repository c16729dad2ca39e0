"""The adder path's layout (binary.py): positions, leaves and tree levels, the
bit-reversed word layout, dense bit packing for the wire and the dealer's payload, and the
final round's truth table. Pure numpy functions of public shapes; no shares, no session.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

U64 = np.dtype(np.uint64)
TABLE = 8  # entries of the final round's truth table (3 opened bits)
TABLE_SUM = 4  # ones in t ^ (p & g) over its 8 inputs


# -- layout -------------------------------------------------------------------------------
def positions(bits: int) -> int:
    """P = max(4, next power of two >= bits - 1)."""
    low = max(1, bits - 1)
    return max(4, 1 << (low - 1).bit_length())


LEAF_WIDTHS = (2, 4)


def leaf_widths(bits: int) -> tuple[int, ...]:
    """The leaf block widths usable for `bits`: 4 needs P >= 8 (two blocks or more)."""
    return LEAF_WIDTHS if positions(bits) >= 8 else (2,)


def level_widths(bits: int, leaf: int = 2) -> list[int]:
    """Widths (bits per element) of the (G, P) words entering each tree level."""
    widths, w = [], positions(bits) // leaf
    while w > 2:
        widths.append(w)
        w //= 2
    return widths


def _subsets(items: Sequence[int]) -> list[int]:
    out = [0]
    for i in items:
        out += [s | (1 << i) for s in out]
    return out


def leaf_terms(leaf: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The (party-0 monomial, party-1 monomial) products whose XOR is a block's G and P
    (monomials as bit masks over the block's bits; P's two local terms excluded).

    G = XOR_i x_i y_i prod_{k > i} (x_k ^ y_k), P = prod_k (x_k ^ y_k): expanding each
    (x_k ^ y_k) gives, for every split of the k's, a party-0 and a party-1 monomial."""
    full = (1 << leaf) - 1
    g_terms = []
    for i in range(leaf):
        above = list(range(i + 1, leaf))
        above_mask = sum(1 << k for k in above)
        for u in _subsets(above):
            g_terms.append(((1 << i) | u, (1 << i) | (above_mask ^ u)))
    p_terms = [(u, full ^ u) for u in range(1, full)]
    return g_terms, p_terms


_QUARTER_OF_BIT = (0, 2, 1, 3)  # bit i of a 4-bit block sits in quarter rev2(i)


def leaf_bits(word: np.ndarray, p: int, leaf: int) -> list[np.ndarray]:
    """Bit i of every block (bit-reversed layout), as P/leaf-bit lanes of each element.
    Lanes of 8, 16 or 32 bits are strided views into `word` (no copy)."""
    width = p // leaf
    kind = word.dtype.type
    dtype, mask = word_dtype(width), kind(low_mask(width))
    if width >= 8 and width * leaf == 8 * word.dtype.itemsize:
        # quarter (half) q of a little-endian word is lane q of the word viewed as lanes
        lanes = word.view(dtype).reshape(-1, leaf)
        parts = [lanes[:, q] for q in range(leaf)]
    else:
        parts = [((word >> kind(q * width)) & mask).astype(dtype, copy=False) for q in range(leaf)]
    return parts if leaf == 2 else [parts[_QUARTER_OF_BIT[i]] for i in range(leaf)]


def leaf_monomials(bits_: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """(2^w - 1, M) AND of every nonempty subset of the block's bits (row S - 1 for mask S),
    written into `out` when given. The products read the single-bit rows, contiguous even
    where the bits are strided views."""
    count = (1 << len(bits_)) - 1
    if out is None:
        out = np.empty((count, bits_[0].shape[0]), dtype=bits_[0].dtype)
    for s in range(1, count + 1):
        low = s & -s
        if s == low:
            out[s - 1] = bits_[low.bit_length() - 1]
        else:
            np.bitwise_and(out[(s ^ low) - 1], out[low - 1], out=out[s - 1])
    return out


def word_dtype(width: int) -> np.dtype:
    if width <= 8:
        return np.dtype(np.uint8)
    if width <= 16:
        return np.dtype(np.uint16)
    if width <= 32:
        return np.dtype(np.uint32)
    return U64


def low_mask(width: int) -> int:
    return (1 << width) - 1


@functools.cache  # public p only; called once per slice of the adder's leaf round
def _swap_masks(p: int) -> tuple[tuple[int, int], ...]:
    """(delta, mask) of the delta swaps that reverse the index bits of p positions."""
    levels = p.bit_length() - 1
    swaps = []
    for i in range(levels // 2):
        j = levels - 1 - i
        mask = sum(1 << q for q in range(p) if (q >> i) & 1 and not (q >> j) & 1)
        swaps.append(((1 << j) - (1 << i), mask))
    return tuple(swaps)


def bit_reverse_positions(x: np.ndarray, p: int) -> np.ndarray:
    """Move bit q of each word (uint, p bits wide or more) to position rev(q), rev
    reversing log2(p) index bits."""
    return reverse_positions_in_place(x.copy(), p)


def reverse_positions_in_place(x: np.ndarray, p: int) -> np.ndarray:
    """`bit_reverse_positions` overwriting x (returned)."""
    kind = x.dtype.type
    t = np.empty_like(x)
    for delta, mask in _swap_masks(p):
        d, m = kind(delta), kind(mask)
        np.right_shift(x, d, out=t)
        t ^= x
        t &= m
        x ^= t
        t <<= d
        x ^= t
    return x


def share_words(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(bit bits - 1 of each uint64 share, as uint8; its low bits - 1 bits at the top of
    P positions, bit-reversed: the adder's leaf input, dtype word_dtype(P))."""
    k, p = bits - 1, positions(bits)
    dtype = word_dtype(p)
    kind = dtype.type
    narrow = x.astype(dtype)  # the low 8 itemsize bits; P >= k of them matter
    if k < 8 * dtype.itemsize:
        top = narrow >> kind(k)
        if k < 8 * dtype.itemsize - 1:
            top &= kind(1)
        top = top.astype(np.uint8, copy=False)
    else:
        top = ((x >> U64.type(k)) & U64.type(1)).astype(np.uint8)
    narrow <<= kind(p - k)  # bits k and up fall off the top of a P-bit word ...
    if p < 8 * dtype.itemsize:
        narrow &= kind(low_mask(p))  # ... or are masked off
    return top, reverse_positions_in_place(narrow, p)


# -- dense bit packing (for the wire and the dealer's payload) ---------------------------
_CONTAINER = {2: np.uint32, 4: np.uint16}  # 8 / width bytes viewed as one word


def pack_bits(values: np.ndarray, width: int) -> np.ndarray:
    """Values of `width` bits (any shape, uint dtype) as a dense uint8 string (value i at
    bits width * i onwards, little-endian)."""
    flat = values.reshape(-1)
    if width >= 8:
        return np.ascontiguousarray(flat.astype(word_dtype(width), copy=False)).view(np.uint8)
    if width == 1:
        return np.packbits(flat.astype(np.uint8, copy=False), bitorder="little")
    per = 8 // width
    count = flat.shape[0]
    if count % per or flat.dtype != np.uint8:
        padded = np.zeros(-(-count // per) * per, dtype=np.uint8)
        padded[:count] = flat
        flat = padded
    words = np.ascontiguousarray(flat).view(_CONTAINER[width])  # byte k of a word holds value k
    dtype = words.dtype.type
    out = words & dtype(low_mask(width))
    for k in range(1, per):  # move byte k's low bits to bit k * width
        out |= (words >> dtype(k * (8 - width))) & dtype(low_mask(width) << (k * width))
    return out.astype(np.uint8)


def packed_nbytes(count: int, width: int) -> int:
    if width >= 8:
        return count * word_dtype(width).itemsize
    return -(-count * width // 8)


def unpack_bits(buf: np.ndarray, width: int, count: int, copy: bool = True) -> np.ndarray:
    """Inverse of `pack_bits`: `count` values of dtype word_dtype(width). copy=False: values
    of 8 bits or more are a view of buf (read-only if buf is)."""
    if buf.dtype != np.uint8 or buf.shape != (packed_nbytes(count, width),):
        raise ValueError(f"packed buffer of {buf.shape} {buf.dtype} for {count} x {width} bits")
    if width >= 8:
        values = buf.view(word_dtype(width))
        return values.copy() if copy else values
    if width == 1:
        return np.unpackbits(buf, count=count, bitorder="little")
    per = 8 // width
    dtype = _CONTAINER[width]
    wide = buf.astype(dtype)
    out = wide & dtype(low_mask(width))
    for k in range(1, per):  # bits k * width onwards go to byte k
        out |= (wide & dtype(low_mask(width) << (k * width))) << dtype(k * (8 - width))
    return out.view(np.uint8)[:count]


# -- the final round's truth table ------------------------------------------------------
def final_truth_table(masks: np.ndarray) -> np.ndarray:
    """(M, 8) int64: entry [e, u + 2v + 4w] = DReLU when the opened bits are (u, v, w),
    i.e. f(u ^ alpha, v ^ beta, w ^ gamma) with f(p, g, t) = t ^ (p & g), for the
    dealer's mask bits masks = (alpha, beta, gamma) (3, M). Every row sums to 4 (f has
    four ones among its 8 inputs), so the last entry follows from the other seven."""
    alpha, beta, gamma = (masks[k].astype(np.int64) for k in range(3))
    out = np.empty((masks.shape[1], TABLE), dtype=np.int64)
    for idx in range(TABLE):
        u, v, w = idx & 1, (idx >> 1) & 1, (idx >> 2) & 1
        out[:, idx] = (gamma ^ w) ^ ((alpha ^ u) & (beta ^ v))
    return out
