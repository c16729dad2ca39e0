"""How an unexpected failure is told to the user: one line, cause and place; more on demand.

`describe(exc)` gives `Type: message (module:line)` for an unexpected exception, the place
being the innermost frame of privit's own code (where the library call that failed was
made; a frame inside torch or numpy rarely tells the user anything), and the bare message
for the errors that already speak the user's terms (`user_errors`). `--debug` (on `privit`
itself or on `run`, `party`, `dealer`), or the environment variable PRIVIT_DEBUG=1 for any
command, prints the full traceback too, and sets the diagnostic log to DEBUG
(launch/logging_config.py).
"""
from __future__ import annotations

import os
import signal
import traceback
from types import TracebackType


def exit_description(code: int) -> str:
    """How a role's process ended, from its status as subprocess gives it (-N: signal N
    ended it): "was killed by SIGKILL"; "stopped (SIGTERM) and exited 143" for 128 + N,
    which a role exits with itself once it has stopped on signal N and cleaned up (or its
    clean-up hit its 5 s bound; launch/roles.py); else "exited with status N"."""
    def name(number: int) -> str | None:
        try:
            return signal.Signals(number).name
        except ValueError:
            return None

    if code < 0:
        return f"was killed by {name(-code) or f'signal {-code}'}"
    if code > 128 and name(code - 128):
        return f"stopped ({name(code - 128)}) and exited {code}"
    return f"exited with status {code}"


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose text already says what went wrong in the user's terms (a peer, a file,
    a handshake field): shown as they are, without a type or a code location."""
    # Imported here, not at the top: the command line imports this module, and these pull
    # in torch (~2 s) that `privit --help` or a refused option must not wait for.
    from privit.models.checkpoint import CheckpointError
    from privit.models.data import DatasetError
    from privit.models.private_weights import ArchitectureError, ArchitectureMismatch
    from privit.parties.channel import PeerError
    from privit.parties.cluster import ClusterError
    from privit.parties.handshake import HandshakeError
    from privit.parties.keys import KeyFileError
    from privit.parties.material import MaterialError
    from privit.parties.transport import TransportError
    from privit.parties.wire import WireError

    return (PeerError, HandshakeError, ClusterError, TransportError, WireError, CheckpointError,
            DatasetError, KeyFileError, ArchitectureMismatch, ArchitectureError, MaterialError)


DEBUG_ENV = "PRIVIT_DEBUG"
_PACKAGE = "privit"


def debug_enabled() -> bool:
    """True when PRIVIT_DEBUG is set to anything but '', '0', 'false' or 'no'."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def enable_debug() -> None:
    """Turn debug output on for this process and the role processes it starts."""
    os.environ[DEBUG_ENV] = "1"


def where(tb: TracebackType | None) -> str | None:
    """`module:line` of the innermost traceback frame in privit's code (else the innermost)."""
    place = None
    fallback = None
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", "?"))
        here = f"{module}:{tb.tb_lineno}"
        fallback = here
        if module == _PACKAGE or module.startswith(_PACKAGE + "."):
            place = here
        tb = tb.tb_next
    return place or fallback


def describe(exc: BaseException) -> str:
    """One line: `Type: message (module:line)`, whitespace folded; a `user_errors()`
    exception is its message alone."""
    message = " ".join(str(exc).split())
    if isinstance(exc, user_errors()) and message:
        return message
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    place = where(exc.__traceback__)
    return f"{text} ({place})" if place else text


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
