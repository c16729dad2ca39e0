"""`privit train | search | retrain | pipeline`: plaintext training of ViT-Lite models.

Standalone click commands, registered on the main group by launch/cli.py with
``main.add_command(...)``.  Heavy imports (torch, the models) happen inside the
commands so that other ``privit`` commands start fast.

Every option left unset takes the dataset's default from :data:`DATASET_DEFAULTS`
(digits: small and fast; CIFAR / Tiny-ImageNet: MPCViT-like settings).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

__all__ = ["DATASET_DEFAULTS", "train_command", "search_command", "retrain_command",
           "pipeline_command", "TRAIN_COMMANDS"]

from privit.launch.train_settings import _DATASETS, _STUDENTS, DATASET_DEFAULTS


# ------------------------------------------------------------------ helpers
def _options(options: list[Callable[..., Any]]) -> Callable[..., Any]:
    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func
    return apply


_COMMON = _options([
    click.option("--dataset", type=click.Choice(_DATASETS), default="digits", show_default=True,
                 help="dataset (digits is bundled with scikit-learn; others need --data-dir)"),
    click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                 help="folder of the CIFAR pickles / the tiny-imagenet-200 tree"),
    click.option("--model", default=None,
                 help="student registry name (default: the dataset's, e.g. vit_digits)"),
    click.option("--epochs", type=click.IntRange(min=1), default=None,
                 help="epochs (default: the dataset's for this stage)"),
    click.option("--lr", type=float, default=None, help="peak learning rate (AdamW, cosine)"),
    click.option("--batch", type=click.IntRange(min=1), default=None, help="batch size"),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="seed of init, shuffling, augmentation (and the digits split)"),
    click.option("--weight-decay", type=float, default=None, help="AdamW weight decay"),
    click.option("--label-smoothing", type=float, default=None, help="label smoothing"),
    click.option("--warmup-epochs", type=click.IntRange(min=0), default=None,
                 help="linear warm-up epochs"),
    click.option("--augment/--no-augment", default=True, show_default=True,
                 help="random shift (and flip, except digits)"),
    click.option("--resume/--no-resume", default=True, show_default=True,
                 help="continue from an existing --out checkpoint"),
    click.option("--threads", type=click.IntRange(min=1), default=None,
                 help="torch CPU threads (default: 1 for digits, else torch's choice)"),
    click.option("--progress/--quiet", default=True, show_default=True, help="progress bars"),
])

_SEARCH = _options([
    click.option("--lambda-alpha", type=float, default=1e-5, show_default=True,
                 help="L1 weight on alpha (MPCViT: 1e-5)"),
    click.option("--alpha-lr", type=float, default=None,
                 help="learning rate of alpha (default: --lr)"),
    click.option("--cost-file", type=click.Path(dir_okay=False), default=None,
                 help="JSON per-head costs {relu_softmax, scale_attn} (see docs/training.md)"),
    click.option("--gamma", type=float, default=0.0, show_default=True,
                 help="weight of the cost term (needs --cost-file)"),
])

_RETRAIN = _options([
    click.option("--mu", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
                 help="share of heads kept as ReLU-softmax"),
    click.option("--kd-alpha", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
                 help="weight of the KL term (cross-entropy gets 1 - kd_alpha)"),
    click.option("--kd-temperature", type=click.FloatRange(min=0.0, min_open=True), default=4.0,
                 show_default=True, help="distillation temperature"),
    click.option("--token-mse", "token_mse_weight", type=click.FloatRange(min=0.0), default=0.0,
                 show_default=True, help="weight of the final-token MSE term"),
    click.option("--beta-keep", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
                 help="MPCViT+: share of tokens that keep GeLU"),
])

_LINEAR_GELU = click.option("--linear-gelu", is_flag=True, default=False,
                            help="MPCViT+: search/apply the per-token GeLU linearisation")


def _command_line(ctx: click.Context) -> str:
    """``privit <command>`` with the options the user gave (the rest had their defaults)."""
    words = ["privit", ctx.info_name or ctx.command.name or ""]  # a top-level subcommand
    given = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        if ctx.get_parameter_source(param.name) not in given:
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            if value:
                words.append(param.opts[0])
            elif param.secondary_opts:
                words.append(param.secondary_opts[0])
        elif value is not None:
            words += [param.opts[0], str(value)]
    return shlex.join(words)


@contextmanager
def _running(opts: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Make the run reproducible and yield its provenance (models/provenance.py).

    Sets torch's thread count (the dataset's default, or --threads) and
    ``torch.use_deterministic_algorithms(True)`` for the run, both restored after it;
    the training code seeds init, data order and augmentation from --seed.  Turns the
    library's one-line errors into click errors (no traceback).
    """
    import torch

    from privit.models.checkpoint import CheckpointError
    from privit.models.data import DatasetError
    from privit.models.provenance import make_provenance

    previous = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    threads = opts["threads"] or DATASET_DEFAULTS[opts["dataset"]]["threads"]
    try:
        if threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        ctx = click.get_current_context()
        yield make_provenance(_command_line(ctx), ctx.params, seed=opts["seed"],
                              threads=torch.get_num_threads(), deterministic=True)
    except DatasetError as err:
        raise click.ClickException(f"dataset: {err}") from None
    except CheckpointError as err:
        raise click.ClickException(f"checkpoint: {err}") from None
    except (ValueError, FloatingPointError) as err:
        raise click.ClickException(str(err)) from None
    finally:
        torch.set_num_threads(previous)
        torch.use_deterministic_algorithms(was_deterministic)


