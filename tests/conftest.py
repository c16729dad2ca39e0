"""Shared fixtures: after every test, no child process may still be running."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from mp_harness import kill_children, live_children

# A child that has just been told to stop may need a moment to exit.
EXIT_GRACE_S = 2.0


@pytest.fixture(autouse=True)
def no_child_survives() -> Iterator[None]:
    """Fail a test whose multiprocessing children or tracked Popens outlive it.

    Survivors are killed so that one leaking test does not take the next ones down too.
    """
    yield
    deadline = time.monotonic() + EXIT_GRACE_S
    alive = live_children()
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = live_children()
    if alive:
        kill_children()
        pytest.fail(f"child processes outlived the test (now killed): {alive}")
