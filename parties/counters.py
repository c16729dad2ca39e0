"""Bytes, rounds and time, counted where messages leave and where a process waits.

Definitions (docs/design.md, "Measurement conventions"):
- bytes: every frame this process sends, header included, counted once at the single
  send point (`FramedChannel.send`), split by phase and by the scope open at the time.
- rounds: the counter advances when the process waits for a peer message after having
  sent something since its previous wait. Independent openings batched into one message
  therefore cost one round, and a receive-only or send-only step costs none.
- scopes: nested names ("layer3/softmax"); each scope's numbers are what happened while
  it was the innermost open scope, and `report()` also sums them into every prefix.
- choices: what a protocol's "auto" setting picked, counted per call: for each network
  the choice was evaluated on ("run": the run's own; "lan", "wan": the presets), how
  often each option won (`note_choice`); the report names them.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

PHASES = ("setup", "offline", "online")


@dataclass
class Tally:
    bytes: int = 0
    messages: int = 0
    rounds: int = 0
    wall_s: float = 0.0

    def add(self, other: Tally) -> None:
        self.bytes += other.bytes
        self.messages += other.messages
        self.rounds += other.rounds
        self.wall_s += other.wall_s

    def as_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "messages": self.messages, "rounds": self.rounds,
                "wall_s": self.wall_s}


@dataclass
class Counters:
    """Always-on counters of one process. Not thread-safe: only the protocol thread uses it."""

    phase: str = "setup"
    phases: dict[str, Tally] = field(default_factory=lambda: {p: Tally() for p in PHASES})
    bytes_to: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    scopes: dict[str, Tally] = field(default_factory=dict)
    scope_order: list[str] = field(default_factory=list)
    choices: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    _stack: list[str] = field(default_factory=list)
    _sent_since_wait: bool = False
    _phase_start: float = field(default_factory=time.perf_counter)

    def set_phase(self, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        now = time.perf_counter()
        self.phases[self.phase].wall_s += now - self._phase_start
        self._phase_start = now
        self.phase = phase
        self._sent_since_wait = False

    @contextmanager
    def interlude(self, phase: str) -> Iterator[None]:
        """Count what happens inside in `phase`, then resume the phase before as if nothing
        had happened in between (its round flag included): e.g. a party reading dealer
        material in the middle of its online phase."""
        before, sent = self.phase, self._sent_since_wait
        if before == phase:
            yield
            return
        self.set_phase(phase)
        try:
            yield
        finally:
            self.set_phase(before)
            self._sent_since_wait = sent

    def note_choice(self, what: str, picks: Mapping[str, str]) -> None:
        """One call of `what` (e.g. "compare") whose "auto" setting picked `picks[network]`
        on each network it was evaluated on ("run", "lan", "wan")."""
        per_network = self.choices.setdefault(what, {})
        for network, picked in picks.items():
            tally = per_network.setdefault(network, {})
            tally[picked] = tally.get(picked, 0) + 1

    @property
    def current_scope(self) -> str:
        """The innermost open scope's path, or "" outside every scope."""
        return self._stack[-1] if self._stack else ""

    def _scope_tally(self) -> Tally | None:
        if not self._stack:
            return None
        return self.scopes[self._stack[-1]]

    def on_send(self, dst: int, nbytes: int) -> None:
        tally = self.phases[self.phase]
        tally.bytes += nbytes
        tally.messages += 1
        self.bytes_to[dst] += nbytes
        scope = self._scope_tally()
        if scope is not None and self.phase == "online":
            scope.bytes += nbytes
            scope.messages += 1
        self._sent_since_wait = True

    def on_wait(self) -> None:
        """Called before every blocking receive from a peer."""
        if not self._sent_since_wait:
            return
        self._sent_since_wait = False
        self.phases[self.phase].rounds += 1
        scope = self._scope_tally()
        if scope is not None and self.phase == "online":
            scope.rounds += 1

    @contextmanager
    def scope(self, name: str) -> Iterator[None]:
        path = f"{self._stack[-1]}/{name}" if self._stack else name
        if path not in self.scopes:
            self.scopes[path] = Tally()
            self.scope_order.append(path)
        self._stack.append(path)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.scopes[path].wall_s += time.perf_counter() - start
            self._stack.pop()

    def finish(self) -> None:
        self.set_phase(self.phase)

    def report(self) -> dict[str, Any]:
        """Per phase, per destination and per scope; scope wall_s includes sub-scopes,
        scope bytes/rounds are inclusive sums over the scope and its sub-scopes."""
        inclusive: dict[str, Tally] = {}
        for path in self.scope_order:
            inclusive[path] = Tally(wall_s=self.scopes[path].wall_s)
        for path, tally in self.scopes.items():
            parts = path.split("/")
            for i in range(1, len(parts) + 1):
                prefix = "/".join(parts[:i])
                own = Tally(tally.bytes, tally.messages, tally.rounds, 0.0)
                inclusive[prefix].add(own)
        report: dict[str, Any] = {
            "phases": {p: t.as_dict() for p, t in self.phases.items()},
            "bytes_to": {str(k): v for k, v in sorted(self.bytes_to.items())},
            "scopes": [{"name": p, **inclusive[p].as_dict()} for p in self.scope_order],
        }
        if self.choices:
            report["choices"] = self.choices
        return report