def _prepare(opts: dict[str, Any], stage: str) -> tuple[Any, str, dict[str, Any], dict[str, Any]]:
    """Load the dataset; return (data, student name, run kwargs, settings kwargs)."""
    from privit.models.data import load_dataset

    defaults = DATASET_DEFAULTS[opts["dataset"]]
    data = load_dataset(opts["dataset"], opts["data_dir"], seed=opts["seed"])
    model = opts["model"] or _STUDENTS[opts["dataset"]]
    run = {"epochs": opts["epochs"] or defaults[f"{stage}_epochs"],
           "lr": opts["lr"] or defaults["lr"], "batch": opts["batch"] or defaults["batch"],
           "seed": opts["seed"], "resume": opts["resume"], "progress": opts["progress"]}
    settings = {key: defaults[key] if opts[key] is None else opts[key]
                for key in ("weight_decay", "label_smoothing", "warmup_epochs")}
    settings.update(augment=opts["augment"], attn_dropout=defaults["attn_dropout"],
                    drop_path=defaults["drop_path"])
    return data, model, run, settings


def _report(stage: str, name: str, result: Any) -> None:
    click.echo(f"{stage} {name}: test top-1 {result.top1:.2f}% after {result.epochs} epochs "
               f"({result.seconds:.1f} s this run)")
    click.echo(f"wrote {result.path}")


def _student(model: str) -> str:
    return model[:-len("_teacher")] if model.endswith("_teacher") else model


# ----------------------------------------------------------------- commands
@click.command("train")
@_COMMON
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="checkpoint path (default: out/<dataset>/<model>_teacher.pth.tar)")
def train_command(out: str | None, **opts: Any) -> None:
    """Train the all-softmax teacher (e.g. vit_digits_teacher)."""
    from privit.models.train import train_teacher

    with _running(opts) as provenance:
        data, model, run, settings = _prepare(opts, "teacher")
        teacher = f"{_student(model)}_teacher"
        out = out or f"out/{opts['dataset']}/{teacher}.pth.tar"
        _, result = train_teacher(teacher, data, out_path=out, provenance=provenance, **run,
                                  **settings)
    _report("teacher", teacher, result)


@click.command("search")
@_COMMON
@_SEARCH
@_LINEAR_GELU
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="search checkpoint (default: out/<dataset>/<model>_search.pth.tar)")
def search_command(out: str | None, lambda_alpha: float, alpha_lr: float | None,
                   cost_file: str | None, gamma: float, linear_gelu: bool, **opts: Any) -> None:
    """Search alpha (per head: ReLU-softmax vs ScaleAttn) jointly with the weights."""
    from privit.models.search import search

    if gamma > 0 and cost_file is None:
        raise click.UsageError("--gamma > 0 needs --cost-file")
    with _running(opts) as provenance:
        data, model, run, settings = _prepare(opts, "search")
        model = _student(model)
        out = out or f"out/{opts['dataset']}/{model}_search.pth.tar"
        searched, result = search(model, data, out_path=out, lambda_alpha=lambda_alpha,
                                  alpha_lr=alpha_lr, cost_file=cost_file, gamma=gamma,
                                  linear_gelu=linear_gelu, provenance=provenance, **run,
                                  **settings)
    _report("search", model, result)
    click.echo("alpha (layer x head): " + json.dumps(
        [[round(v, 4) for v in row] for row in searched.get_alpha().tolist()]))


@click.command("retrain")
@_COMMON
@_RETRAIN
@_LINEAR_GELU
@click.option("--searched", type=click.Path(dir_okay=False), required=True,
              help="the search checkpoint (from `privit search`)")
@click.option("--teacher", type=click.Path(dir_okay=False), default=None,
              help="teacher checkpoint for distillation")
@click.option("--kd/--no-kd", default=None,
              help="distil from --teacher [default: on when --teacher is given]")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="final checkpoint (default: out/<dataset>/<model>_mu<mu>.pth.tar)")
