"""`privit profile` and `privit pareto`: measured private costs of the attention kinds.

* ``profile`` runs a model privately twice (2 parties + dealer, seeded random weights, one
  image): once with every head ReLU-softmax (alpha all 1), once with every head ScaleAttn
  (alpha all 0), and turns the per-layer ``layer{l}/attn`` scope costs into the per-head
  cost file that ``privit search --cost-file`` reads (:func:`privit.models.search.load_cost_file`).
* ``pareto`` retrains students for several ``mu`` (plus both ends and the softmax
  teacher), measures test accuracy and one private run each, and writes a table and an
  accuracy-vs-WAN-time plot.

Both are click commands registered by launch/cli.py (``PROFILE_COMMANDS``);
the heavy imports happen inside the functions.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

__all__ = ["METRICS", "profile_costs", "profile_command", "pareto_command", "run_pareto",
           "ParetoPoint", "write_pareto_outputs", "PROFILE_COMMANDS"]

METRICS = ("time", "wan_s", "lan_s", "bytes", "rounds")
"""``time``: projected seconds on ``--network``; ``wan_s`` / ``lan_s``: projected seconds
on that preset whatever ``--network`` says; ``bytes``: online bytes of one party;
``rounds``: online rounds (critical path)."""


# ------------------------------------------------------------------ profile
def _scope_cost(scope: dict[str, Any], metric: str, network: str, n_parties: int) -> float:
    """One scope's cost in `metric`.  Scope bytes are summed over the parties; the
    projection uses the per-party share (bytes / parties), as the report's projection
    uses the busiest party's bytes."""
    from privit.parties.config import NETWORK_PRESETS
    from privit.parties.netem import project_time

    per_party = scope["bytes"] / n_parties
    if metric == "bytes":
        return float(per_party)
    if metric == "rounds":
        return float(scope["rounds"])
    preset = {"time": network, "wan_s": "wan", "lan_s": "lan"}[metric]
    return float(project_time(float(scope["wall_s"]), int(round(per_party)), int(scope["rounds"]),
                              NETWORK_PRESETS[preset]))


def _attn_scopes(report: dict[str, Any], depth: int) -> list[dict[str, Any]]:
    by_name = {s["name"]: s for s in report["scopes"]}
    missing = [f"layer{i}/attn" for i in range(depth) if f"layer{i}/attn" not in by_name]
    if missing:
        raise ValueError(f"the private run reported no scope {missing[0]!r}")
    return [by_name[f"layer{i}/attn"] for i in range(depth)]


def profile_costs(model: str, network: str = "wan", metric: str = "time", seed: int = 0,
                  repeats: int = 1, timeout_s: float = 120.0) -> dict[str, Any]:
    """Measure the per-layer, per-head private cost of each attention kind of `model`.

    Two real private runs per repeat (run_local: 2 parties + dealer, network "none",
    seeded random "unit" weights, one image): all heads ReLU-softmax and all heads
    ScaleAttn.  For layer l with H heads, ``A_rs[l]`` / ``A_sc[l]`` are the costs of scope
    ``layer{l}/attn`` (the whole attention block: norm, qkv, scores, the attention map,
    context, proj) in the two runs; the file gets ``relu_softmax[l] = A_rs[l] / H`` and
    ``scale_attn[l] = A_sc[l] / H``.  Their difference is ``(A_rs[l] - A_sc[l]) / H``, the
    measured saving of switching one head; the shared part of the block (``A_sc / H``,
    the same in both) is spread over the heads, which does not change the cost term's
    gradient, only its normalisation ``c_max``.  Wall times (the compute part of a
    projected time) are the minimum over `repeats`; bytes and rounds are deterministic.

    Returns the JSON object (``unit``, ``model``, ``note``, ``relu_softmax``,
    ``scale_attn``: lists of L numbers).
    """
    from privit.launch.coordinator import run_local
    from privit.models.config import get_config
    from privit.parties.config import NETWORK_PRESETS, JobSpec, RunConfig

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if network not in NETWORK_PRESETS:
        raise ValueError(f"network must be one of {', '.join(NETWORK_PRESETS)}, got {network!r}")
    config = get_config(model)
    if config.teacher:
        raise ValueError(f"{model} is a softmax teacher; profile a student model")
    depth, heads = config.depth, config.heads
    tables: dict[str, list[float]] = {}
    for kind, digit in (("relu_softmax", "1"), ("scale_attn", "0")):
        alpha = ",".join([digit * heads] * depth)
        best: list[dict[str, Any]] | None = None
        for _ in range(max(1, repeats)):
            cfg = RunConfig(job=JobSpec.make("vit", model=model, alpha=alpha, batch=1),
                            seed=seed, timeout_s=timeout_s)
            scopes = _attn_scopes(run_local(cfg).report, depth)
            if best is None:
                best = [dict(s) for s in scopes]
            else:
                for row, s in zip(best, scopes, strict=True):
                    row["wall_s"] = min(row["wall_s"], s["wall_s"])
        assert best is not None
        tables[kind] = [_scope_cost(s, metric, network, cfg.n_parties) / heads for s in best]
    unit = {"bytes": "bytes", "rounds": "rounds"}.get(metric, "seconds")
    where = {"time": network, "wan_s": "wan", "lan_s": "lan"}.get(metric)
    what = {"bytes": "online bytes sent by one party", "rounds": "online rounds (critical path)"
            }.get(metric, f"projected online time on network {where!r} "
                          f"(compute + bytes/bandwidth + rounds x RTT)")
    note = (f"privit profile: per head per layer, one image, 2PC + dealer; {what}; "
            f"= cost of scope layer<l>/attn with all {heads} heads of that kind / {heads}")
    return {"unit": unit, "model": model, "note": note,
            "relu_softmax": [round(v, 9) for v in tables["relu_softmax"]],
            "scale_attn": [round(v, 9) for v in tables["scale_attn"]]}


