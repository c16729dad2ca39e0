"""Where each role listens: one TCP endpoint per party and one for the dealer.

A cluster file is JSON::

    {"parties": [{"host": "10.0.0.1", "port": 5000, "public_key": "<Z85, 40 chars>"},
                 {"host": "10.0.0.2", "port": 5000, "public_key": "..."}],
     "dealer": {"host": "10.0.0.3", "port": 5000, "public_key": "..."}}

`public_key` is the role's CURVE public key (parties/keys.py); every role needs one unless
the run is `--insecure`. `privit cluster init` writes such a file with a key pair per role.
A role may also carry an `ssh` object: how `privit launch` reaches its host
(launch/launch_targets.py reads it; docs/deploy.md lists its fields). The roles themselves
only check that it is an object and otherwise ignore it.

Role i (0..n-1) is party i and role n is the dealer, as in `RunConfig.dealer_id`.
Every process of a run reads the same file: a role binds its own endpoint and connects
to everyone else's.
"""
from __future__ import annotations

import json
import socket
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privit.parties.jsonfile import read_json_object
from privit.parties.keys import KeyFileError, RoleKeys, check_public_key

LOCALHOST = "127.0.0.1"


class ClusterError(ValueError):
    """A cluster file or description that cannot be used; the text says why, in one line."""


def key_name(role: int, n_parties: int) -> str:
    """The key pair name of a role: `party0`, `party1`, ..., `dealer`."""
    return "dealer" if role == n_parties else f"party{role}"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    public_key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ClusterError(f"host must be a non-empty string, got {self.host!r}")
        port = self.port
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ClusterError(f"port must be an integer in 1..65535, got {self.port!r}")

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.public_key is not None:
            d["public_key"] = self.public_key
        return d


