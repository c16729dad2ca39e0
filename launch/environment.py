"""What a run report records about where and how it ran: versions, the machine, the command.

`environment()` gives the versions of privit, python, torch, numpy, pyzmq and libzmq, and
the machine: CPU model (from /proc/cpuinfo where there is one), logical cores, OS and
platform. `command_line(argv)` gives the command as the user typed it, with the program
name shortened to `privit` (sys.argv[0] is the console script's absolute path, e.g. in a
virtual environment); the user's own arguments are kept as given.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from privit import __version__


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name from `cpuinfo` (Linux), else platform.processor(), else "unknown"."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """Versions and machine for the report (imports torch, numpy and zmq: call it where
    they are loaded already, as in `privit run` after the run)."""
    import numpy
    import torch
    import zmq

    return {
        "versions": {"privit": __version__, "python": platform.python_version(),
                     "torch": torch.__version__, "numpy": numpy.__version__,
                     "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()},
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "os": f"{platform.system()} {platform.release()}",
                    "platform": platform.platform(), "arch": platform.machine()},
    }


def command_line(argv: list[str] | None = None) -> list[str]:
    """`argv` (default: sys.argv) with the program name shortened to "privit"."""
    args = list(sys.argv if argv is None else argv)
    return ["privit", *args[1:]]
