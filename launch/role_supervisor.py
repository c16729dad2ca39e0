"""Runs one role for `privit launch` on the role's host, so that the whole role can be stopped.

    python -m privit.launch.role_supervisor ROLE_ARGS...   (in the role's run folder)

1. Start `python -m privit.launch.roles ROLE_ARGS` in a new session (its own process group),
   its stdin closed, its stdout and stderr this process's (they go back over SSH), and write
   its pid, which is also its process group id, to `role.pid`.
2. When this process's stdin ends (the launcher closed the channel, or its connection died)
   or on SIGTERM, SIGINT or SIGHUP: SIGTERM the role's process group, SIGKILL it after
   STOP_GRACE_S.
3. Exit with the role's status; if signal N killed it, die by signal N too, so that the
   launcher can tell a kill from a role that stopped on a signal, cleaned up and exited
   128 + N itself (launch/roles.py), which a shell's 128 + N would not.

An SSH server does not reliably signal the command when the client goes away, but it always
closes the command's stdin; this is why the launcher keeps stdin open and never writes to it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType

STOP_GRACE_S = 5.0
PID_FILE = "role.pid"


def _watch_stdin(stop: threading.Event) -> None:
    try:
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except (OSError, ValueError):
        pass
    stop.set()


def _stop_group(child: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        if grace is None:
            return
        try:
            child.wait(grace)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; whatever else it started in its group goes with it
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    child = subprocess.Popen([sys.executable, "-m", "privit.launch.roles", *args],
                             stdin=subprocess.DEVNULL, start_new_session=True)
    Path(PID_FILE).write_text(f"{child.pid}\n")
    threading.Thread(target=_watch_stdin, args=(stop,), daemon=True, name="stdin-watch").start()
    stopped = False
    while True:
        try:
            code = child.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            if stop.is_set() and not stopped:
                stopped = True
                _stop_group(child)
    # os._exit: the stdin watcher may still be blocked in a read, which would stop a normal
    # interpreter shutdown with a fatal error
    sys.stdout.flush()
    sys.stderr.flush()
    if code < 0:
        with contextlib.suppress(OSError, ValueError):  # SIGKILL has no handler to reset
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(128 - code if code < 0 else code)  # a signal that does not end a process


if __name__ == "__main__":
    main()
