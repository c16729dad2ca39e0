"""A run report (launch/report.py) as text: a short summary first, the per-scope table on
request (`--details`).

The summary names the model, parties, network and security, the protocols "auto" picked,
the accuracy against plaintext, the bytes (online and dealer material, each summed over
the parties), the rounds, the wall time of the whole command and of each phase, and the
LAN/WAN projection with the protocols auto would pick on those networks. It never prints
a file path: paths in job parameters are shown by their file name only. Reports of every
schema version are printed (older ones simply lack some lines).
"""
from __future__ import annotations

from pathlib import PurePath
from typing import Any


def mb(nbytes: float) -> str:
    """Bytes as MB (10^6), two decimals."""
    return f"{nbytes / 1e6:.2f} MB"


def _param_text(value: Any) -> str:
    """A job parameter for display; a path shows as its file name."""
    text = str(value)
    return PurePath(text).name if "/" in text else text


def _job_text(report: dict[str, Any]) -> str:
    job = report["job"]
    params = ", ".join(f"{k}={_param_text(v)}" for k, v in sorted(job.get("params", {}).items()))
    model = report.get("model")
    what = f"{job['name']}" + (f" ({model})" if model else "")
    return what + (f", {params}" if params else "")


def _network_text(net: dict[str, Any]) -> str:
    if net.get("name") == "none":
        return "none (loopback, no emulation)"
    bandwidth = net.get("bandwidth_mbps")
    bw = f"{bandwidth:g} Mbit/s" if bandwidth else "unlimited bandwidth"
    return f"{net.get('name')} (emulated: {net.get('rtt_ms', 0):g} ms RTT, {bw})"


def _security_text(channels: str) -> str:
    return {"curve": "CURVE (authenticated, encrypted)",
            "insecure": "INSECURE (plain TCP, for measurements only)"}.get(channels, channels)


def choices_text(tally: dict[str, int]) -> str:
    """{"fss": 12, "adder": 3} -> "fss x12, adder x3" (most used first)."""
    return ", ".join(f"{name} x{n}" for name, n in sorted(tally.items(), key=lambda kv: -kv[1]))


_CHOICE_NAMES = {"compare": "comparisons", "scale_order": "ScaleAttn order"}


def _choices_on(report: dict[str, Any], network: str) -> str:
    """What "auto" picked (network "run"), or would pick ("lan", "wan") where that differs
    from the run's pick, per setting."""
    parts = []
    for what, per_network in report.get("auto_choices", {}).items():
        tally = per_network.get(network)
        if tally and (network == "run" or tally != per_network.get("run")):
            parts.append(f"{_CHOICE_NAMES.get(what, what)} {choices_text(tally)}")
    return "; ".join(parts)


def _accuracy_lines(acc: dict[str, Any]) -> list[str]:
    line = (f"accuracy    max abs error vs plaintext {acc['max_abs_error']:.3g}; "
            f"parties agree: {acc['parties_agree']}")
    if "argmax_agreement" not in acc:
        return [line]
    more = (f"            {acc['images']} images: argmax agreement with plaintext "
            f"{acc['argmax_agreement']:.1%}")
    if "mpc_top1" in acc:
        more += f"; top-1 private {acc['mpc_top1']:.1%}, plaintext {acc['plain_top1']:.1%}"
    return [line, more]


TRUNCATION_TEXT = {
    "exact": "truncation exact (1 round per step, never fails)",
    "dealer": "truncation dealer (1 round per step, never fails)",
    "local": "truncation local (no round; can fail: docs/arithmetic.md section 5)",
}