@click.command("profile")
@click.option("--model", required=True, help="student registry name, e.g. vit_digits")
@click.option("--network", type=click.Choice(["none", "lan", "wan"]), default="wan",
              show_default=True, help="network of the projected time (metric 'time')")
@click.option("--metric", type=click.Choice(METRICS), default="time", show_default=True,
              help="time: projected seconds on --network; wan_s/lan_s; bytes; rounds")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="cost file (default: out/costs_<model>_<metric>.json)")
@click.option("--seed", type=int, default=0, show_default=True, help="random weights / image")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="runs per kind (the minimum wall time is kept)")
def profile_command(model: str, network: str, metric: str, out: str | None, seed: int,
                    repeats: int) -> None:
    """Measure one head's private cost of ReLU-softmax and ScaleAttn per layer -> cost file."""
    from privit.launch.coordinator import RunFailed

    try:
        costs = profile_costs(model, network, metric, seed, repeats)
    except (ValueError, KeyError, RunFailed) as err:
        raise click.ClickException(str(err)) from None
    path = Path(out or f"out/costs_{model}_{metric}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(costs, indent=1) + "\n")
    click.echo(f"{model}: unit {costs['unit']}")
    for layer, (rs, sc) in enumerate(zip(costs["relu_softmax"], costs["scale_attn"], strict=True)):
        click.echo(f"  layer {layer}: relu_softmax {rs:.6g}  scale_attn {sc:.6g}  "
                   f"(difference {rs - sc:.6g})")
    click.echo(f"wrote {path}")


# ------------------------------------------------------------------ pareto
@dataclass
class ParetoPoint:
    """One model of the Pareto sweep."""

    label: str
    mu: float | None          # None for the softmax teacher
    path: str
    top1: float               # plaintext test top-1, percent (whole test split)
    images: int               # images of the private run
    mpc_top1: float           # private top-1 on those images, percent
    plain_top1: float         # plaintext top-1 on the same images, percent
    agreement: float          # private vs plaintext argmax agreement, percent
    bytes: int                # online bytes (all parties)
    rounds: int
    lan_s: float
    wan_s: float
    train_s: float            # retrain seconds of this call (0 when reused)


def private_point(path: str, images: int, seed: int = 0) -> dict[str, Any]:
    """One private run (run_local, vit job) of checkpoint `path` on the first `images`
    digits test images: online bytes, rounds, projected LAN/WAN seconds, private and
    plaintext top-1 on those images and their argmax agreement (percent)."""
    from privit.launch.coordinator import run_local
    from privit.launch.role_inputs import RoleInputs
    from privit.parties.config import JobSpec, RunConfig

    cfg = RunConfig(job=JobSpec.make("vit", batch=images), seed=seed, timeout_s=120.0)
    rep = run_local(cfg, inputs=RoleInputs(checkpoint=str(path))).report
    acc = rep.get("accuracy", {})
    nan = float("nan")
    return {"images": images, "mpc_top1": 100.0 * float(acc.get("mpc_top1", nan)),
            "plain_top1": 100.0 * float(acc.get("plain_top1", nan)),
            "agreement": 100.0 * float(acc.get("argmax_agreement", nan)),
            "bytes": int(rep["online"]["bytes"]), "rounds": int(rep["online"]["rounds"]),
            "lan_s": float(rep["projected"]["lan_s"]), "wan_s": float(rep["projected"]["wan_s"])}


def write_pareto_outputs(points: list[ParetoPoint], out_dir: str | Path,
                         meta: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write results.json, results.md (a table) and pareto.png (accuracy vs WAN time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "results.json", "md": folder / "results.md",
             "png": folder / "pareto.png"}
    paths["json"].write_text(json.dumps({"meta": meta or {},
                                         "points": [asdict(p) for p in points]}, indent=1))
    lines = ["| model | mu | test top-1 | private / plaintext top-1 (images) | argmax agree "
             "| online MB | rounds | LAN s | WAN s |", "|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        mu = "-" if p.mu is None else f"{p.mu:g}"
        lines.append(f"| {p.label} | {mu} | {p.top1:.2f} % | {p.mpc_top1:.1f} / "
                     f"{p.plain_top1:.1f} % ({p.images}) | {p.agreement:.1f} % "
                     f"| {p.bytes / 1e6:.3f} | {p.rounds} | {p.lan_s:.3f} | {p.wan_s:.3f} |")
    paths["md"].write_text("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    students = [p for p in points if p.mu is not None]
    ax.scatter([p.wan_s for p in students], [p.top1 for p in students], color="tab:blue",
               label="retrained student")
    others = [p for p in points if p.mu is None]
    if others:
        ax.scatter([p.wan_s for p in others], [p.top1 for p in others], color="tab:red",
                   marker="s", label="softmax teacher")
    for p in points:
        ax.annotate(p.label, (p.wan_s, p.top1), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    images = points[0].images if points else 0
    ax.set_xlabel(f"projected WAN online time, s ({images} images)")
    ax.set_ylabel("test top-1, %")
    ax.margins(x=0.15, y=0.1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("privit: accuracy vs private cost", fontsize=10)
    fig.tight_layout()
    fig.savefig(paths["png"], dpi=110)
    plt.close(fig)
    return paths


def _label(mu: float) -> str:
    if mu == 0:
        return "all ScaleAttn (mu=0)"
    if mu == 1:
        return "all ReLU-softmax (mu=1)"
    return f"mu={mu:g}"


def run_pareto(dataset: str = "digits", mus: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7),
               teacher: str | None = None, searched: str | None = None, epochs: int = 120,
               search_epochs: int = 30, out_dir: str = "out/pareto", images: int = 16,
               kd: bool = True, seed: int = 0, progress: bool = False,
               echo: Any = print) -> list[ParetoPoint]:
    """The sweep: retrain (or reuse) one student per mu in `mus` + {0, 1}, add the teacher,
    measure each, write the outputs; returns the points (students by mu, then teacher).

    Checkpoints are ``<out_dir>/<model>_mu<mu>.pth.tar`` (resumed/reused when present: a
    finished one only reports).  Without `searched`, a search of `search_epochs` epochs
    is run (or reused) at ``<out_dir>/<model>_search.pth.tar``; only the ranking of its
    alphas matters (mu = 0 and 1 do not depend on it).  The teacher, when given, is the
    KD teacher (`kd`) and a point of its own.
    """
    import torch

    from privit.launch.train_settings import _STUDENTS, DATASET_DEFAULTS
    from privit.models.checkpoint import load_checkpoint
    from privit.models.data import load_dataset
    from privit.models.distill import retrain
    from privit.models.search import search
    from privit.models.train import evaluate

    if dataset != "digits":
        raise ValueError("pareto: only the digits dataset is supported (the private runs use "
                         "the digits test images)")
    start = time.perf_counter()
    defaults = DATASET_DEFAULTS[dataset]
    model_name = _STUDENTS[dataset]
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(defaults["threads"] or previous_threads)
    try:
        data = load_dataset(dataset, seed=seed)
        run = {"lr": defaults["lr"], "batch": defaults["batch"], "seed": seed,
               "resume": True, "progress": progress}
        settings = {k: defaults[k] for k in ("weight_decay", "label_smoothing", "warmup_epochs",
                                             "attn_dropout", "drop_path")}
        if searched is None:
            searched = str(folder / f"{model_name}_search.pth.tar")
            _, res = search(model_name, data, out_path=searched, epochs=search_epochs,
                            **run, **settings)
            echo(f"search: {res.top1:.2f} % ({res.seconds:.1f} s); wrote {searched}")
        all_mus = sorted({0.0, 1.0, *(float(m) for m in mus)})
        points: list[ParetoPoint] = []
        for mu in all_mus:
            path = str(folder / f"{model_name}_mu{mu:g}.pth.tar")
            model, res = retrain(model_name, data, searched, mu, epochs=epochs, out_path=path,
                                 teacher_path=teacher if (kd and teacher) else None,
                                 **run, **settings)
            top1 = evaluate(model, data)
            priv = private_point(path, images, seed)
            points.append(ParetoPoint(_label(mu), mu, path, top1, train_s=res.seconds, **priv))
            echo(f"{_label(mu)}: top-1 {top1:.2f} %, WAN {priv['wan_s']:.3f} s "
                 f"(retrain {res.seconds:.1f} s)")
        if teacher is not None:
            tmodel, _ = load_checkpoint(teacher)
            top1 = evaluate(tmodel.eval(), data)
            priv = private_point(teacher, images, seed)
            points.append(ParetoPoint("softmax teacher", None, str(teacher), top1, train_s=0.0,
                                      **priv))
            echo(f"softmax teacher: top-1 {top1:.2f} %, WAN {priv['wan_s']:.3f} s")
    finally:
        torch.set_num_threads(previous_threads)
    meta = {"dataset": dataset, "model": model_name, "epochs": epochs, "kd": bool(kd and teacher),
            "teacher": teacher, "searched": searched, "images": images, "seed": seed,
            "seconds": time.perf_counter() - start}
    paths = write_pareto_outputs(points, folder, meta)
    echo(f"pareto done in {meta['seconds']:.1f} s")
    for point in points:
        if point.mu is not None:  # the students; the teacher was only read
            echo(f"wrote {point.path}")
    for written in paths.values():
        echo(f"wrote {written}")
    return points


def _default_teacher() -> str | None:
    from privit.launch.vit_job import assets_dir

    path = assets_dir() / "vit_digits_teacher.pth.tar"
    return str(path) if path.is_file() else None


def _parse_mus(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of numbers: {text!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise click.BadParameter("each mu must be in [0, 1]")
    return values


@click.command("pareto")
@click.option("--dataset", type=click.Choice(["digits"]), default="digits", show_default=True,
              help="dataset of the sweep (digits only: every point is trained here)")
@click.option("--mus", default="0.1,0.3,0.5,0.7", show_default=True,
              help="comma-separated mu values (0 and 1 are always added)")
@click.option("--teacher", type=click.Path(dir_okay=False, exists=True), default=None,
              help="softmax teacher (KD + its own point; default: the shipped digits teacher)")
@click.option("--no-teacher", is_flag=True, default=False,
              help="no teacher: plain CE retraining and no teacher point")
@click.option("--searched", type=click.Path(dir_okay=False, exists=True), default=None,
              help="search checkpoint (default: search --search-epochs into --out-dir)")
@click.option("--epochs", type=click.IntRange(min=1), default=120, show_default=True,
              help="retrain epochs per model")
@click.option("--search-epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="epochs of the search when --searched is not given")
@click.option("--images", type=click.IntRange(1, 360), default=16, show_default=True,
              help="digits test images of each private run")
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed of the search, the retrains and the private runs")
@click.option("--out-dir", type=click.Path(file_okay=False), default="out/pareto",
              show_default=True,
              help="folder (under the current directory by default) for the checkpoints, "
                   "results.json, results.md and pareto.png")
@click.option("--progress/--quiet", default=False, show_default=True, help="training bars")
def pareto_command(dataset: str, mus: str, teacher: str | None, no_teacher: bool,
                   searched: str | None, epochs: int, search_epochs: int, images: int,
                   seed: int, out_dir: str, progress: bool) -> None:
    """Accuracy vs private cost: retrain per mu, measure, write a table and a plot."""
    from privit.launch.coordinator import RunFailed
    from privit.models.checkpoint import CheckpointError

    if no_teacher and teacher:
        raise click.UsageError("--teacher and --no-teacher exclude each other")
    if not no_teacher and teacher is None:
        teacher = _default_teacher()
    try:
        run_pareto(dataset, _parse_mus(mus), teacher, searched, epochs, search_epochs, out_dir,
                   images, kd=teacher is not None, seed=seed, progress=progress,
                   echo=click.echo)
    except CheckpointError as err:
        raise click.ClickException(f"checkpoint: {err}") from None
    except (ValueError, RunFailed) as err:
        raise click.ClickException(str(err)) from None


PROFILE_COMMANDS = (profile_command, pareto_command)
"""The commands of this module, registered by launch/cli.py."""
