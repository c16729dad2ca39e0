"""Run functions in separate OS processes and collect what each returned or raised.

Every child is started with the "spawn" context (a fresh interpreter: no inherited
sockets, threads or locks). A child puts exactly one (index, ok, value) tuple on a
queue: its return value, or "ExceptionType: message". The parent drains the queue
before joining (a child that has put a large object cannot exit until it is read),
joins with a timeout, and kills any survivor and fails loudly. Children started here
and `subprocess.Popen` objects registered with `track_popen` are what the conftest
fixture checks after each test.
"""
from __future__ import annotations

import multiprocessing as mp
import queue as queue_mod
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privit.launch.progress import is_status_line

SPAWN = mp.get_context("spawn")
_POPENS: list[subprocess.Popen[Any]] = []


@dataclass
class Outcome:
    """What one child did: ok and its return value, or not ok and an error string."""

    index: int
    ok: bool
    value: Any
    exitcode: int | None

    @property
    def error(self) -> str:
        return "" if self.ok else str(self.value)


def _child(index: int, fn: Callable[..., Any], args: tuple[Any, ...], out: Any) -> None:
    try:
        value = fn(*args)
    except BaseException as exc:  # everything goes back to the parent as text
        out.put((index, False, f"{type(exc).__name__}: {exc}"))
        return
    out.put((index, True, value))


def run_processes(
    calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]],
    timeout_s: float = 30.0,
) -> list[Outcome]:
    """Run each (fn, args) in its own process; outcomes in the order of `calls`.

    A child that dies without reporting (killed, os._exit) gets ok=False and its exit
    code. Raises AssertionError, after killing them, if children outlive `timeout_s`.
    """
    out = SPAWN.Queue()
    procs = [
        SPAWN.Process(target=_child, args=(i, fn, args, out), name=f"mp-harness-{i}", daemon=True)
        for i, (fn, args) in enumerate(calls)
    ]
    for p in procs:
        p.start()
    results: dict[int, tuple[bool, Any]] = {}
    deadline = time.monotonic() + timeout_s
    all_dead_since: float | None = None
    while len(results) < len(procs) and time.monotonic() < deadline:
        try:
            index, ok, value = out.get(timeout=0.1)
        except queue_mod.Empty:
            pending = [p for i, p in enumerate(procs) if i not in results]
            if any(p.is_alive() for p in pending):
                all_dead_since = None
            elif all_dead_since is None:
                all_dead_since = time.monotonic()
            elif time.monotonic() - all_dead_since > 1.0:
                break  # those that did not report died silently; their data cannot come
            continue
        results[index] = (ok, value)
    survivors = []
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            survivors.append(p.name)
            p.kill()
            p.join(5.0)
    out.close()
    out.join_thread()
    if survivors:
        raise AssertionError(f"processes {survivors} still ran after {timeout_s:g} s; killed them")
    outcomes = []
    for i, p in enumerate(procs):
        if i in results:
            ok, value = results[i]
            outcomes.append(Outcome(i, ok, value, p.exitcode))
        else:
            outcomes.append(Outcome(i, False, f"no result (exit code {p.exitcode})", p.exitcode))
    return outcomes


def expect_ok(outcomes: Sequence[Outcome]) -> list[Any]:
    """The values of outcomes that must all be ok; fails with every error otherwise."""
    bad = [f"child {o.index}: {o.value}" for o in outcomes if not o.ok]
    assert not bad, "; ".join(bad)
    return [o.value for o in outcomes]


def track_popen(proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
    """Register a subprocess so that the leak check after each test sees it."""
    _POPENS.append(proc)
    return proc


def live_children() -> list[str]:
    """Descriptions of child processes still running (multiprocessing and tracked Popens)."""
    alive = [f"{p.name} (pid {p.pid})" for p in mp.active_children()]
    alive += [f"{str(p.args)[:80]} (pid {p.pid})" for p in _POPENS if p.poll() is None]
    _POPENS[:] = [p for p in _POPENS if p.poll() is None]
    return alive


def kill_children() -> None:
    """Kill every child `live_children` would report (cleanup after a failed check)."""
    for p in mp.active_children():
        p.kill()
        p.join(5.0)
    for proc in _POPENS:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5.0)


def finish_popens(procs: dict[str, subprocess.Popen[str]],
                  timeout: float = 60) -> dict[str, tuple[int, str]]:
    """Wait for every process (all within `timeout` seconds together); return each one's
    (exit code, stderr). Whatever is still running then is killed and reaped."""
    out = {}
    deadline = time.monotonic() + timeout
    try:
        for name, p in procs.items():
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            out[name] = (p.returncode, err)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    return out




def error_lines(stderr: str) -> list[str]:
    """A role's stderr without its status lines (`party 0: handshake done (0.31 s)`, one per
    finished phase, launch/progress.py): what it said about a failure."""
    return [line for line in stderr.strip().splitlines() if not is_status_line(line)]


@dataclass(frozen=True)
class LiveProcess:
    """A process of this machine as /proc shows it: its command line, state, environment."""

    pid: int
    cmd: str
    state: str
    environ: list[bytes]


def live_processes() -> Iterator[LiveProcess]:
    """Every process /proc lists that is not a zombie (those that vanish meanwhile skipped)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if state != "Z":
            yield LiveProcess(int(entry.name), cmd, state, environ)
