"""Merge the per-role reports of one run into the run report (JSON) and print it.

Fields (docs/design.md "Measurement conventions"; later issues add to them):
  schema_version    SCHEMA_VERSION: bumped when a field changes meaning or goes away;
                    a report without it is version 1 (`privit report` reads both)
  privit_version    the version of privit that built the report
  environment       versions (privit, python, torch, numpy, pyzmq, libzmq) and machine
                    (cpu, cores, os, platform, arch) of the process that built the report
                    (launch/environment.py; for `privit report`, the merging machine)
  command           the command line (`privit run ...`, program name shortened; the
                    arguments as the user gave them); `privit run` only
  seed              the seed of the job's random inputs (also in config)
  auto_choices      what each "auto" setting picked, counted per call, on the run's
                    network ("run") and on the LAN and WAN presets ("lan", "wan"): e.g.
                    {"compare": {"run": {"fss": 9, "adder": 4}, "wan": {"fss": 13}, ...}}
  online.bytes      bytes sent by all parties in the online phase, headers included
  online.rounds     the critical path: max over parties of online rounds
  online.wall_s     slowest party, from the start of the online phase to its result
  offline.bytes     bytes sent in the offline phase (the dealer's payloads and headers)
  offline.source    "disk" when the parties read preprocessed material (`privit run
                    --material`; no dealer ran, offline.bytes is then 0), with
                    from_disk_bytes (payload read, all parties), from_disk_file_bytes,
                    material_id
  offline.plan      where the dealer's plan came from: source "traced" (the job run on a
                    tracing session) or "cache" (a previous run's trace of the same code,
                    config and announcements, launch/plan_cache.py), and wall_s it took
  setup.bytes       handshake and barrier traffic (not part of either phase)
  per_party         bytes/rounds/wall of each role
  scopes            per named scope (layer, op): online bytes (all parties), rounds
                    (max), wall (slowest party), offline payload bytes (dealer)
  network           the emulated network of the run
  security          channels: "curve" (authenticated, encrypted) or "insecure"
  model, arch_hash  vit: the public architecture every role ran, and its hash
  checkpoint_sha256 vit: sha256 of party 0's checkpoint file (party 0's report only)
  projected         lan_s, wan_s: T = compute + bytes/bandwidth + rounds x RTT (docs/design.md's
                    formula; a round charged a full RTT, an upper bound), where bytes is the
                    most any one party sent (links are full duplex);
                    lan_exchange_s, wan_exchange_s: the same with rounds x RTT/2, which is
                    what a symmetric exchange round costs under the transport's emulation
                    (and Cheetah's tc netem); compute_s is the measured online wall less
                    the emulated network's own share of it (bytes/bandwidth + rounds x RTT/2)
  total             the whole command (`privit run`; absent where one process did not
                    start every role): wall_s from the command's process start to its
                    result, and apart: startup_s (to the last role ready: imports, inputs,
                    job), handshake_s, offline_s (the parties reading and expanding dealer
                    material before the online phase), online_s, other_s (the rest:
                    barrier, bye, the plaintext reference, exits), which add up to wall_s;
                    offline_during_online_s (material streamed in during the online phase,
                    the slowest party's reading: inside online_s); bytes = online.bytes +
                    offline.bytes (dealer material); peak_rss_mb per role;
                    launcher_peak_rss_mb, the peak of `privit run`'s own process (it
                    computes the plaintext reference)
  accuracy          max abs error of the opened outputs against the plaintext reference;
                    for a `logits` output also images, argmax_agreement (private vs
                    plaintext argmax), max_abs_logit_error and, when the job knows the
                    labels, mpc_top1 and plain_top1 (fractions)
"""
from __future__ import annotations

from typing import Any

import torch

from privit import __version__
from privit.parties.config import NETWORK_PRESETS, NetworkConfig, RunConfig
from privit.parties.netem import project_time

# Bump when a field changes meaning or goes away (adding one is compatible).
# 1: before the field existed; 2: schema_version, environment, command, seed, auto_choices.
SCHEMA_VERSION = 2


def _phase(rep: dict[str, Any], phase: str) -> dict[str, Any]:
    return rep["counters"]["phases"][phase]


def outputs_of(rep: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v["data"], dtype=torch.float64).reshape(v["shape"])
            for k, v in rep.get("outputs", {}).items()}


def report_version(report: dict[str, Any]) -> int:
    """The schema version of a run or role report (1: written before the field existed)."""
    version = report.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"schema_version must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ValueError(f"the report has schema version {version}; this privit "
                         f"({__version__}) reads up to {SCHEMA_VERSION}: upgrade privit")
    return version