def retrain_command(out: str | None, searched: str, teacher: str | None, kd: bool | None,
                    **opts: Any) -> None:
    """Retrain a fresh student with the binarised searched alpha (optionally with KD)."""
    from privit.models.distill import retrain

    if kd and teacher is None:
        raise click.UsageError("--kd needs --teacher (or pass --no-kd)")
    use_teacher = teacher if kd or kd is None else None
    retrain_opts = {k: opts.pop(k) for k in ("mu", "kd_alpha", "kd_temperature",
                                             "token_mse_weight", "beta_keep", "linear_gelu")}
    with _running(opts) as provenance:
        data, model, run, settings = _prepare(opts, "retrain")
        model = _student(model)
        out = out or f"out/{opts['dataset']}/{model}_mu{retrain_opts['mu']:g}.pth.tar"
        final, result = retrain(model, data, searched, out_path=out, teacher_path=use_teacher,
                                provenance=provenance, **retrain_opts, **run, **settings)
    _report(f"retrain mu={retrain_opts['mu']:g}", model, result)
    click.echo(f"ReLU-softmax heads: {int(final.get_alpha().sum())} of "
               f"{final.config.depth * final.config.heads}")


@click.command("pipeline")
@_COMMON
@_SEARCH
@_RETRAIN
@_LINEAR_GELU
@click.option("--teacher", type=click.Path(dir_okay=False), default=None,
              help="use this teacher checkpoint instead of training one")
@click.option("--kd/--no-kd", default=True, show_default=True,
              help="distil the retrained student from the teacher")
@click.option("--teacher-epochs", type=click.IntRange(min=1), default=None,
              help="teacher epochs (default: the dataset's)")
@click.option("--search-epochs", type=click.IntRange(min=1), default=None,
              help="search epochs (default: the dataset's)")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="output folder (default: out/<dataset>)")
def pipeline_command(out: str | None, teacher: str | None, kd: bool,
                     teacher_epochs: int | None, search_epochs: int | None,
                     lambda_alpha: float, alpha_lr: float | None, cost_file: str | None,
                     gamma: float, linear_gelu: bool, **opts: Any) -> None:
    """Teacher -> search -> retrain at one mu; --epochs sets the retrain epochs.

    Writes <model>_teacher.pth.tar, <model>_search.pth.tar, <model>_mu<mu>.pth.tar
    and summary.json (accuracies, seconds) in --out.  The same --seed (and thread count)
    gives the same weights bit for bit; `privit pipeline --seed 0 --quiet` rebuilds the
    shipped digits models.  Every checkpoint records its provenance (command, seed,
    versions; docs/training.md).
    """
    from privit.models.distill import retrain
    from privit.models.search import search
    from privit.models.train import train_teacher

    if gamma > 0 and cost_file is None:
        raise click.UsageError("--gamma > 0 needs --cost-file")
    retrain_opts = {k: opts.pop(k) for k in ("mu", "kd_alpha", "kd_temperature",
                                             "token_mse_weight", "beta_keep")}
    start = time.perf_counter()
    summary: dict[str, Any] = {"dataset": opts["dataset"]}
    with _running(opts) as provenance:
        data, model, run, settings = _prepare(opts, "retrain")
        model = _student(model)
        folder = Path(out or f"out/{opts['dataset']}")
        defaults = DATASET_DEFAULTS[opts["dataset"]]
        if teacher is None:
            teacher = str(folder / f"{model}_teacher.pth.tar")
            _, result = train_teacher(f"{model}_teacher", data, out_path=teacher,
                                      provenance=provenance, **{
                **run, "epochs": teacher_epochs or defaults["teacher_epochs"]}, **settings)
            _report("teacher", f"{model}_teacher", result)
            summary["teacher"] = {"top1": result.top1, "seconds": result.seconds,
                                  "path": teacher}
        searched_path = str(folder / f"{model}_search.pth.tar")
        searched, result = search(model, data, out_path=searched_path,
                                  lambda_alpha=lambda_alpha, alpha_lr=alpha_lr,
                                  cost_file=cost_file, gamma=gamma, linear_gelu=linear_gelu,
                                  provenance=provenance,
                                  **{**run, "epochs": search_epochs or defaults["search_epochs"]},
                                  **settings)
        _report("search", model, result)
        summary["search"] = {"top1": result.top1, "seconds": result.seconds,
                             "alpha": searched.get_alpha().tolist(), "path": searched_path}
        final_path = str(folder / f"{model}_mu{retrain_opts['mu']:g}.pth.tar")
        final, result = retrain(model, data, searched_path, out_path=final_path,
                                teacher_path=teacher if kd else None, linear_gelu=linear_gelu,
                                provenance=provenance, **retrain_opts, **run, **settings)
        _report(f"retrain mu={retrain_opts['mu']:g}", model, result)
        summary["retrain"] = {"top1": result.top1, "seconds": result.seconds, "kd": kd,
                              "mu": retrain_opts["mu"], "alpha": final.get_alpha().tolist(),
                              "path": final_path}
    summary["seconds"] = time.perf_counter() - start
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    click.echo(f"pipeline done in {summary['seconds']:.1f} s")
    click.echo(f"wrote {folder / 'summary.json'}")


TRAIN_COMMANDS = (train_command, search_command, retrain_command, pipeline_command)
"""The commands to register: ``for c in TRAIN_COMMANDS: main.add_command(c)``."""
