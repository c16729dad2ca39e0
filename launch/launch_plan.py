"""What `privit launch` starts where: each role's target (a local process, or SSH to its host)
from the cluster file, and the launcher's own options.

A role in the cluster file may carry an `ssh` object; every field is optional::

    {"host": "10.0.0.2", "port": 5000, "public_key": "...",
     "ssh": {"host": "gpu2.example.org",   # where to connect (default: the role's host)
             "user": "alice",              # default: the local user name
             "port": 22,
             "key": "~/.ssh/id_ed25519",   # client key on the launching machine (default:
                                           # the SSH agent and ~/.ssh/id_*)
             "known_hosts": "~/.ssh/known_hosts",  # on the launching machine (the default);
                                                    # host keys are always checked
             "python": "python3",          # the interpreter on that host that has privit
             "workdir": "/tmp",            # where the role's private run folder is made
                                           # (default: $TMPDIR or /tmp on that host)
             "secret_key": "/home/alice/party1.key"}}  # the role's key, already on that host

Which way a role starts: with an `ssh` object, over SSH, even on 127.0.0.1 (the tests do this
against an SSH server of their own); without one, as a local process if its host is
`localhost`, `127.0.0.1` or `::1`, else over SSH with every default. A relative `key` or
`known_hosts` is relative to the cluster file's folder; `~` is the launching user's home.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from privit.parties.cluster import Cluster, ClusterError, key_name
from privit.parties.jsonfile import read_json_object

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
SSH_FIELDS = {"host": str, "user": str, "port": int, "key": str, "known_hosts": str,
              "python": str, "workdir": str, "secret_key": str}


@dataclass(frozen=True)
class SshTarget:
    """How to reach one role's host and run privit there."""

    host: str
    port: int = 22
    user: str | None = None
    client_key: str | None = None
    known_hosts: str | None = None
    python: str = "python3"
    workdir: str | None = None
    secret_key: str | None = None

    def __str__(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


@dataclass(frozen=True)
class RoleTarget:
    """One role and where it runs: `ssh` None is a local process."""

    role: int
    name: str
    key_name: str
    ssh: SshTarget | None


def load_targets(path: str | Path, cluster: Cluster) -> tuple[RoleTarget, ...]:
    """Every role's target, parties first and the dealer last; a one-line ClusterError for a
    malformed `ssh` object."""
    p = Path(path)
    data = read_json_object(p, "cluster file", ClusterError)
    raw = [*data["parties"], data["dealer"]]
    targets = []
    for role, (entry, ep) in enumerate(zip(raw, cluster.all_endpoints(), strict=True)):
        where = f"cluster file {p}: " + (f"parties[{role}]" if role < cluster.n_parties else "dealer")
        ssh = entry.get("ssh")
        if ssh is None and ep.host in LOCAL_HOSTS:
            target = None
        else:
            target = _ssh_target(ssh or {}, ep.host, p.parent, f"{where}.ssh")
        name = "dealer" if role == cluster.n_parties else f"party {role}"
        targets.append(RoleTarget(role, name, key_name(role, cluster.n_parties), target))
    return tuple(targets)


def _ssh_target(d: dict[str, Any], default_host: str, base: Path, where: str) -> SshTarget:
    unknown = set(d) - set(SSH_FIELDS)
    if unknown:
        raise ClusterError(f"{where}: unknown fields {sorted(unknown)} "
                           f"(known: {', '.join(sorted(SSH_FIELDS))})")
    for field, kind in SSH_FIELDS.items():
        value = d.get(field)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)
                                  or (isinstance(value, str) and not value.strip())):
            raise ClusterError(f"{where}: {field!r} must be a non-empty "
                               f"{'string' if kind is str else 'integer'}, got {value!r}")
    port = d.get("port", 22)
    if not 1 <= port <= 65535:
        raise ClusterError(f"{where}: 'port' must be in 1..65535, got {port}")

    def local_path(field: str) -> str | None:
        value = d.get(field)
        return None if value is None else str(base / Path(value).expanduser())

    return SshTarget(host=d.get("host", default_host), port=port, user=d.get("user"),
                     client_key=local_path("key"), known_hosts=local_path("known_hosts"),
                     python=d.get("python", "python3"), workdir=d.get("workdir"),
                     secret_key=d.get("secret_key"))


@dataclass(frozen=True)
class LaunchOptions:
    """The launcher's own options (not hashed into the run: the roles never see them)."""

    keys_dir: str | None
    checkpoint: str | None
    images: str | None
    out_dir: str
    json_path: str | None

    @staticmethod
    def pop_from(options: dict[str, Any]) -> LaunchOptions:
        """Take the launch options out of a click options dict (in place)."""
        return LaunchOptions(**{name: options.pop(name) for name in _OPTION_NAMES})

    def check(self, job_name: str) -> None:
        if (self.checkpoint or self.images) and job_name != "vit":
            raise click.UsageError("--checkpoint and --images apply to the vit job only")

    def keys_folder(self, cluster_path: str | Path) -> Path:
        """Where the roles' NAME.key files are on this machine (default: beside the cluster
        file, where `privit cluster init` writes them)."""
        return Path(self.keys_dir) if self.keys_dir else Path(cluster_path).parent


_OPTION_NAMES = ("keys_dir", "checkpoint", "images", "out_dir", "json_path")


def click_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of `privit launch` that are the launcher's own."""
    options = [
        click.option("--keys", "keys_dir", type=click.Path(file_okay=False), default=None,
                     help="folder on this machine with the roles' NAME.key files (default: the "
                          "cluster file's folder); each key goes to its own role's host only, "
                          "unless the cluster file names the key already there (ssh.secret_key)"),
        click.option("--checkpoint", default=None,
                     help="vit: the model file ON PARTY 0'S HOST (it never leaves that host)"),
        click.option("--images", default=None,
                     help="vit: the images file ON PARTY 1'S HOST (it never leaves that host)"),
        click.option("--out", "out_dir", default=".", show_default=True,
                     type=click.Path(file_okay=False),
                     help="folder for the role reports (in a privit-launch-SESSION folder)"),
        click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
                     help="write the merged report here"),
    ]
    for option in reversed(options):
        func = option(func)
    return func
