"""Role processes forked from `privit run` itself, so that they do not import torch again.

A fresh `python -m privit.launch.roles` spends ~2 s importing torch; three of them on a
2-core machine cost `privit run` ~3.5 s of start-up. Forked children inherit the modules
the coordinator has already imported. Forking is only safe before this process has run
a parallel torch op (libgomp's worker threads do not survive a fork, and a child that
uses OpenMP after one hangs), so the children are forked first, at the very start of the
run (before the coordinator has loaded any input either, so no role inherits another
role's checkpoint or images: each still reads only its own, from its order), and wait on
a pipe for their orders: the coordinator then loads the job, computes
what the roles need (cluster, keys, inputs) and sends each child its command line. A
child whose coordinator dies before sending reads end-of-file and exits.

`PreforkedRoles.start` forks; `send` hands a child its order and returns a `ForkedRole`
with the part of subprocess.Popen's interface the coordinator uses (pid, poll, wait,
kill, returncode). The children run `privit.launch.roles.main` on the order's argument
list, exactly what the exec'd role process runs, with stdin and stdout on /dev/null and
stderr in the order's file, each in its own session (so Ctrl-C reaches only the
coordinator, which kills them), named privit-role-R in `ps -o comm` and `top`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import NoReturn

POLL_S = 0.01


class ForkedRole:
    """A forked child, driven like a subprocess.Popen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"role pid {self.pid}", timeout or 0.0)
            time.sleep(POLL_S)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class PreforkedRoles:
    """Children forked now, each waiting for one order (see the module docstring)."""

    def __init__(self) -> None:
        self._waiting: list[tuple[int, int]] = []  # (pid, write end of its order pipe)

    @staticmethod
    def start(count: int) -> PreforkedRoles:
        sys.stdout.flush()
        sys.stderr.flush()
        roles = PreforkedRoles()
        for _ in range(count):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never returns into the coordinator's code
                os.close(write_fd)
                _child(read_fd, [fd for _, fd in roles._waiting])
            os.close(read_fd)
            roles._waiting.append((pid, write_fd))
        return roles

    def send(self, argv: list[str], stderr_path: Path, env: dict[str, str]) -> ForkedRole:
        """Give the next waiting child its command line; it starts at once."""
        pid, write_fd = self._waiting.pop(0)
        order = json.dumps({"argv": argv, "stderr": str(stderr_path), "env": env}).encode()
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(order)
        return ForkedRole(pid)

    def dismiss(self) -> None:
        """Let every child still waiting exit (end-of-file on its pipe) and reap it."""
        for pid, write_fd in self._waiting:
            os.close(write_fd)
            ForkedRole(pid).wait(timeout=10)
        self._waiting = []


def _name_process(argv: list[str]) -> None:
    """Name this child after its role in `ps -o comm` / `top` (its command line stays the
    coordinator's): privit-role-R, from the order's --role."""
    try:
        role = argv[argv.index("--role") + 1]
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(15, f"privit-role-{role}".encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (ValueError, IndexError, OSError, AttributeError):
        pass  # a cosmetic: never fail a role over its name


def _child(read_fd: int, inherited: list[int]) -> NoReturn:
    code = 1
    try:
        for fd in inherited:  # the other children's pipes: their ends belong to the parent
            os.close(fd)
        os.setsid()
        with os.fdopen(read_fd, "rb") as pipe:
            data = pipe.read()
        if not data:
            os._exit(0)  # dismissed, or the coordinator died before sending an order
        order = json.loads(data)
        err = os.open(order["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(err, 2)
        os.close(err)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        os.environ.update(order["env"])
        _name_process(order["argv"])
        import torch

        torch.set_num_threads(int(order["env"].get("OMP_NUM_THREADS", "1")))
        from privit.launch import roles

        roles.main(order["argv"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - a child must end here, whatever happened
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
