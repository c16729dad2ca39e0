"""Progress of one role, as it runs: a small line protocol and the role's own status lines.

Each role appends one JSON object per line to its progress file (`--progress FILE`, which
`privit run` passes to every role and tails; launch/progress_view.py shows it). Lines are
written per phase and per online step (a layer or another top-level scope of the job),
never per message, so the cost is a few dozen small appends per run. Fields:

  {"role": "party 0", "event": "phase", "phase": P, "s": S, "bytes": B, "rounds": R, ...}
      phase P ("startup", "handshake", "offline", "online") is done, S seconds after the
      previous phase ended (startup: after the process started); B, R: bytes this role
      has sent and rounds it has waited, all phases so far. Offline adds "in_bytes" (the
      dealer's payload a party read; parties only).
  {"role": "party 0", "event": "step", "done": D, "total": T, "label": L,
   "bytes": B, "rounds": R}
      a party's online phase reached step D of T (L names the step, e.g. "layer 3");
      B, R: its online bytes sent and online rounds so far.

A role started by hand (`privit party`, `privit dealer`) prints one status line per phase
to stderr instead (`party 0: handshake done (0.31 s)`).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from privit.parties.counters import Counters

PHASES = ("startup", "handshake", "offline", "online")


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.1f} MB"


def status_line(event: dict[str, Any]) -> str:
    """One line for a phase event: `party 0: offline done (1.20 s), 58.1 MB in, 1.0 MB out`."""
    role, phase = event["role"], event["phase"]
    line = f"{role}: {phase} done ({event['s']:.2f} s)"
    if phase == "offline" and event.get("in_bytes") is not None:
        line += f", {_mb(event['in_bytes'])} in"
    if phase in ("offline", "online"):
        line += f", {_mb(event['bytes'])} sent so far"
    if phase == "online":
        line += f", {event['online_rounds']} online rounds"
    return line


@dataclass
class RoleProgress:
    """What one role tells about its progress: lines to `path` (for the coordinator) and/or
    status lines to `stream` (a role started by hand). Nothing when both are None."""

    role: str
    counters: Counters
    path: str | None = None
    stream: TextIO | None = None
    _last: float = field(default_factory=time.time)

    def phase_done(self, phase: str, since: float | None = None, **extra: Any) -> None:
        """`phase` ended now; it began at `since` (time.time(); default: the last phase's end)."""
        now = time.time()
        start = self._last if since is None else since
        self._last = now
        tallies = self.counters.phases.values()
        event = {"role": self.role, "event": "phase", "phase": phase, "s": round(now - start, 3),
                 "bytes": sum(t.bytes for t in tallies), "rounds": sum(t.rounds for t in tallies),
                 "online_rounds": self.counters.phases["online"].rounds, **extra}
        self._write(event)
        if self.stream is not None:
            print(status_line(event), file=self.stream, flush=True)

    def step(self, done: int, total: int, label: str) -> None:
        """A party's online phase reached step `done` of `total` (Session.report_progress)."""
        online = self.counters.phases["online"]
        self._write({"role": self.role, "event": "step", "done": done, "total": total,
                     "label": " ".join(label.split()), "bytes": online.bytes,
                     "rounds": online.rounds})

    def _write(self, event: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(event) + "\n")


def for_role(role: str, counters: Counters, path: str | None) -> RoleProgress:
    """The progress of a role: lines to `path` when the coordinator watches (it passes one),
    else status lines on stderr (a role started by hand)."""
    return RoleProgress(role, counters, path, None if path else sys.stderr)


def read_events(text: str) -> list[dict[str, Any]]:
    """The well-formed events of complete lines in `text` (a line torn by a crash, or
    anything else that is not an event object, is skipped: progress is only a display)."""
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") in ("phase", "step") and "role" in event:
            events.append(event)
    return events
