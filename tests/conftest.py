"""Shared fixtures: after every test, no child process may still be running; kernel
calibrations go to a folder of this session, not the user's ~/.cache."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mp_harness import kill_children, live_children

# A child that has just been told to stop may need a moment to exit: a role stopped by
# SIGTERM cleans up (its material file) for up to launch/roles.STOP_GRACE_S = 5 s.
EXIT_GRACE_S = 6.0

# Every process this test session starts, at any depth, inherits this variable, so a
# grandchild orphaned by a killed coordinator (reparented to init) is still found.
MARKER = f"PRIVIT_TEST_SESSION={os.getpid()}".encode()
os.environ["PRIVIT_TEST_SESSION"] = str(os.getpid())


def marked_descendants() -> list[int]:
    """Live processes (not zombies) other than this one whose environment has MARKER."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if MARKER not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmd = (entry / "cmdline").read_bytes()
            if b"resource_tracker" in cmd or b"forkserver" in cmd:
                continue  # multiprocessing's own helpers live as long as this session
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except OSError:
            continue
        found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_child_survives() -> Iterator[None]:
    """Fail a test whose multiprocessing children or tracked Popens outlive it.

    Survivors are killed so that one leaking test does not take the next ones down too.
    """
    yield
    deadline = time.monotonic() + EXIT_GRACE_S
    alive = live_children()
    stray = marked_descendants()
    while (alive or stray) and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = live_children()
        stray = marked_descendants()
    if alive or stray:
        kill_children()
        for pid in stray:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"processes outlived the test (now killed): {alive or ''} {stray or ''}")


@pytest.fixture(scope="session", autouse=True)
def session_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """XDG_CACHE_HOME for this session and every process it starts: the matmul
    calibration (protocols/matmul_calibration.py) is measured once here and never read from,
    or written to, the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        mp.delenv("PRIVIT_MATMUL", raising=False)
        yield
