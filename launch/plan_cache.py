"""The dealer's traced plan, cached on disk by everything the trace depends on.

The dealer learns its plan by running the whole job on a tracing session (docs/design.md,
"Offline"): at ViT-Base that computes on zero tensors of the real shapes for 20-45 s on
the 2-core VM, before any material flows. The plan is a pure function of the code, the
run's shared config (`RunConfig.hash_fields` but the run's session id: job spec,
protocols, precision, network for `auto`) and what the parties announced (party 0's
public architecture, party 1's batch), so a second run with the same three reads it back
instead.

Key: sha256 of privit's version, a digest of privit's own source files (any code change is
a new key), the config's hashed fields (PROTOCOL_VERSION among them) and the
announcements. File:
`cache_dir()/plans/plan-<key>.json` (protocols/matmul_calibration.cache_dir), written
atomically; a file that does not parse, or whose key or contents do not check, is ignored
and traced again. Only the public plan is stored (request kinds and parameters, the scope
of each): no seed, weight or image. A wrong plan cannot go unnoticed: each party checks
every request it receives against its own (parties/offline.py). PRIVIT_PLAN_CACHE=off
turns the cache off (every run traces).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privit.parties.config import RunConfig
from privit.parties.jsonfile import write_json_atomically
from privit.parties.session import Params
from privit.protocols.matmul_calibration import cache_dir

FORMAT = 1
ENV_SWITCH = "PRIVIT_PLAN_CACHE"


@dataclass(frozen=True)
class Plan:
    """The ordered requests of a job and the report scope of each."""

    requests: list[tuple[str, Params]]
    scopes: list[str]


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "on").lower() not in ("off", "0", "no")


@functools.cache
def source_digest() -> str:
    """sha256 over privit's own .py files (name and bytes), ~5 ms once per process."""
    digest = hashlib.sha256()
    for name in ("privit", "privit.parties", "privit.protocols", "privit.models",
                 "privit.launch"):
        for folder in importlib.import_module(name).__path__:
            for path in sorted(Path(folder).glob("*.py")):
                digest.update(f"{name}.{path.name}".encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def plan_key(cfg: RunConfig, announcements: Sequence[dict[str, Any] | None]) -> str:
    import privit

    config = cfg.hash_fields()
    config.pop("session_id")  # one run's id: the plan does not depend on it
    blob = json.dumps({"format": FORMAT, "privit": privit.__version__, "source": source_digest(),
                       "config": config, "announced": list(announcements)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _path(key: str) -> Path:
    return cache_dir() / "plans" / f"plan-{key[:32]}.json"


def _as_params(value: Any) -> Any:
    """JSON lists back to the tuples a trace records (parameters are nested tuples of
    ints, floats and strings)."""
    return tuple(_as_params(v) for v in value) if isinstance(value, list) else value


def load(key: str) -> Plan | None:
    """The cached plan for `key`, or None (no file, another key, anything malformed)."""
    if not enabled():
        return None
    try:
        data = json.loads(_path(key).read_text())
        if not isinstance(data, dict) or data.get("key") != key or data.get("format") != FORMAT:
            return None
        requests = [(str(kind), _as_params(params)) for kind, params in data["requests"]]
        scopes = [str(s) for s in data["scopes"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(scopes) != len(requests):
        return None
    return Plan(requests, scopes)


def store(key: str, plan: Plan) -> bool:
    """Cache `plan` under `key` if it reads back exactly (parameters JSON can hold);
    True if written. A cache that cannot be written is not an error."""
    if not enabled():
        return False
    data = {"format": FORMAT, "key": key, "requests": [[k, p] for k, p in plan.requests],
            "scopes": plan.scopes}
    try:
        again = [(k, _as_params(p)) for k, p in json.loads(json.dumps(data))["requests"]]
    except (TypeError, ValueError):
        return False
    if again != list(plan.requests):
        return False
    write_json_atomically(_path(key), data)
    return True
