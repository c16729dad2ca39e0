"""`privit run`'s view of its roles' progress files (the line protocol of launch/progress.py).

On a terminal (stderr is a TTY): a live table with rich — per role the phase it is in and
the seconds each finished phase took, its bytes sent and rounds, and the online step
(layer) the parties are at with the bytes (all parties) and rounds (critical path) so
far. The final table stays on screen. Otherwise: one plain line per event on stderr, for
logs and CI (`party 0: handshake done (0.31 s)`, `online 3/10 layer 1: 1.2 MB sent
(all parties), 14 rounds`).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from privit.launch.progress import PHASES, read_events, status_line


@dataclass
class RoleState:
    """What the view knows of one role: the seconds of each finished phase, its counters."""

    done: dict[str, float] = field(default_factory=dict)
    bytes: int = 0
    rounds: int = 0
    step: dict[str, Any] | None = None  # the last online step (parties)

    @property
    def phase(self) -> str:
        """The phase the role is in now ("finished" after the last)."""
        return next((p for p in PHASES if p not in self.done), "finished")


@dataclass
class _Tail:
    """Reads what was appended to one file since the last call, whole lines only."""

    path: Path
    offset: int = 0
    partial: str = ""

    def new_text(self) -> str:
        try:
            with open(self.path) as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return ""
        self.offset += len(chunk)
        text = self.partial + chunk
        cut = text.rfind("\n") + 1
        self.partial = text[cut:]
        return text[:cut]


class ProgressView:
    """Shows the progress files of `paths` (role name -> file) on `stream`: a live rich
    display when `live`, else one plain line per event. `poll()` often, `close()` once."""

    def __init__(self, paths: dict[str, Path], live: bool, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tails = {name: _Tail(path) for name, path in paths.items()}
        self.roles = {name: RoleState() for name in paths}
        self.start = time.time()
        self._live: Any = None
        if live:
            # here: rich is only needed for a live display on a terminal
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream, stderr=self.stream is sys.stderr)
            self._live = Live(self._render(), console=console, transient=False,
                              refresh_per_second=8)
            self._live.start()

    def poll(self) -> None:
        changed = False
        for name, tail in self.tails.items():
            for event in read_events(tail.new_text()):
                self._apply(self.roles[name], event)
                changed = True
        if changed and self._live is not None:
            self._live.update(self._render())

    def close(self) -> None:
        self.poll()
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()  # transient=False: the last table stays on screen
            self._live = None

    # -- state ---------------------------------------------------------------------------
    def _apply(self, state: RoleState, event: dict[str, Any]) -> None:
        if event["event"] == "phase":
            state.done[str(event["phase"])] = float(event.get("s", 0.0))
            state.bytes, state.rounds = int(event.get("bytes", 0)), int(event.get("rounds", 0))
            if self._live is None:
                print(status_line(event), file=self.stream, flush=True)
            return
        state.step = event
        if self._live is None and event["role"] == next(iter(self._parties()), None):
            print(self._online_line(), file=self.stream, flush=True)

    def _parties(self) -> list[str]:
        return [name for name in self.roles if name != "dealer"]

    def _online_line(self) -> str:
        """`online 3/10 layer 1: 1.2 MB sent (all parties), 14 rounds`, from the parties' last
        steps (the first party's step and label; bytes summed, rounds the most)."""
        steps = [s.step for s in self.roles.values() if s.step is not None]
        if not steps:
            return "online: waiting"
        first = steps[0]
        nbytes = sum(int(s["bytes"]) for s in steps)
        rounds = max(int(s["rounds"]) for s in steps)
        return (f"online {first['done']}/{first['total']} {first['label']}: "
                f"{nbytes / 1e6:.1f} MB sent (all parties), {rounds} rounds")

    # -- live display --------------------------------------------------------------------
    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(title=f"privit run: roles started {time.time() - self.start:.1f} s ago",
                      title_justify="left")
        table.add_column("role")
        table.add_column("now")
        for phase in PHASES:
            table.add_column(f"{phase} s", justify="right")
        table.add_column("sent MB", justify="right")
        table.add_column("rounds", justify="right")
        for name, state in self.roles.items():
            cells = [f"{state.done[p]:.2f}" if p in state.done else "" for p in PHASES]
            table.add_row(name, state.phase, *cells, f"{state.bytes / 1e6:.1f}", str(state.rounds))
        if not any(s.step for s in self.roles.values()):
            return table  # before the online phase, or a job that reports no steps
        return Group(table, Text(self._online_line()))
