"""The dealer's plan cache (launch/plan_cache.py): a second run of the same code, config and
announcements reads the plan instead of tracing, with the same bytes, rounds and logits; the
key changes with what the plan depends on; a bad cache file is ignored; the switch works."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from privit.launch import plan_cache
from privit.parties.config import RunConfig

PRIVIT = [sys.executable, "-m", "privit.launch.cli"]


def _run(tmp_path: Path, name: str, cache: Path, switch: str = "on") -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), plan_cache.ENV_SWITCH: switch}
    proc = subprocess.run(PRIVIT + ["run", "--insecure", "--json", str(out), "--save-logits",
                                    str(tmp_path / f"{name}.pt")],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def _costs(report: dict[str, Any]) -> tuple[Any, ...]:
    return (report["online"]["bytes"], report["online"]["rounds"], report["offline"]["bytes"],
            report["offline"]["requests"], report["offline"]["request_kinds"],
            [(s["name"], s["bytes"], s["rounds"], s["offline_bytes"]) for s in report["scopes"]])


def test_second_run_reads_the_cached_plan(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _run(tmp_path, "first", cache)
    second = _run(tmp_path, "second", cache)
    assert first["offline"]["plan"]["source"] == "traced"
    assert second["offline"]["plan"]["source"] == "cache"
    assert len(list((cache / "privit" / "plans").glob("plan-*.json"))) == 1
    assert _costs(second) == _costs(first)
    # fresh shares each run (local truncation's error is random): the same accuracy bound
    assert max(r["accuracy"]["max_abs_logit_error"] for r in (first, second)) < 1e-2
    off = _run(tmp_path, "off", cache, switch="off")
    assert off["offline"]["plan"]["source"] == "traced"
    assert _costs(off) == _costs(first)


def _cfg(**changes: Any) -> RunConfig:
    return RunConfig.from_dict({**RunConfig().to_dict(), **changes})


def test_key_follows_config_and_announcements() -> None:
    base = plan_cache.plan_key(_cfg(), ({"arch": {"a": 1}}, {"batch": 2}))
    assert base == plan_cache.plan_key(_cfg(), ({"arch": {"a": 1}}, {"batch": 2}))
    assert base != plan_cache.plan_key(_cfg(), ({"arch": {"a": 1}}, {"batch": 3}))
    assert base != plan_cache.plan_key(_cfg(), ({"arch": {"a": 2}}, {"batch": 2}))
    assert base != plan_cache.plan_key(_cfg(frac_bits=20), ({"arch": {"a": 1}}, {"batch": 2}))
    # a run's own id and what each process may set for itself are not part of the plan
    for own in ({"memory_budget_mb": 999}, {"session_id": "0123456789ab"}):
        assert base == plan_cache.plan_key(_cfg(**own), ({"arch": {"a": 1}}, {"batch": 2}))


def test_store_load_and_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(plan_cache.ENV_SWITCH, "on")
    plan = plan_cache.Plan([("triple", (1, 2, 3)), ("adder_gate", (4, ("x", 5), 0.5))],
                           ["layer0", "layer0/mlp"])
    key = "ab" * 32
    assert plan_cache.store(key, plan)
    assert plan_cache.load(key) == plan
    assert plan_cache.load("cd" * 32) is None
    path = next((tmp_path / "privit" / "plans").glob("plan-*.json"))
    for text in ("{not json", json.dumps({"format": 1, "key": key, "requests": [["a", [1]]],
                                          "scopes": []}),
                 json.dumps({"format": 1, "key": "other", "requests": [], "scopes": []})):
        path.write_text(text)
        assert plan_cache.load(key) is None, text
    # parameters JSON cannot give back exactly are not cached
    assert not plan_cache.store(key, plan_cache.Plan([("triple", ([1, 2],))], ["x"]))
    monkeypatch.setenv(plan_cache.ENV_SWITCH, "off")
    assert not plan_cache.store(key, plan)
