"""A real SSH server for tests: asyncssh on 127.0.0.1, with a generated host key and one
generated client key, running in a thread of the test process.

Each exec request runs its command with /bin/sh as a local subprocess, with the test
process's environment (so the same Python and venv); the channel's stdin, stdout and stderr
are piped to it and its exit status goes back (an exit signal if a signal killed it). When
the client closes stdin or the channel, the command's stdin closes; if the connection goes
away while the command still runs, it gets SIGTERM. That is what sshd does closely enough
for `privit launch` (which relies only on stdin closing). Host keys are checked: the client
gets a known_hosts file naming this one.

Faults, by the user name a client logs in as (`ssh_section(user=...)`; any name is accepted
with the client key): REFUSE_USER has every session channel refused (as a server with
sessions disabled answers); DROP_USER has its connection aborted, with no exit status, as
soon as a `role_supervisor` command has written its first bytes of stderr (a link lost
mid-run); STRAND_USER's `role_supervisor` commands lose their connection when the test
calls `cut_links()`, but keep running with stdin open, as on a host that has not noticed
that the client went away (a network partition, a NAT that dropped the flow).
"""
from __future__ import annotations

import asyncio
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # asyncssh's imports of DSA, ARC4, TripleDES warn with newer cryptography (privit uses none)
    warnings.simplefilter("ignore")
    import asyncssh

USER = "privit-test"
REFUSE_USER = "privit-refuse"
DROP_USER = "privit-drop"
STRAND_USER = "privit-strand"


class _FaultyServer(asyncssh.SSHServer):
    """Refuses the session channels of REFUSE_USER; runs the others' commands with
    `handle` (asyncssh asks `session_requested` only when no process_factory is set)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def session_requested(self) -> Any:
        if self._conn.get_extra_info("username") == REFUSE_USER:
            return False
        return asyncssh.SSHServerProcess(self._handle, None, 3, False)  # 3: no SFTP here


def fresh_host_public_key() -> str:
    """A new host key's public half, as a known_hosts line wants it (type and base64)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


class SshTestServer:
    """Start with `start()`, stop with `stop()`; `ssh_section()` is a cluster file `ssh` object
    that reaches this server."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key_path = folder / "client_key"
        client_key.write_private_key(str(self.client_key_path))
        self.client_key_path.chmod(0o600)
        self.authorized_keys = asyncssh.import_authorized_keys(
            client_key.export_public_key("openssh").decode())
        self.known_hosts_path = folder / "known_hosts"
        self.port = 0
        self.commands: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="ssh-test-server")
        self._server: asyncssh.SSHAcceptor | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._strandable: list[asyncssh.SSHServerProcess[bytes]] = []

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(30)
        public = " ".join(self.host_key.export_public_key("openssh").decode().split()[:2])
        self.known_hosts_path.write_text(f"[127.0.0.1]:{self.port} {public}\n")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def cut_links(self) -> int:
        """Abort the connection of every STRAND_USER role_supervisor command running now,
        leaving the commands running; how many there were."""
        async def cut() -> int:
            for process in self._strandable:
                process.get_extra_info("connection").abort()
            return len(self._strandable)
        return asyncio.run_coroutine_threadsafe(cut(), self._loop).result(30)

    def ssh_section(self, **extra: Any) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "user": USER,
                "key": str(self.client_key_path), "known_hosts": str(self.known_hosts_path),
                "python": sys.executable, **extra}

    async def _listen(self) -> None:
        self._server = await asyncssh.listen(
            "127.0.0.1", 0, server_host_keys=[self.host_key],
            authorized_client_keys=self.authorized_keys,
            server_factory=lambda: _FaultyServer(self._handle),
            encoding=None, allow_scp=False)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        command = process.command or "true"
        self.commands.append(command)
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin = proc.stdin

        stranded = (process.get_extra_info("username") == STRAND_USER
                    and "role_supervisor" in command)
        if stranded:
            self._strandable.append(process)

        async def feed() -> None:
            try:
                while data := await process.stdin.read(65536):
                    stdin.write(data)
                    await stdin.drain()
            except Exception:  # a signal request, a lost connection: stdin ends here too
                pass
            finally:
                if not stranded:  # a stranded command keeps its stdin until it exits
                    stdin.close()

        drop = (process.get_extra_info("username") == DROP_USER
                and "role_supervisor" in command)

        async def pump(reader: asyncio.StreamReader, writer: asyncssh.SSHWriter[bytes]) -> None:
            while data := await reader.read(65536):
                if stranded and writer.channel.is_closing():
                    continue  # the client is gone: drain, so the command never blocks on a pipe
                writer.write(data)
                if drop and writer is process.stderr:
                    process.get_extra_info("connection").abort()
                    return

        feeder = asyncio.create_task(feed())
        try:
            await asyncio.gather(pump(proc.stdout, process.stdout), pump(proc.stderr, process.stderr))
            code = await proc.wait()
            if code < 0:  # as sshd tells a command that a signal killed
                process.exit_with_signal(signal.Signals(-code).name.removeprefix("SIG"))
            else:
                process.exit(code)
        except Exception:
            process.close()
        finally:
            feeder.cancel()
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
            stdin.close()
            if stranded:
                self._strandable.remove(process)
            self._handlers.discard(task)
