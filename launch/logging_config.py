"""privit's diagnostic log: the stdlib `logging` module, one level for every process of a run.

The level comes from the environment, so the role processes a command starts (forked or
exec'd) log at the same level as the command itself:

* ``PRIVIT_LOG_LEVEL``: ``DEBUG``, ``INFO``, ``WARNING`` (the default), ``ERROR`` or
  ``CRITICAL`` (any case);
* ``--debug`` (or ``PRIVIT_DEBUG=1``) implies ``DEBUG``.

Records of the ``privit`` logger tree go to stderr, one line each, tagged with the process
(``privit``, ``party 0``, ``dealer``, ...), never to stdout, which carries results.  What is
logged: roles, endpoints, phases, sizes and timings; never a key, a seed, a weight, an
image or a share (pyzmq's authenticator, ``privit.zap``, which names public keys at DEBUG,
is held at INFO).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

from privit.launch.errors import debug_enabled

__all__ = ["LOG_LEVEL_ENV", "LEVELS", "log_level", "configure_logging"]

LOG_LEVEL_ENV = "PRIVIT_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_ROOT = "privit"
_ZAP = "privit.zap"   # parties/transport.py's authenticator logger
_FORMAT = "%(asctime)s.%(msecs)03d privit[{tag}] %(levelname)s %(name)s: %(message)s"


def log_level() -> int:
    """The level the environment asks for (module docstring).

    Raises:
        ValueError: PRIVIT_LOG_LEVEL is set to something that is not a level name.
    """
    if debug_enabled():
        return logging.DEBUG
    name = os.environ.get(LOG_LEVEL_ENV, "").strip().upper() or "WARNING"
    if name not in LEVELS:
        raise ValueError(f"{LOG_LEVEL_ENV}={os.environ[LOG_LEVEL_ENV]!r} is not a log level; "
                         f"use one of {', '.join(LEVELS)}")
    level: int = getattr(logging, name)
    return level


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes, not the stream of the
    moment it was made (click's test runner swaps stderr for each invocation)."""

    privit_handler = True

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def configure_logging(tag: str = "privit") -> int:
    """Send the ``privit`` loggers' records to stderr at :func:`log_level`; returns it.

    Idempotent: a second call (a role process after its fork, or ``--debug`` given after
    the group's options were read) replaces the handler this module installed before.
    """
    level = log_level()
    logger = logging.getLogger(_ROOT)
    for handler in list(logger.handlers):
        if getattr(handler, "privit_handler", False):
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(_FORMAT.format(tag=tag), datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    # pyzmq's ZAP authenticator logs every CURVE connection with the client's key at DEBUG:
    # public, but a key all the same, and one line per link; its refusals are WARNINGs.
    logging.getLogger(_ZAP).setLevel(max(level, logging.INFO))
    return level