@dataclass(frozen=True)
class Cluster:
    """The endpoints of parties 0..n-1 and of the dealer (role n)."""

    parties: tuple[Endpoint, ...]
    dealer: Endpoint

    def __post_init__(self) -> None:
        if len(self.parties) < 1:
            raise ClusterError("a cluster needs at least one party")
        seen: dict[tuple[str, int], str] = {}
        keys: dict[str, str] = {}
        for role, ep in enumerate(self.all_endpoints()):
            name = self._name(role)
            if (ep.host, ep.port) in seen:
                raise ClusterError(f"{name} and {seen[(ep.host, ep.port)]} share the endpoint {ep}")
            seen[(ep.host, ep.port)] = name
            if ep.public_key is not None:
                if ep.public_key in keys:
                    raise ClusterError(f"{name} and {keys[ep.public_key]} share one public key")
                keys[ep.public_key] = name

    @property
    def n_parties(self) -> int:
        return len(self.parties)

    def _name(self, role: int) -> str:
        return "dealer" if role == self.n_parties else f"party {role}"

    def all_endpoints(self) -> tuple[Endpoint, ...]:
        """Endpoints by role: parties first, the dealer last."""
        return (*self.parties, self.dealer)

    @property
    def has_keys(self) -> bool:
        """Whether every role has a public key (needed for CURVE channels)."""
        return all(ep.public_key is not None for ep in self.all_endpoints())

    def public_key(self, role: int) -> str:
        """The CURVE public key of `role`; a ClusterError if the file gives none."""
        key = self.endpoint(role).public_key
        if key is None:
            raise ClusterError(
                f"the cluster file gives no public_key for {self._name(role)}; write one with "
                f"`privit cluster init`, or run with --insecure"
            )
        return key

    def check_own_key(self, role: int, keys: RoleKeys) -> None:
        """The secret key given to `role` must be the pair of its public key in the file."""
        if keys.public_key != self.public_key(role):
            raise ClusterError(
                f"the key {keys.name!r} given to {self._name(role)} is not the one the cluster "
                f"file lists for {self._name(role)}"
            )

    def endpoint(self, role: int) -> Endpoint:
        """The endpoint of `role` (0..n-1 parties, n the dealer)."""
        if not 0 <= role <= self.n_parties:
            raise ClusterError(
                f"role {role} is not in this cluster (parties 0..{self.n_parties - 1}, "
                f"dealer {self.n_parties})"
            )
        return self.dealer if role == self.n_parties else self.parties[role]

    # -- files ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"parties": [p.to_dict() for p in self.parties], "dealer": self.dealer.to_dict()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @staticmethod
    def from_dict(d: Any, where: str = "cluster") -> Cluster:
        if not isinstance(d, dict):
            raise ClusterError(f"{where}: expected a JSON object, got {type(d).__name__}")
        unknown = set(d) - {"parties", "dealer"}
        if unknown:
            raise ClusterError(f"{where}: unknown fields {sorted(unknown)}")
        for key in ("parties", "dealer"):
            if key not in d:
                raise ClusterError(f"{where}: missing field {key!r}")
        if not isinstance(d["parties"], list) or not d["parties"]:
            raise ClusterError(f"{where}: 'parties' must be a non-empty list")
        parties = tuple(
            _endpoint(e, f"{where}: parties[{i}]") for i, e in enumerate(d["parties"])
        )
        dealer = _endpoint(d["dealer"], f"{where}: dealer")
        try:
            return Cluster(parties, dealer)
        except ClusterError as exc:
            raise ClusterError(f"{where}: {exc}") from None

    @staticmethod
    def load(path: str | Path) -> Cluster:
        """Read a cluster file; any problem is a one-line `ClusterError`."""
        p = Path(path)
        data = read_json_object(p, "cluster file", ClusterError)
        return Cluster.from_dict(data, where=f"cluster file {p}")

    # -- localhost --------------------------------------------------------------------
    def with_keys(self, keys: list[RoleKeys]) -> Cluster:
        """The same endpoints with these public keys, by role (parties, then the dealer)."""
        eps = [Endpoint(ep.host, ep.port, k.public_key)
               for ep, k in zip(self.all_endpoints(), keys, strict=True)]
        return Cluster(tuple(eps[:-1]), eps[-1])

    @staticmethod
    def local(n_parties: int, host: str = LOCALHOST) -> Cluster:
        """n parties and a dealer on `host`, each on a port that was free a moment ago.

        Ports are found by binding to port 0 and reading what the kernel chose; all probe
        sockets are held open together so the ports are distinct, then closed. There is a
        small race: another program may take a port between this probe and the role's own
        bind, which then fails with a clear `TransportError`; rerun in that case.
        """
        if n_parties < 1:
            raise ClusterError(f"need at least one party, got {n_parties}")
        with ExitStack() as stack:
            ports = []
            for _ in range(n_parties + 1):
                s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                s.bind((host, 0))
                ports.append(s.getsockname()[1])
        endpoints = [Endpoint(host, port) for port in ports]
        return Cluster(tuple(endpoints[:-1]), endpoints[-1])


def _endpoint(e: Any, where: str) -> Endpoint:
    if not isinstance(e, dict):
        raise ClusterError(f"{where} must be an object with 'host' and 'port'")
    for key in ("host", "port"):
        if key not in e:
            raise ClusterError(f"{where}: missing field {key!r}")
    unknown = set(e) - {"host", "port", "public_key", "ssh"}
    if unknown:
        raise ClusterError(f"{where}: unknown fields {sorted(unknown)}")
    if "ssh" in e and not isinstance(e["ssh"], dict):
        raise ClusterError(f"{where}: 'ssh' must be an object (see docs/deploy.md)")
    public_key = e.get("public_key")
    try:
        if public_key is not None:
            check_public_key(public_key, f"{where}: public_key")
        return Endpoint(e["host"], e["port"], public_key)
    except KeyFileError as exc:
        raise ClusterError(str(exc)) from None
    except ClusterError as exc:
        raise ClusterError(f"{where}: {exc}") from None
