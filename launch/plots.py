"""Plots of a run report: the cost of each top-level scope (weights, embed, layer l, head).

`plot_layer_costs(report, path)` writes one PNG with three bar panels sharing the x axis:
online bytes (MB, all parties, with the dealer's offline payload as a lighter bar),
rounds (critical path) and wall time (ms, slowest party). Uses matplotlib's Agg backend,
so it needs no display.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def top_level_scopes(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's scopes without a '/' in their name, in run order."""
    return [s for s in report.get("scopes", []) if "/" not in s["name"]]


def plot_layer_costs(report: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Write the per-layer cost figure to `path` (PNG); returns the path."""
    import matplotlib  # here: ~0.5 s that only --plot pays

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scopes = top_level_scopes(report)
    if not scopes:
        raise ValueError("the report has no scopes to plot")
    names = [s["name"] for s in scopes]
    xs = list(range(len(names)))
    online_mb = [s["bytes"] / 1e6 for s in scopes]
    offline_mb = [s.get("offline_bytes", 0) / 1e6 for s in scopes]
    rounds = [s["rounds"] for s in scopes]
    wall_ms = [s["wall_s"] * 1e3 for s in scopes]

    fig, axes = plt.subplots(3, 1, figsize=(max(6.0, 0.55 * len(names) + 2), 7.5), sharex=True)
    width = 0.4
    axes[0].bar([x - width / 2 for x in xs], online_mb, width, label="online", color="tab:blue")
    axes[0].bar([x + width / 2 for x in xs], offline_mb, width, label="offline (dealer)",
                color="tab:blue", alpha=0.35)
    axes[0].set_ylabel("MB")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].bar(xs, rounds, 0.6, color="tab:orange")
    axes[1].set_ylabel("rounds")
    axes[2].bar(xs, wall_ms, 0.6, color="tab:green")
    axes[2].set_ylabel("wall ms")
    axes[2].set_xticks(xs)
    axes[2].set_xticklabels(names, rotation=45, ha="right")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    if title is None:
        job = report.get("job", {})
        params = job.get("params", {})
        what = report.get("model") or params.get("model") or ""
        net = report.get("network", {}).get("name", "")
        online = report.get("online", {})
        title = (f"{job.get('name', '')} {what}  network {net}: "
                 f"{online.get('bytes', 0) / 1e6:.1f} MB, {online.get('rounds', 0)} rounds, "
                 f"{online.get('wall_s', 0.0):.2f} s online")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