def build_report(cfg: RunConfig, roles: list[dict[str, Any]],
                 reference: dict[str, torch.Tensor] | None,
                 command_span: tuple[float, float] | None = None,
                 environment: dict[str, Any] | None = None,
                 launcher_peak_mb: float | None = None) -> dict[str, Any]:
    """The run report from every role's report; `command_span` (start, end as time.time())
    of the whole command gives the `total` block, when one process ran every role, and
    `launcher_peak_mb` that process's own peak; `environment` (launch/environment.py)
    where the caller has it."""
    parties = [r for r in roles if r["role"] != cfg.dealer_id]
    # No dealer report: the parties read preprocessed material from disk (parties/material.py).
    dealer = next((r for r in roles if r["role"] == cfg.dealer_id), {})
    from_disk = [r["material"] for r in parties if r.get("material", {}).get("source") == "disk"]
    online_bytes = sum(_phase(r, "online")["bytes"] for r in parties)
    online_rounds = max(_phase(r, "online")["rounds"] for r in parties)
    online_wall = max(r["online_wall_s"] for r in parties)
    max_party_bytes = max(_phase(r, "online")["bytes"] for r in parties)
    offline_bytes = sum(_phase(r, "offline")["bytes"] for r in roles)
    setup_bytes = sum(_phase(r, "setup")["bytes"] for r in roles)

    scopes: dict[str, dict[str, Any]] = {}
    for rep in parties:
        for s in rep["counters"]["scopes"]:
            row = scopes.setdefault(s["name"], {"name": s["name"], "bytes": 0, "rounds": 0,
                                                "wall_s": 0.0, "offline_bytes": 0})
            row["bytes"] += s["bytes"]
            row["rounds"] = max(row["rounds"], s["rounds"])
            row["wall_s"] = max(row["wall_s"], s["wall_s"])
    for name, nbytes in dealer.get("offline_payload_by_scope", {}).items():
        # a request belongs to its innermost scope; credit every enclosing scope too
        parts = name.split("/") if name else []
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if prefix in scopes:
                scopes[prefix]["offline_bytes"] += nbytes

    net = cfg.network
    emulated_share = 0.0
    if net.emulated:
        transfer = max_party_bytes * 8 / net.bandwidth_bps if net.bandwidth_bps > 0 else 0.0
        emulated_share = transfer + online_rounds * net.latency_s
    compute_s = max(online_wall - emulated_share, 0.0)
    projected: dict[str, float] = {}
    for name in ("lan", "wan"):
        preset = NETWORK_PRESETS[name]
        projected[f"{name}_s"] = project_time(compute_s, max_party_bytes, online_rounds, preset)
        projected[f"{name}_exchange_s"] = (projected[f"{name}_s"]
                                           - online_rounds * (preset.rtt_s - preset.latency_s))
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "privit_version": __version__,
        **({"environment": environment} if environment is not None else {}),
        "seed": cfg.seed,
        "job": {"name": cfg.job.name, "params": dict(cfg.job.params)},
        "config": cfg.to_dict(),
        "online": {"bytes": online_bytes, "rounds": online_rounds, "wall_s": online_wall,
                   "messages": sum(_phase(r, "online")["messages"] for r in parties)},
        "offline": {"bytes": offline_bytes, "wall_s": dealer.get("offline_wall_s", 0.0),
                    "requests": dealer.get("requests", 0),
                    "request_kinds": dealer.get("request_kinds", {}),
                    **({"plan": {"source": dealer["plan_source"],
                                 "wall_s": dealer.get("trace_wall_s", 0.0)}}
                       if "plan_source" in dealer else {}),
                    **(material_from_disk(from_disk, parties) if from_disk else {})},
        "setup": {"bytes": setup_bytes},
        "per_party": [
            {"role": r["name"], "online_bytes": _phase(r, "online")["bytes"],
             "offline_bytes": _phase(r, "offline")["bytes"],
             "online_rounds": _phase(r, "online")["rounds"],
             "online_wall_s": r.get("online_wall_s", 0.0),
             "offline_wall_s": r.get("offline_wall_s", 0.0),
             **({"offline_prefetch_s": r["offline_prefetch_s"]}
                if "offline_prefetch_s" in r else {}),
             "peak_rss_mb": r.get("peak_rss_mb"),
             **({"stream": r["stream"]} if "stream" in r else {}),
             "bytes_to": r["counters"]["bytes_to"]}
            for r in sorted(roles, key=lambda r: r["role"])
        ],
        "scopes": list(scopes.values()),
        "network": network_dict(net),
        "security": {"channels": cfg.channels},
        # The public architecture every role ran (its hash) and party 0's file, by hash only.
        **{key: value for key in ("model", "arch_hash", "checkpoint_sha256")
           for value in [next((r[key] for r in roles if r.get(key)), None)] if value},
        "projected": {**projected, "compute_s": compute_s},
    }
    choices = parties[0]["counters"].get("choices")
    if choices:
        report["auto_choices"] = choices
    if command_span is not None:
        report["total"] = whole_run(command_span, roles, parties, online_bytes + offline_bytes,
                                    online_wall)
        if launcher_peak_mb is not None:
            report["total"]["launcher_peak_rss_mb"] = launcher_peak_mb
    if reference is not None:
        report["accuracy"] = accuracy(outputs_of(parties[0]), reference,
                                      [outputs_of(r) for r in parties])
    return report


