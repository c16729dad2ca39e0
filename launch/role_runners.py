"""One role of `privit launch`, run as a local process or over SSH (asyncssh).

Both runners do the same five things, each an `async` method:
1. `prepare`: make a private run folder on the role's host (mode 0700) and write the role's
   files into it: config.json and cluster.json (public), and the role's own secret key when
   the launcher holds it (mode 0600; the only secret that ever travels, and only to its role);
2. `start`: run `python -m privit.launch.role_supervisor ROLE_ARGS` in that folder, stdin
   kept open (launch/role_supervisor.py stops the role when it closes);
3. `wait`: stream the role's stdout and stderr, each line prefixed `[NAME] `, and return
   its exit status, -N if signal N killed it (the supervisor dies by the signal that killed
   the role; a role that stopped on signal N itself exits 128 + N after its clean-up);
4. `stop`: close its stdin, then kill its process group if it is still there after
   STOP_WAIT_S; a no-op once the role has exited;
5. `fetch_report` and `cleanup`: read report.json back, remove the run folder. Over SSH, a
   role whose exit status never came back (its link was lost) may still run: `cleanup`
   first stops it by the pids its start recorded (`_KILL_ROLE`: SIGTERM to the supervisor,
   which stops the role as when its stdin ends, then SIGKILL to both after STOP_WAIT_S),
   then removes the folder, on a fresh connection if the role's own one was lost.
Every failure is a `LaunchError`, one line that names the role (and, over SSH, its host
and what the link did: `party 1 on user@host:22: ssh connection lost: ...`, or `ssh
session refused`, `ssh disconnected`), so `privit launch` can stop every role and say so.
"""
from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import AsyncIterable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

with warnings.catch_warnings():
    # asyncssh's imports of DSA, ARC4, TripleDES warn with newer cryptography (privit uses none)
    warnings.simplefilter("ignore")
    import asyncssh

from privit.launch.launch_plan import RoleTarget, SshTarget
from privit.launch.progress import is_status_line
from privit.launch.role_supervisor import PID_FILE, STOP_GRACE_S

STOP_WAIT_S = STOP_GRACE_S + 3.0
REPORT_FILE = "report.json"
SUPERVISOR = ("-m", "privit.launch.role_supervisor")
SUPERVISOR_PID_FILE = "supervisor.pid"  # written by the shell that execs the supervisor
# Run in the role's folder on its host: stop a role whose link was lost (sh; no pid file,
# nothing to stop). The supervisor stops the role on SIGTERM with its own grace period.
_KILL_ROLE = (f"s=$(cat {SUPERVISOR_PID_FILE} 2>/dev/null); "
              f"[ -n \"$s\" ] && kill -TERM \"$s\" 2>/dev/null; i=0; "
              f"while [ -n \"$s\" ] && kill -0 \"$s\" 2>/dev/null && [ $i -lt {int(STOP_WAIT_S * 10)} ]; "
              f"do sleep 0.1; i=$((i+1)); done; "
              f"r=$(cat {PID_FILE} 2>/dev/null); [ -n \"$r\" ] && kill -KILL -- \"-$r\" 2>/dev/null; "
              f"[ -n \"$s\" ] && kill -KILL \"$s\" 2>/dev/null; true")


class RoleRunner(Protocol):
    target: RoleTarget

    async def prepare(self, files: dict[str, str], secret_files: dict[str, str]) -> str: ...
    async def start(self, role_args: Sequence[str]) -> None: ...
    async def wait(self) -> int: ...
    async def stop(self) -> None: ...
    async def fetch_report(self) -> str: ...
    async def cleanup(self) -> None: ...


class LaunchError(RuntimeError):
    """A role that could not be prepared, started or read back; one line."""


async def _stream(lines: AsyncIterable[str | bytes], prefix: str, out: IO[str],
                  last: dict[str, str] | None = None) -> None:
    """Copy lines to `out` with `prefix`; remember the last non-empty one that is not a
    status line in last[prefix] (on stderr: the role's one-line error)."""
    async for line in lines:
        text = (line.decode(errors="replace") if isinstance(line, bytes) else line).rstrip()
        if text and last is not None and not is_status_line(text):
            last[prefix] = text
        out.write(f"{prefix}{text}\n")
        out.flush()


