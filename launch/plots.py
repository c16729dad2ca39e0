"""Plots of a run report: the cost of each top-level scope (weights, embed, layer l, head).

`plot_layer_costs(report, path)` writes one PNG with three bar panels sharing the x axis:
online MB (sent by all parties), dealer MB (the offline material, all parties) and online
rounds (critical path), each bar labelled with its value; the title names the job, the
network, the accuracy against plaintext and the totals. Uses matplotlib's Agg backend, so
it needs no display.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def top_level_scopes(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's scopes without a '/' in their name, in run order."""
    return [s for s in report.get("scopes", []) if "/" not in s["name"]]


def plot_title(report: dict[str, Any]) -> str:
    """Two lines: job, model and network; accuracy and totals."""
    job = report.get("job", {})
    what = report.get("model") or job.get("params", {}).get("model") or ""
    net = report.get("network", {}).get("name", "")
    online, offline = report.get("online", {}), report.get("offline", {})
    first = f"{job.get('name', '')} {what}  network {net}".strip()
    acc = report.get("accuracy", {})
    if "argmax_agreement" in acc:
        accuracy = f"argmax agreement {acc['argmax_agreement']:.1%}"
        if "mpc_top1" in acc:
            accuracy += f", top-1 {acc['mpc_top1']:.1%} (plaintext {acc['plain_top1']:.1%})"
    elif "max_abs_error" in acc:
        accuracy = f"max abs error {acc['max_abs_error']:.3g}"
    else:
        accuracy = "accuracy not checked"
    totals = (f"online {online.get('bytes', 0) / 1e6:.2f} MB, dealer "
              f"{offline.get('bytes', 0) / 1e6:.2f} MB, {online.get('rounds', 0)} rounds, "
              f"{online.get('wall_s', 0.0):.2f} s online")
    return f"{first}: {accuracy}\n{totals}"


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
    panels = [
        ("online MB (all parties)", [s["bytes"] / 1e6 for s in scopes], "tab:blue", "{:.2f}"),
        ("dealer MB (all parties)", [s.get("offline_bytes", 0) / 1e6 for s in scopes],
         "tab:purple", "{:.2f}"),
        ("online rounds", [s["rounds"] for s in scopes], "tab:orange", "{:d}"),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.6 * len(names) + 2), 8.0),
                             sharex=True)
    for ax, (label, values, color, fmt) in zip(axes, panels, strict=True):
        bars = ax.bar(xs, values, 0.6, color=color)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=7, padding=1)
        ax.set_ylabel(label, fontsize=8)
        ax.margins(y=0.2)  # room for the labels above the tallest bar
        ax.grid(axis="y", alpha=0.3)
    axes[-1].set_xticks(xs)
    axes[-1].set_xticklabels(names, rotation=45, ha="right")
    fig.suptitle(title if title is not None else plot_title(report), fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
