"""CURVE key pairs of the roles: generate, save, load, check.

Every channel is ZeroMQ CURVE (Curve25519 + XSalsa20-Poly1305, authenticated and
encrypted) unless a run is started with `--insecure`. Each role has one long-term key
pair; the cluster file lists every role's public key, and each role holds its own secret
key in a file only it can read.

Files (both JSON, keys in ZeroMQ's Z85 text encoding, 40 characters):
- `NAME.key`, mode 0600: {"name": NAME, "public_key": ..., "secret_key": ...}
- `NAME.pub`: {"name": NAME, "public_key": ...}
A secret key file that group or others may read is refused (`KeyFileError`), as ssh does.
"""
from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from zmq.utils import z85

from privit.parties.jsonfile import read_json_object

Z85_KEY_CHARS = 40
_Z85_ALPHABET = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, malformed or too open; one line."""


def check_public_key(key: Any, where: str) -> str:
    """`key` if it is a Z85 CURVE key (40 characters of the Z85 alphabet), else KeyFileError."""
    if not isinstance(key, str) or len(key) != Z85_KEY_CHARS or not set(key) <= _Z85_ALPHABET:
        raise KeyFileError(f"{where}: not a CURVE key (expected {Z85_KEY_CHARS} Z85 characters)")
    try:
        raw = z85.decode(key.encode("ascii"))
    except (ValueError, struct.error):  # a 5-character group above 2^32 - 1
        raw = b""
    if len(raw) != 32:
        raise KeyFileError(f"{where}: not a CURVE key (its Z85 text does not decode to 32 bytes)")
    return key


@dataclass(frozen=True)
class RoleKeys:
    """One role's CURVE key pair (Z85 text). `repr` never shows the secret."""

    name: str
    public_key: str
    secret_key: str

    def __repr__(self) -> str:
        return f"RoleKeys(name={self.name!r}, public_key={self.public_key!r}, secret_key=<hidden>)"

    @staticmethod
    def generate(name: str) -> RoleKeys:
        public, secret = zmq.curve_keypair()
        return RoleKeys(name, public.decode("ascii"), secret.decode("ascii"))

    def save(self, folder: str | Path) -> tuple[Path, Path]:
        """Write `NAME.key` (0600, created so, never widened) and `NAME.pub`; returns both."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        secret_path = folder / f"{self.name}.key"
        public_path = folder / f"{self.name}.pub"
        body = json.dumps({"name": self.name, "public_key": self.public_key,
                           "secret_key": self.secret_key}, indent=1) + "\n"
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)  # an existing file keeps its mode otherwise
            fh.write(body)
        public_path.write_text(json.dumps({"name": self.name, "public_key": self.public_key},
                                          indent=1) + "\n")
        return secret_path, public_path

    @staticmethod
    def load(path: str | Path) -> RoleKeys:
        """Read a secret key file; refuse it if group or others may read it."""
        p = Path(path)
        try:
            mode = p.stat().st_mode
        except FileNotFoundError:
            raise KeyFileError(f"secret key file {p} does not exist") from None
        except OSError as exc:
            raise KeyFileError(f"cannot read secret key file {p}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"secret key file {p} is readable by others (mode {stat.S_IMODE(mode):04o}); "
                f"run: chmod 600 {p}"
            )
        data = _read_json(p, "secret key file")
        for field in ("name", "public_key", "secret_key"):
            if field not in data:
                raise KeyFileError(f"secret key file {p}: missing field {field!r}")
        name = data["name"]
        if not isinstance(name, str):
            raise KeyFileError(f"secret key file {p}: 'name' must be a string")
        public = check_public_key(data["public_key"], f"secret key file {p}: public_key")
        secret = check_public_key(data["secret_key"], f"secret key file {p}: secret_key")
        try:
            derived = zmq.curve_public(secret.encode("ascii")).decode("ascii")
        except zmq.ZMQError:
            raise KeyFileError(f"secret key file {p}: the secret key is not a CURVE key") from None
        if derived != public:
            raise KeyFileError(f"secret key file {p}: the public key does not match the secret key")
        return RoleKeys(name, public, secret)


def load_public_key(path: str | Path) -> str:
    """The public key of a `NAME.pub` file."""
    p = Path(path)
    data = _read_json(p, "public key file")
    if "public_key" not in data:
        raise KeyFileError(f"public key file {p}: missing field 'public_key'")
    return check_public_key(data["public_key"], f"public key file {p}")


def _read_json(p: Path, what: str) -> dict[str, Any]:
    return read_json_object(p, what, KeyFileError)
