"""What a material file's run leaves on disk, and how privit tells it from a file in use.

A writer holds an exclusive flock on its NAME.partial, a reader a shared one on the file
it verified (kept through the rename to NAME.used), until each closes it. A file holding
a seed whose lock is free was left by a run that was killed (SIGKILL; a SIGTERM is an
error that cleans up, launch/roles.py): `stale_material` names it with how to remove it.
privit does not remove it itself: a free lock does not prove the writer dead on every
network filesystem, and the user should know that a seed was left on disk. `wipe`
overwrites a spent file's seed and empties it (parties/material.py, "Single use").
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

USED_SUFFIX = ".used"
PARTIAL_SUFFIX = ".partial"


def in_use(path: Path) -> bool | None:
    """Whether a live process holds its lock on `path` (None: cannot tell)."""
    try:  # read-write: over NFS flock is an fcntl lock, whose exclusive kind needs it
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return True if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN) else None
    finally:
        os.close(fd)
    return False


def leftover(path: Path, left_by: str) -> str | None:
    """What to tell the user of a seed-holding `path` that no process uses, or None."""
    try:
        if path.is_symlink() or path.stat().st_size == 0 or in_use(path) is True:
            return None  # a link is not ours; an empty mark holds nothing; in use: not left
    except FileNotFoundError:
        return None
    return (f"{path} was left by {left_by}, but it still holds a party's seed: "
            f"remove it (rm {path})")


def stale_material(path: str | Path) -> str | None:
    """One line on a seed-holding file that a dead run left next to material `path` (its
    NAME.partial from a killed preprocess, its NAME.used from a killed online run), or
    on a NAME.partial that a live preprocess writes now; None if there is neither."""
    path = Path(path)
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    if partial.exists() or partial.is_symlink():
        if in_use(partial) is True:
            return f"{partial} is being written by a preprocess that runs now; use another place"
        return leftover(partial, "a preprocess that was killed before it finished") or \
            f"{partial} exists; remove it (rm {partial})"
    return leftover(path.with_name(path.name + USED_SUFFIX),
                     "an online run that was killed; its material is spent")


def same_file(path: Path, fd: int) -> bool:
    """Whether `path` (not followed if a link) is the file open as `fd`."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    ours = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino)


def wipe(path: Path, ours: int, head_bytes: int) -> None:
    """Overwrite the first `head_bytes` of `path` (a material file's magic and header
    record, which holds the seed) with zeros, sync, and empty the file, if `path` is
    still the file open as `ours`; a missing or replaced file is left alone. A file that
    cannot be opened for writing raises OSError: it still holds the seed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        mine, theirs = os.fstat(fd), os.fstat(ours)
        if (mine.st_dev, mine.st_ino) != (theirs.st_dev, theirs.st_ino):
            return
        os.pwrite(fd, bytes(min(head_bytes, os.fstat(fd).st_size)), 0)
        os.fsync(fd)
        os.ftruncate(fd, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
