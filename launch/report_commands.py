"""`privit report`: merge the role reports of a multi-machine run, or print a saved run
report (every schema version so far)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from privit.launch.cli_options import shown_path
from privit.launch.errors import describe
from privit.launch.role_inputs import DATA_OWNER, WEIGHT_OWNER, RoleInputs
from privit.parties.config import RunConfig


def _read_role_report(path: Path) -> dict[str, Any]:
    """A role's JSON report, checked for the fields `report` needs; else a one-line error."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{path} is not a privit role report: {exc}") from None
    needed = ("role", "name", "ok")
    if not isinstance(data, dict) or any(k not in data for k in needed):
        raise click.ClickException(
            f"{path} is not a privit role report (a role report has the fields {', '.join(needed)})")
    if data["ok"] and not isinstance(data.get("config"), dict):
        raise click.ClickException(f"{path} is not a privit role report: no 'config' object")
    return data


def _is_run_report(data: Any) -> bool:
    """A merged run report (`privit run --json`, `privit report --json`), not a role's."""
    return isinstance(data, dict) and all(k in data for k in ("job", "online", "scopes"))


@click.command()
@click.argument("role_reports", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="write the merged report")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False), default=None,
              help="vit: the model, to add the accuracy against plaintext (whoever merges "
                   "needs both the model and the images for that)")
@click.option("--images", type=click.Path(exists=True, dir_okay=False), default=None,
              help="vit: party 1's images file, for the accuracy against plaintext")
@click.option("--details", is_flag=True, default=False,
              help="also print the per-layer table and per-role figures")
def report(role_reports: tuple[str, ...], json_path: str | None, checkpoint: str | None,
           images: str | None, details: bool) -> None:
    """Merge the role reports of a multi-machine run (every party's and the dealer's), or
    print one run report (`privit run --json`). Reads every schema version so far.

    ROLE_REPORTS: the JSON file each role wrote with its --json, one per role (or one run
    report).
    """
    from privit.launch.environment import environment
    from privit.launch.report import build_report, report_version
    from privit.launch.report_text import format_report

    if len(role_reports) == 1:
        path = Path(role_reports[0])
        try:
            single = json.loads(path.read_text())
        except (OSError, ValueError):
            single = None  # _read_role_report below says what is wrong with it
        if _is_run_report(single):
            try:
                report_version(single)
                text = format_report(single, details=details)
            except (ValueError, KeyError, TypeError) as exc:
                raise click.ClickException(f"{path} is not a readable run report: "
                                           f"{describe(exc)}") from None
            click.echo(text)
            return
    reports = [_read_role_report(Path(p)) for p in role_reports]
    for p, r in zip(role_reports, reports, strict=True):
        try:
            report_version(r)
        except ValueError as exc:
            raise click.ClickException(f"{p}: {exc}") from None
    failed = [r for r in reports if not r.get("ok")]
    if failed:
        raise click.ClickException("; ".join(f"{r['name']}: {r.get('error')}" for r in failed))
    cfg = RunConfig.from_dict(reports[0]["config"])
    for r in reports[1:]:
        other = RunConfig.from_dict(r["config"])
        if (other.session_id, other.config_hash()) != (cfg.session_id, cfg.config_hash()):
            raise click.ClickException(
                f"{r['name']}'s report is from another run (session {other.session_id!r}, "
                f"config {other.config_hash()}) than {reports[0]['name']}'s "
                f"(session {cfg.session_id!r}, config {cfg.config_hash()})")
    roles = sorted(r["role"] for r in reports)
    # Parties that read preprocessed material ran without a dealer: no dealer report.
    from_disk = all(r.get("material", {}).get("source") == "disk"
                    for r in reports if r["role"] != cfg.dealer_id)
    last = cfg.n_parties - 1 if from_disk else cfg.n_parties
    if roles != list(range(last + 1)):
        raise click.ClickException(f"need a report from every role 0..{last}, got {roles}")
    arch_hashes = sorted({str(r["arch_hash"]) for r in reports if r.get("arch_hash")})
    if len(arch_hashes) > 1:
        raise click.ClickException(f"the role reports name different architectures: {arch_hashes}")
    reference, note = _merge_reference(cfg, reports, RoleInputs(checkpoint=checkpoint, images=images))
    merged = build_report(cfg, reports, reference, environment=environment())
    if note:
        merged["accuracy_note"] = note
    click.echo(format_report(merged, details=details))
    if json_path:
        Path(json_path).write_text(json.dumps(merged, indent=1))
        click.echo(f"report written to {shown_path(json_path)}")


def _merge_reference(cfg: RunConfig, reports: list[dict[str, Any]],
                     inputs: RoleInputs) -> tuple[dict[str, Any] | None, str]:
    """The plaintext reference for `privit report`, or None and why: it takes the model and
    the images together, which only someone holding both (a test, a benchmark) has."""
    from privit.launch.job_registry import make_job

    by_role = {r["role"]: r for r in reports}
    party1 = by_role.get(DATA_OWNER, {})
    if party1.get("image_source") == "file" and not inputs.images:
        return None, "party 1 ran its own images file; pass it with --images"
    try:
        job = make_job(cfg, inputs)
        fields = job.report_fields()
    except (ValueError, RuntimeError, OSError) as exc:
        return None, f"cannot rebuild the reference: {describe(exc)}"
    owner = by_role.get(WEIGHT_OWNER, {})
    if owner.get("checkpoint_sha256") and fields.get("checkpoint_sha256") != owner["checkpoint_sha256"]:
        return None, "party 0 ran another checkpoint; pass the same file with --checkpoint"
    if owner.get("arch_hash") and fields.get("arch_hash") != owner["arch_hash"]:
        return None, "the model given here has another architecture than party 0's"
    return job.reference(), ""

REPORT_COMMANDS = (report,)
