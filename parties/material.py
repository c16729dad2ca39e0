"""Dealer material on disk: a party's offline phase written ahead of its online run.

`privit preprocess` runs the dealer and the parties' offline phase only; each party writes
exactly what it received from the dealer (its dealer seed and, chunk by chunk, the plan
with its correction payloads) to a material file. A later online run reads the file in
place of the dealer (`MaterialFile` is a `ChunkSource`, parties/offline.py): the same
chunks expanded the same way, so the same online bytes, rounds and results.

File layout (nothing is ever unpickled; every field is checked before use):

    MAGIC (8 bytes)
    u32 n + n bytes    header, msgpack: format, material_id (hex), party, n_parties,
                       config_hash, config (JSON text of `material_fields`), public_hash,
                       seed (16 bytes: the party's dealer seed)
    per chunk:
    u32 n + n bytes    chunk header, msgpack: r0, end, plan [[kind, params, count], ...],
                       arrays [[dtype code, shape], ...]
    the raw little-endian bytes of each array, in order
    trailer:
    u32 n + n bytes    msgpack: chunks, requests, payload_bytes, sha256 (hex of every byte
                       before the trailer)
    u32 n, END (4 bytes)  the trailer's length again, so it is found from the file's end

Checked when opened, before the run uses any of it: magic, trailer and digest (a
truncated or corrupt file is refused), format, party id, config (field by field, as the
handshake compares them, less the session id: the online run is another session).

Single use. A party claims its file (`claim`) just before its online phase by renaming it
to NAME.used, atomically: of two runs given one file only one gets it, and a later run
finds the mark and is refused. The rename is by name, the reading by the descriptor that
was verified, so the claim then checks that NAME.used is that same file (device and
inode) and refuses otherwise (another file put at NAME in between). After the run, failed
or not, the marked file's header record (it holds the seed) is overwritten with zeros and
synced, then the file is emptied; the name stays as the mark. Overwriting in place reaches
the old blocks on ext4 or xfs, not on a copy-on-write filesystem or an SSD's remapped
blocks: keep material on an encrypted disk. Both parties' files of one preprocess run
carry one material id (`share_material_id`); an online run's parties compare them at
their barrier (parties/lifecycle.py), before the claim: files of two different preprocess
runs are refused. The mark guards against a second run on the same file; a copy made
before the first run is the operator's to avoid (nothing local can tell it from the
original), and its use with a fresh peer file is refused by the id check.

Leftovers. A writer removes its NAME.partial on any error, and a role turns SIGTERM and
SIGHUP into an error (launch/roles.py), so a SIGKILL (or a power loss) leaves one, and so
can a stop that lands in a narrow window (inside the rename that finishes the file, or a
stop's clean-up cut short by its 5 s bound); a run killed after its claim leaves a
non-empty NAME.used. Both hold the party's seed:
parties/material_leftovers.py tells them from files in use, and a later preprocess into
the same place refuses with one line naming the file and how to remove it.

Why reuse breaks security: the material is one-time pads. A Beaver triple (a, b, c) masks
the opened x - a and y - b; opened twice with the same a, the differences of two inputs'
openings give x - x' in the clear, and with one known input the other. The same holds for
truncation pairs, comparison masks and FSS keys: each masks one value, once.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
import numpy as np

from privit.parties.channel import FramedChannel, PeerError
from privit.parties.config import RunConfig, flat_fields
from privit.parties.material_leftovers import (
    PARTIAL_SUFFIX,
    USED_SUFFIX,
    leftover,
    same_file,
    stale_material,
    wipe,
)
from privit.parties.offline import Chunk, ChunkSource, split_chunk
from privit.parties.prg import SEED_BYTES
from privit.parties.session import CorrelationRegistry
from privit.parties.wire import MAX_NDIM, WIRE_DTYPES

MAGIC = b"PRIVMAT\n"
END = b"PMND"
FORMAT = 1
MAX_RECORD_BYTES = 1 << 24  # a chunk header lists at most a few thousand arrays
_U32 = struct.Struct("<I")
HEADER_FIELDS = {"format": int, "material_id": str, "party": int, "n_parties": int,
                 "config_hash": str, "config": str, "public_hash": str, "seed": bytes}
TRAILER_FIELDS = {"chunks": int, "requests": int, "payload_bytes": int, "sha256": str}
# What link(2) answers on a filesystem without hard links: EPERM (vfat, exfat on Linux),
# ENOTSUP / EOPNOTSUPP (some FUSE and network filesystems; one value on Linux). Not EXDEV:
# NAME.partial and NAME share a folder, and a rename could not cross devices either.
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP})


class MaterialError(ValueError):
    """A material file that cannot be used: missing, used, truncated, corrupt, or another
    party's or another configuration's. The text names the file and the problem."""


def material_fields(cfg: RunConfig) -> dict[str, Any]:
    """What material depends on: the handshake's fields less the session id."""
    fields = cfg.hash_fields()
    fields.pop("session_id")
    normalised: dict[str, Any] = json.loads(json.dumps(fields, sort_keys=True, default=str))
    return normalised