def _truncation_text(method: object) -> str:
    """How the run truncated, for the rounds line ("" for reports that do not say)."""
    return f"; {TRUNCATION_TEXT[method]}" if isinstance(method, str) and method in TRUNCATION_TEXT else ""


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The summary block (at most ~15 lines)."""
    n_parties = sum(1 for p in report.get("per_party", []) if p["role"] != "dealer")
    on, off = report["online"], report["offline"]
    from_disk = off.get("source") == "disk"  # `privit run --material`: no dealer ran
    lines = [f"model       {_job_text(report)}",
             f"parties     {n_parties}{'' if from_disk else ' + dealer'}; "
             f"network {_network_text(report['network'])}",
             f"security    {_security_text(report.get('security', {}).get('channels', 'unknown'))}"]
    picked = _choices_on(report, "run")
    if picked:
        lines.append(f"auto picked {picked}")
    if "accuracy" in report:
        lines.extend(_accuracy_lines(report["accuracy"]))
    elif report.get("accuracy_note"):
        lines.append(f"accuracy    not checked: {report['accuracy_note']}")
    if from_disk:
        lines.append(f"bytes       online {mb(on['bytes'])} (summed over the parties); dealer "
                     f"material {mb(off['from_disk_bytes'])} read from disk (material "
                     f"{str(off['material_id'])[:12]}, now used up), none on the wire")
    else:
        lines.append(f"bytes       online {mb(on['bytes'])}, dealer material {mb(off['bytes'])} "
                     f"(each summed over the parties)")
    lines.append(f"rounds      {on['rounds']} online (critical path)"
                 + _truncation_text(report.get("config", {}).get("truncation")))
    if "total" in report:
        t = report["total"]
        lines.append(f"wall        {t['wall_s']:.2f} s whole command: start-up {t['startup_s']:.2f} s, "
                     f"handshake {t['handshake_s']:.2f} s, offline {t['offline_s']:.2f} s, "
                     f"online {t['online_s']:.2f} s, other {t['other_s']:.2f} s")
        plan = off.get("plan")
        if plan is not None:
            how = ("traced" if plan["source"] == "traced" else
                   "read from the plan cache (a previous run's trace)")
            lines.append(f"            the dealer's plan: {how} in {plan['wall_s']:.2f} s")
        if t.get("offline_during_online_s", 0.0) >= 0.005:
            lines.append(f"            of the online phase, {t['offline_during_online_s']:.2f} s reading "
                         f"dealer material streamed in (a party's memory budget)")
        peaks = ", ".join(f"{name} {value:.0f}" for name, value in t["peak_rss_mb"].items()
                          if value is not None)
        if peaks:
            launcher = t.get("launcher_peak_rss_mb")
            lines.append(f"memory      peak resident MiB: {peaks}"
                         + (f"; privit run itself {launcher:.0f}" if launcher is not None else ""))
    else:
        lines.append(f"wall        online {on['wall_s']:.3f} s (slowest party)")
    proj = report["projected"]
    lines.append(f"projected   LAN {proj['lan_s']:.3f} s, WAN {proj['wan_s']:.3f} s online with this "
                 f"run's protocols (a round = 1 RTT; WAN {proj['wan_exchange_s']:.3f} s with "
                 f"RTT/2, as emulated)")
    for net in ("lan", "wan"):
        there = _choices_on(report, net)
        if there:
            lines.append(f"            on {net.upper()} auto would pick {there}: measure it with "
                         f"--network {net}")
    return lines


def detail_lines(report: dict[str, Any]) -> list[str]:
    """The per-scope table (every column with its unit) and the per-role figures."""
    header = (f"{'scope':<26}{'online MB (sum of parties)':>28}{'dealer MB (sum)':>17}"
              f"{'rounds':>8}{'wall ms':>9}")
    lines = [header, "-" * len(header)]
    for s in report["scopes"]:
        depth = s["name"].count("/")
        name = "  " * depth + s["name"].split("/")[-1]
        lines.append(f"{name:<26}{s['bytes'] / 1e6:>28.3f}{s['offline_bytes'] / 1e6:>17.3f}"
                     f"{s['rounds']:>8}{s['wall_s'] * 1e3:>9.1f}")
    lines.append("-" * len(header))
    on, off = report["online"], report["offline"]
    lines.append(f"{'total':<26}{on['bytes'] / 1e6:>28.3f}{off['bytes'] / 1e6:>17.3f}"
                 f"{on['rounds']:>8}{on['wall_s'] * 1e3:>9.1f}")
    lines.append("")
    head = (f"{'role':<10}{'online MB sent':>16}{'offline MB sent':>17}{'online rounds':>15}"
            f"{'online wall s':>15}")
    lines += [head, "-" * len(head)]
    for p in report.get("per_party", []):
        lines.append(f"{p['role']:<10}{p['online_bytes'] / 1e6:>16.3f}{p['offline_bytes'] / 1e6:>17.3f}"
                     f"{p['online_rounds']:>15}{p.get('online_wall_s', 0.0):>15.3f}")
    return lines


def format_report(report: dict[str, Any], details: bool = False) -> str:
    """The summary; with `details` also the per-scope table and per-role figures."""
    lines = summary_lines(report)
    if details:
        lines += ["", *detail_lines(report)]
    return "\n".join(lines)