def material_from_disk(material: list[dict[str, Any]],
                       parties: list[dict[str, Any]]) -> dict[str, Any]:
    """The offline block's fields when the parties read preprocessed material from disk:
    no dealer ran, the offline phase's wire bytes are 0, and these say what was read."""
    return {"source": "disk", "material_id": material[0]["material_id"],
            "from_disk_bytes": sum(m["payload_bytes"] for m in material),
            "from_disk_file_bytes": sum(m["file_bytes"] for m in material),
            "requests": material[0]["requests"],
            "wall_s": max(r.get("offline_wall_s", 0.0) for r in parties)}


def whole_run(span: tuple[float, float], roles: list[dict[str, Any]],
              parties: list[dict[str, Any]], total_bytes: int, online_s: float) -> dict[str, Any]:
    """The `total` block: the command's wall time split at the roles' marks (the slowest
    role at each step), its bytes, and each role's peak resident memory."""
    start, end = span
    marks = [r.get("marks", {}) for r in roles]
    ready = max((m.get("ready", start) for m in marks), default=start)
    handshake = max((m.get("handshake_done", ready) for m in marks), default=ready)
    # Before the online phase; what a party reads while online lies inside the online wall
    # (its own reading, or the waits of the others), shown apart and not added again.
    offline_s = max((r.get("offline_prefetch_s", r.get("offline_wall_s", 0.0))
                     for r in parties), default=0.0)
    streamed_s = max((r.get("offline_wall_s", 0.0) - r.get("offline_prefetch_s",
                                                             r.get("offline_wall_s", 0.0))
                      for r in parties), default=0.0)
    wall = end - start
    parts = {"startup_s": ready - start, "handshake_s": handshake - ready,
             "offline_s": offline_s, "online_s": online_s}
    return {"wall_s": wall, **parts, "other_s": max(wall - sum(parts.values()), 0.0),
            "offline_during_online_s": streamed_s,
            "bytes": total_bytes,
            "peak_rss_mb": {r["name"]: r.get("peak_rss_mb")
                            for r in sorted(roles, key=lambda r: r["role"])}}


def network_dict(net: NetworkConfig) -> dict[str, Any]:
    return {"name": net.name, "rtt_ms": net.rtt_s * 1e3,
            "bandwidth_mbps": net.bandwidth_bps / 1e6 if net.bandwidth_bps else None}


def accuracy(outputs: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
             all_outputs: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    errors = {}
    for name, ref in reference.items():
        if name == "labels":  # ground truth for top-1 (party 1's), not an output
            continue
        if name not in outputs:
            raise ValueError(f"the private run produced no output {name!r}")
        got = outputs[name]
        if got.shape != ref.shape:
            raise ValueError(f"output {name!r} has shape {list(got.shape)}, reference {list(ref.shape)}")
        errors[name] = float((got - ref).abs().max()) if got.numel() else 0.0
    agree = all(
        torch.equal(o[name], outputs[name]) for o in all_outputs for name in outputs
    )
    result: dict[str, Any] = {"max_abs_error": max(errors.values(), default=0.0),
                              "per_output": errors, "parties_agree": agree}
    if "logits" in reference:
        result.update(logit_accuracy(outputs["logits"], reference["logits"],
                                     reference.get("labels")))
    return result


def logit_accuracy(mpc: torch.Tensor, plain: torch.Tensor,
                   labels: torch.Tensor | None) -> dict[str, Any]:
    """Classifier fields for a `logits` output (B, classes): the share of images whose
    private argmax equals the plaintext argmax, the largest logit error, and with labels
    the top-1 accuracy of both (fractions in [0, 1])."""
    out: dict[str, Any] = {
        "images": int(mpc.shape[0]) if mpc.dim() else 0,
        "max_abs_logit_error": float((mpc - plain).abs().max()) if mpc.numel() else 0.0,
        "argmax_agreement": float((mpc.argmax(-1) == plain.argmax(-1)).double().mean())
        if mpc.numel() else 1.0,
    }
    if labels is not None and mpc.numel():
        target = labels.round().to(torch.int64)
        out["mpc_top1"] = float((mpc.argmax(-1) == target).double().mean())
        out["plain_top1"] = float((plain.argmax(-1) == target).double().mean())
    return out