def material_hash(cfg: RunConfig) -> str:
    blob = json.dumps(material_fields(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def public_hash(owner: dict[str, Any] | None, client: dict[str, Any] | None) -> str:
    """The hash of what the parties announced (party 0's architecture, party 1's batch):
    the plan depends on them as much as on the config."""
    blob = json.dumps({"owner": owner, "client": client}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def new_material_id() -> str:
    return os.urandom(16).hex()


def _record(obj: dict[str, Any]) -> bytes:
    blob = msgpack.packb(obj, use_bin_type=True)
    return bytes(_U32.pack(len(blob))) + blob


@dataclass(frozen=True)
class MaterialHeader:
    material_id: str
    party: int
    n_parties: int
    config_hash: str
    config: str
    public_hash: str
    seed: bytes


class MaterialWriter:
    """Writes one party's material file: the header now, chunks as they come, the trailer
    at `finish`. It writes NAME.partial (mode 0600: it holds the party's seed, locked while
    written) and links it to NAME only when complete (never over a file there), so a crash
    leaves no file that looks usable; `discard` removes it on any failure. Only where the
    filesystem has no hard links (NO_HARD_LINKS) is it renamed instead; any other failure to
    link is a one-line MaterialError."""

    def __init__(self, path: str | Path, header: MaterialHeader) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise MaterialError(f"{self.path} exists; refusing to overwrite material")
        stale = stale_material(self.path)
        if stale:
            raise MaterialError(stale)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        try:  # exclusive: two writers never interleave, a planted link is not followed
            fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise MaterialError(stale_material(self.path) or f"{self.partial} exists") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held until closed: in use, not left over
        except OSError as exc:  # e.g. a network filesystem without locks
            os.close(fd)
            os.unlink(self.partial)
            raise MaterialError(f"cannot lock {self.partial}: {exc.strerror}; write the "
                                f"material to a local filesystem") from None
        self._fh: BinaryIO = os.fdopen(fd, "wb")
        self._finished: tuple[int, int] | None = None  # (device, inode) once named
        self._digest = hashlib.sha256()
        self.chunks = self.requests = self.payload_bytes = 0
        self._write(MAGIC + _record({"format": FORMAT, **header.__dict__}))

    def _write(self, data: bytes | memoryview) -> None:
        self._fh.write(data)
        self._digest.update(data)

    def write_chunk(self, chunk: Chunk) -> None:
        arrays = [np.ascontiguousarray(a) for _, _, payload in chunk.entries for a in payload]
        for a in arrays:
            if a.dtype.str not in WIRE_DTYPES:
                raise MaterialError(f"cannot store a {a.dtype} array in {self.path}")
        self._write(_record({
            "r0": chunk.r0, "end": chunk.end,
            "plan": [[kind, list(params), len(payload)] for kind, params, payload in chunk.entries],
            "arrays": [[a.dtype.str, list(a.shape)] for a in arrays]}))
        for a in arrays:
            self._write(a.reshape(-1).view(np.uint8).data)
        self.chunks += 1
        self.requests += len(chunk.entries)
        self.payload_bytes += chunk.nbytes

    def finish(self) -> int:
        """Write the trailer, sync, and give the file its name; returns its size."""
        trailer = _record({"chunks": self.chunks, "requests": self.requests,
                           "payload_bytes": self.payload_bytes,
                           "sha256": self._digest.hexdigest()})
        self._fh.write(trailer + _U32.pack(len(trailer) - _U32.size) + END)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        size = os.fstat(self._fh.fileno()).st_size
        appeared = (f"{self.path} appeared while this preprocess wrote it; refusing to "
                    f"overwrite material")
        try:  # a link never replaces a file that appeared at NAME meanwhile (a rename would)
            os.link(self.partial, self.path)
        except FileExistsError:
            self.discard()
            raise MaterialError(appeared) from None
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:  # a full disk, a quota, an I/O error, ...
                self.discard()
                raise MaterialError(f"cannot name {self.path}: {exc.strerror}") from None
            # A filesystem without hard links: a rename, which would replace a file at NAME,
            # so one that is there now is refused (one that appears in between is not).
            if os.path.lexists(self.path):
                self.discard()
                raise MaterialError(appeared) from None
            try:
                os.replace(self.partial, self.path)
            except OSError as exc2:
                self.discard()
                raise MaterialError(f"cannot name {self.path}: {exc2.strerror}") from None
        self.partial.unlink(missing_ok=True)
        st = os.fstat(self._fh.fileno())
        self._finished = (st.st_dev, st.st_ino)
        self._fh.close()
        return size

    def remove_finished(self) -> None:
        """Remove the finished file again, if NAME is still the file this writer wrote: the
        run failed after it was whole, and it is of no use without the peers' files."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return
        if self._finished == (st.st_dev, st.st_ino):
            self.path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Drop an unfinished file (the run failed or was stopped); the seed goes with it."""
        self.partial.unlink(missing_ok=True)  # before the close ends the lock
        self._fh.close()


def _fields(obj: Any, spec: dict[str, type], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or set(obj) != set(spec):
        raise ValueError(f"{what} has fields {sorted(obj) if isinstance(obj, dict) else obj!r:.80}")
    for name, kind in spec.items():
        if not isinstance(obj[name], kind) or isinstance(obj[name], bool):
            raise ValueError(f"{what} field {name!r} is not {kind.__name__}")
    return obj


def _unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=True, max_bin_len=len(blob),
                           max_str_len=len(blob), max_array_len=1 << 16, max_map_len=64)


def check_unused(path: str | Path) -> None:
    """Refuse at once a material file that is missing or marked used (a quick check, e.g.
    before starting the roles; `MaterialFile.open` verifies the contents)."""
    path = Path(path)
    if path.is_file():
        return
    used = path.with_name(path.name + USED_SUFFIX)
    if used.exists():
        left = leftover(used, "an online run that was killed; its material is spent")
        raise MaterialError(f"material {path} was already used ({used} marks it); "
                            f"material is single-use: run `privit preprocess` again"
                            + (f"; {left}" if left else ""))
    raise MaterialError(f"material {path}: no such file")


class MaterialFile:
    """A party's material file, checked on open (module docstring), read chunk by chunk
    (a `ChunkSource`). Open it with `MaterialFile.open`; `claim` before the online phase."""

    def __init__(self, path: Path, fh: io.BufferedReader, header: MaterialHeader,
                 trailer: dict[str, Any], body_end: int, registry: CorrelationRegistry) -> None:
        self.path, self._fh, self.header, self.trailer = path, fh, header, trailer
        self.body_end, self.registry = body_end, registry
        self.header_bytes = fh.tell()  # `_verify` read the header last: the seed is before
        self.used_path: Path | None = None
        self.file_bytes = path.stat().st_size
        self._planned = 0

    @staticmethod
    def open(path: str | Path, registry: CorrelationRegistry) -> MaterialFile:
        """Open and verify `path` (magic, trailer, digest, header fields)."""
        path = Path(path)
        if path.suffix in (".used", ".partial"):
            # a claimed file keeps its contents while (or if killed while) a run uses it;
            # a partial one was never finished: neither is material to use
            state = "used up" if path.suffix == ".used" else "unfinished"
            raise MaterialError(f"material {path} is {state}; run privit preprocess again")
        try:
            fh = open(path, "rb")  # noqa: SIM115 - kept open for the run, closed by close()
        except FileNotFoundError:
            check_unused(path)
            raise
        except OSError as exc:
            raise MaterialError(f"material {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)  # in use (`stale_material`)
        except OSError:
            pass  # a writer still holds it, or no locks here: the checks below decide
        try:
            header, trailer, body_end = _verify(fh)
        except (ValueError, struct.error, msgpack.UnpackException) as exc:
            fh.close()
            raise MaterialError(f"material {path} is not a valid material file: {exc}") from None
        return MaterialFile(path, fh, header, trailer, body_end, registry)

    def check(self, cfg: RunConfig, party_id: int) -> None:
        """Refuse another party's file or another configuration's, naming what differs."""
        h = self.header
        if h.party != party_id:
            raise MaterialError(f"material {self.path} is party {h.party}'s, not "
                                f"party {party_id}'s")
        if h.n_parties != cfg.n_parties:
            raise MaterialError(f"material {self.path} is for {h.n_parties} parties, "
                                f"this run has {cfg.n_parties}")
        if h.config_hash != material_hash(cfg):
            ours = flat_fields(material_fields(cfg))
            try:
                theirs = flat_fields(json.loads(h.config))
            except ValueError:
                theirs = {}
            diffs = [f"{k} is {theirs.get(k, 'absent')!r} there, {ours.get(k, 'absent')!r} here"
                     for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
            raise MaterialError(f"material {self.path} was preprocessed for another config: "
                                f"{'; '.join(diffs[:4]) or 'hash differs'}")

    def check_public(self, owner: dict[str, Any] | None, client: dict[str, Any] | None) -> None:
        if public_hash(owner, client) != self.header.public_hash:
            raise MaterialError(f"material {self.path} was preprocessed for another model "
                                f"architecture or batch than the parties announced now")

    def claim(self) -> None:
        """Mark the file used (rename to NAME.used) before any of it is used; refused if
        another run took it first."""
        used = self.path.with_name(self.path.name + USED_SUFFIX)
        try:
            os.rename(self.path, used)
        except FileNotFoundError:
            raise MaterialError(f"material {self.path} was already used by another run; "
                                f"material is single-use") from None
        self.used_path = used  # from here on, close() wipes it (if it is still ours)
        if not same_file(used, self._fh.fileno()):
            self.used_path = None
            # Another file was put at NAME after ours was verified: give it its name back
            # (a link never replaces one that appeared since) and use neither.
            try:
                os.link(used, self.path)
                os.unlink(used)
            except OSError:
                pass
            raise MaterialError(f"material {self.path} was replaced after it was verified; "
                                f"refusing it (is another preprocess writing into the same place?)")

    def read_chunk(self) -> Chunk:
        try:
            return self._read_chunk()
        except (ValueError, struct.error, msgpack.UnpackException, PeerError) as exc:
            raise MaterialError(f"material {self.path}: bad chunk at request "
                                f"{self._planned}: {exc}") from None

    def _read_chunk(self) -> Chunk:
        if self._fh.tell() >= self.body_end:
            raise ValueError("the file ends before the plan does")
        meta = _unpack(_read_record(self._fh, self.body_end))
        specs = meta.get("arrays") if isinstance(meta, dict) else None
        if not isinstance(specs, list):
            raise ValueError("no array list")
        arrays = [_read_array(self._fh, spec, self.body_end) for spec in specs]
        chunk = split_chunk({k: meta.get(k) for k in ("r0", "plan", "end")}, arrays,
                            self.registry, self._planned)
        self._planned += len(chunk.entries)
        if chunk.end and (self._fh.tell() != self.body_end
                          or self._planned != self.trailer["requests"]):
            raise ValueError("the plan ends before the file does")
        return chunk

    def close(self) -> None:
        """Close the file; once claimed, wipe its header (the seed) and empty it (the
        material is spent, the mark stays). Only the file this run claimed is touched."""
        try:
            if self.used_path is not None:
                try:
                    wipe(self.used_path, self._fh.fileno(), self.header_bytes)
                except OSError as exc:
                    raise MaterialError(
                        f"cannot wipe {self.used_path} ({exc.strerror}): it still holds a "
                        f"party's seed; remove it (rm {self.used_path})") from None
        finally:
            self._fh.close()


def _read_record(fh: io.BufferedReader, limit: int) -> bytes:
    (n,) = _U32.unpack(_read_exact(fh, _U32.size, limit))
    if n > MAX_RECORD_BYTES:
        raise ValueError(f"a record of {n} bytes")
    return _read_exact(fh, n, limit)


def _read_exact(fh: io.BufferedReader, n: int, limit: int) -> bytes:
    if fh.tell() + n > limit:
        raise ValueError("a record runs past the end of the material")
    data = fh.read(n)
    if len(data) != n:
        raise ValueError("the file is truncated")
    return data


def _read_array(fh: io.BufferedReader, spec: Any, limit: int) -> np.ndarray:
    if not (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], str)
            and isinstance(spec[1], list) and len(spec[1]) <= MAX_NDIM
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in spec[1])):
        raise ValueError(f"bad array spec {spec!r:.60}")
    dtype = WIRE_DTYPES.get(spec[0])
    if dtype is None:
        raise ValueError(f"dtype {spec[0]!r:.20} is not allowed")
    count = 1
    for d in spec[1]:
        count *= d
    nbytes = count * dtype.itemsize
    if fh.tell() + nbytes > limit:
        raise ValueError("an array runs past the end of the material")
    buf = bytearray(nbytes)  # ours and writable, read into without a copy
    if fh.readinto(buf) != nbytes:
        raise ValueError("the file is truncated")
    return np.frombuffer(buf, dtype=dtype).reshape(spec[1])


def _verify(fh: io.BufferedReader) -> tuple[MaterialHeader, dict[str, Any], int]:
    size = os.fstat(fh.fileno()).st_size
    if size < len(MAGIC) + 2 * _U32.size + len(END) or fh.read(len(MAGIC)) != MAGIC:
        raise ValueError("it does not start with the material magic")
    fh.seek(size - _U32.size - len(END))
    (n,), end = _U32.unpack(fh.read(_U32.size)), fh.read(len(END))
    if end != END:
        raise ValueError("it has no end marker (truncated?)")
    body_end = size - len(END) - 2 * _U32.size - n
    if body_end < len(MAGIC) or n > MAX_RECORD_BYTES:
        raise ValueError("its trailer is malformed (truncated?)")
    fh.seek(body_end)
    trailer = _fields(_unpack(_read_record(fh, size)), TRAILER_FIELDS, "trailer")
    fh.seek(0)
    digest = hashlib.sha256()
    left = body_end
    while left:
        block = fh.read(min(left, 1 << 20))
        if not block:
            raise ValueError("the file is truncated")
        digest.update(block)
        left -= len(block)
    if digest.hexdigest() != trailer["sha256"]:
        raise ValueError("its digest does not match (corrupt or altered)")
    fh.seek(len(MAGIC))
    header = _fields(_unpack(_read_record(fh, body_end)), HEADER_FIELDS, "header")
    if header["format"] != FORMAT:
        raise ValueError(f"format {header['format']}, this privit reads {FORMAT}")
    if len(header["seed"]) != SEED_BYTES:
        raise ValueError("its seed has the wrong length")
    header.pop("format")
    return MaterialHeader(**header), trailer, body_end




def share_material_id(channel: FramedChannel, cfg: RunConfig, party_id: int) -> str:
    """A preprocess run's parties agree on the id of its material: party 0 draws it and
    tells the others (one setup message). An online run compares the ids at its barrier
    (parties/lifecycle.py), so that files of two preprocess runs are refused."""
    if party_id == 0:
        material_id = new_material_id()
        for p in range(1, cfg.n_parties):
            channel.send(p, "data", "material_id", meta={"id": material_id})
        return material_id
    got = (channel.recv(0, "data", "material_id").meta or {}).get("id")
    if not (isinstance(got, str) and len(got) == 32):
        raise PeerError(f"party 0 sent a malformed material id {got!r:.40}")
    return got


def record_material(source: ChunkSource, writer: MaterialWriter) -> None:
    """Copy every chunk of `source` (the dealer's) into `writer` until the plan ends."""
    while True:
        chunk = source.read_chunk()
        writer.write_chunk(chunk)
        if chunk.end:
            return