def _start_pumps(stdout: AsyncIterable[str | bytes], stderr: AsyncIterable[str | bytes],
           name: str, last: dict[str, str]) -> list[asyncio.Task[None]]:
    prefix = f"[{name}] "
    return [asyncio.create_task(_stream(stdout, prefix, sys.stdout)),
            asyncio.create_task(_stream(stderr, prefix, sys.stderr, last))]


class LocalRole:
    """A role on this machine: a child process in its own session."""

    def __init__(self, target: RoleTarget, last_lines: dict[str, str]) -> None:
        self.target = target
        self.folder: Path | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._last_lines = last_lines

    async def prepare(self, files: dict[str, str], secret_files: dict[str, str]) -> str:
        self.folder = Path(tempfile.mkdtemp(prefix="privit-launch-"))  # mode 0700
        for name, text in {**files, **secret_files}.items():
            fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
        return str(self.folder)

    async def start(self, role_args: Sequence[str]) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *SUPERVISOR, *role_args, cwd=self.folder, start_new_session=True,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._pumps = _start_pumps(self.proc.stdout, self.proc.stderr, self.target.name, self._last_lines)

    async def wait(self) -> int:
        assert self.proc is not None
        await asyncio.gather(*self._pumps)
        return await self.proc.wait()  # -N for signal N

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), STOP_WAIT_S)
        except TimeoutError:
            for pid in (proc.pid, self._role_pid()):
                if pid:
                    _kill_group(pid)
            await proc.wait()

    def _role_pid(self) -> int | None:
        try:
            return int((self.folder / PID_FILE).read_text()) if self.folder else None
        except (OSError, ValueError):
            return None

    async def fetch_report(self) -> str:
        assert self.folder is not None
        try:
            return (self.folder / REPORT_FILE).read_text()
        except OSError as exc:
            raise LaunchError(f"{self.target.name} wrote no report: {exc.strerror}") from None

    async def cleanup(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class SshRole:
    """A role on another host, over one SSH connection of its own."""

    def __init__(self, target: RoleTarget, ssh: SshTarget, last_lines: dict[str, str]) -> None:
        self.target = target
        self.ssh = ssh
        self.conn: asyncssh.SSHClientConnection | None = None
        self.folder: str | None = None
        self.proc: asyncssh.SSHClientProcess[str] | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._last_lines = last_lines
        self._exited = False
        self._started = False

    async def _connect(self) -> asyncssh.SSHClientConnection:
        kwargs: dict[str, Any] = {"port": self.ssh.port}
        if self.ssh.user:
            kwargs["username"] = self.ssh.user
        if self.ssh.client_key:
            kwargs["client_keys"] = [self.ssh.client_key]
        if self.ssh.known_hosts:
            kwargs["known_hosts"] = self.ssh.known_hosts  # never None: host keys are checked
        try:
            return await asyncssh.connect(self.ssh.host, **kwargs)
        except (OSError, asyncssh.Error) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
            raise LaunchError(f"{self.target.name}: cannot connect to {self.ssh}: {reason}") from None

    def _ssh_failed(self, exc: BaseException) -> LaunchError:
        """One line for an SSH failure of this role's link, naming the role and the host."""
        if isinstance(exc, asyncssh.ChannelOpenError):
            what = "ssh session refused"
        elif isinstance(exc, asyncssh.ConnectionLost):
            what = "ssh connection lost"
        elif isinstance(exc, asyncssh.DisconnectError):
            what = "ssh disconnected"
        else:
            what = "ssh failed"
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        return LaunchError(f"{self.target.name} on {self.ssh}: {what}: {' '.join(str(reason).split())}")

    async def _run(self, command: str, stdin: str | None = None) -> str:
        assert self.conn is not None
        try:
            result = await self.conn.run(command, input=stdin, check=False)
        except (OSError, asyncssh.Error) as exc:
            raise self._ssh_failed(exc) from None
        if result.exit_status != 0:
            err = str(result.stderr or "").strip().splitlines()
            raise LaunchError(f"{self.target.name} on {self.ssh}: `{command.split(' &&')[-1].strip()}` "
                              f"failed: {err[-1] if err else f'status {result.exit_status}'}")
        return str(result.stdout or "")

    async def prepare(self, files: dict[str, str], secret_files: dict[str, str]) -> str:
        self.conn = await self._connect()
        base = shlex.quote(self.ssh.workdir) if self.ssh.workdir else '"${TMPDIR:-/tmp}"'
        self.folder = (await self._run(f"umask 077 && mktemp -d {base}/privit-launch.XXXXXX")).strip()
        for name, text in {**files, **secret_files}.items():
            path = shlex.quote(f"{self.folder}/{name}")
            await self._run(f"umask 077 && cat > {path}", stdin=text)
        return f"{self.ssh}:{self.folder}"

    async def start(self, role_args: Sequence[str]) -> None:
        assert self.conn is not None and self.folder is not None
        argv = [self.ssh.python, *SUPERVISOR, *role_args]
        # $$ is the shell's pid, which exec hands to the supervisor: known before it runs
        command = (f"cd {shlex.quote(self.folder)} && echo $$ > {SUPERVISOR_PID_FILE} "
                   f"&& exec {shlex.join(argv)}")
        self._started = True
        try:
            self.proc = await self.conn.create_process(command, encoding="utf-8", errors="replace")
        except (OSError, asyncssh.Error) as exc:
            raise self._ssh_failed(exc) from None
        self._pumps = _start_pumps(self.proc.stdout, self.proc.stderr, self.target.name, self._last_lines)

    async def wait(self) -> int:
        assert self.proc is not None
        try:
            await asyncio.gather(*self._pumps)
            await self.proc.wait_closed()
        except (OSError, asyncssh.Error) as exc:
            raise self._ssh_failed(exc) from None
        self._exited = True
        if self.proc.exit_status is not None and self.proc.exit_status >= 0:
            return self.proc.exit_status
        if not self.proc.exit_signal:  # the channel closed with neither: the link went away
            raise LaunchError(f"{self.target.name} on {self.ssh}: ssh connection lost: the "
                              f"role's channel closed without an exit status")
        signame = self.proc.exit_signal[0]
        number = getattr(signal, f"SIG{signame}", None)
        return -int(number) if number is not None else 255

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or self._exited:
            return
        try:
            proc.stdin.write_eof()
        except (OSError, asyncssh.Error):
            pass  # the channel is closing already; wait for it as for any other
        try:
            await asyncio.wait_for(proc.wait_closed(), STOP_WAIT_S)
        except TimeoutError:
            assert self.folder is not None
            pid_file = shlex.quote(f"{self.folder}/{PID_FILE}")
            try:
                await asyncio.wait_for(self._run(f"kill -KILL -- -$(cat {pid_file})"), STOP_WAIT_S)
            except (TimeoutError, LaunchError, OSError, asyncssh.Error):
                pass
            proc.close()
        self._exited = True

    async def fetch_report(self) -> str:
        assert self.folder is not None
        return await self._run(f"cat {shlex.quote(f'{self.folder}/{REPORT_FILE}')}")

    def _may_still_run(self) -> bool:
        """Whether the role was started and its exit status never came back (a lost link)."""
        proc = self.proc
        return self._started and (proc is None or (proc.exit_status is None and not proc.exit_signal))

    async def cleanup(self) -> None:
        if self.conn is None:
            return
        command = None
        if self.folder is not None:
            command = f"rm -rf {shlex.quote(self.folder)}"
            if self._may_still_run():  # stop it first: it must not outlive the launch
                command = f"cd {shlex.quote(self.folder)} && {{ {_KILL_ROLE}; }}; {command}"
        try:
            if command is not None:
                try:
                    await asyncio.wait_for(self._run(command), 2 * STOP_WAIT_S)
                except (LaunchError, TimeoutError):
                    # The link went away (or rm failed): once more over a fresh connection,
                    # since the role may still run and its folder may hold its secret key.
                    self.conn.close()
                    self.conn = await asyncio.wait_for(self._connect(), STOP_WAIT_S)
                    await asyncio.wait_for(self._run(command), 2 * STOP_WAIT_S)
        except (TimeoutError, LaunchError, OSError, asyncssh.Error):
            pass
        finally:
            self.conn.close()
            await self.conn.wait_closed()


def make_runner(target: RoleTarget, last_lines: dict[str, str]) -> RoleRunner:
    """The runner for a target: SSH where it names a host to reach, else a local process."""
    if target.ssh is None:
        return LocalRole(target, last_lines)
    return SshRole(target, target.ssh, last_lines)
