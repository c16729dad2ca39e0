"""Preprocessed dealer material (parties/material.py): written by a preprocess run, read by
a later online run in place of the dealer. The online run equals a streamed run (results,
online bytes and rounds); material is refused when reused, from another config, another
party's, truncated, corrupt, or mixed from two preprocess runs."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import marked_descendants

from privit.launch.coordinator import preprocess_local
from privit.launch.job_registry import make_job
from privit.parties.config import JobSpec, RunConfig
from privit.parties.counters import Counters
from privit.parties.inmemory_run import InMemoryRun, run_in_memory_detailed
from privit.parties.lifecycle import barrier
from privit.parties.material import (
    MaterialError,
    MaterialFile,
    MaterialHeader,
    MaterialWriter,
    check_unused,
    stale_material,
)
from privit.parties.memory import MemoryChannel, MemoryHub
from privit.protocols.registry import CORRELATIONS

PRIVIT = [sys.executable, "-m", "privit.launch.cli"]
MLP = RunConfig(n_parties=2, seed=3, timeout_s=60, job=JobSpec.make("mlp"))
VIT = RunConfig(n_parties=2, seed=0, timeout_s=120, job=JobSpec.make("vit", batch=1))
SEEDS = b"same randomness"


def _online(run: InMemoryRun[Any]) -> list[tuple[int, int]]:
    return [(r["phases"]["online"]["bytes"], r["phases"]["online"]["rounds"]) for r in run.reports]


def _files(folder: Path, n: int = 2) -> list[Path]:
    return [folder / f"party-{p}.material" for p in range(n)]


def _preprocess(cfg: RunConfig, folder: Path) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = _files(folder)
    run_in_memory_detailed(cfg, make_job(cfg).run, CORRELATIONS, seed_source=SEEDS, record=paths)
    return paths


@pytest.mark.parametrize("cfg", [MLP, VIT], ids=["mlp", "vit"])
def test_preprocess_then_online_equals_one_run(cfg: RunConfig, tmp_path: Path) -> None:
    job = make_job(cfg)
    whole = run_in_memory_detailed(cfg, job.run, CORRELATIONS, seed_source=SEEDS)
    paths = _preprocess(cfg, tmp_path)
    assert [p.stat().st_mode & 0o777 for p in paths] == [0o600, 0o600]  # they hold seeds
    headers = [MaterialFile.open(p, CORRELATIONS) for p in paths]
    assert headers[0].header.material_id == headers[1].header.material_id
    assert [h.trailer["payload_bytes"] for h in headers] == [s["payload_bytes"] for s in whole.streams]
    assert [h.trailer["requests"] for h in headers] == [len(whole.plan)] * 2
    for h in headers:
        h.close()
    online = run_in_memory_detailed(cfg, job.run, CORRELATIONS, seed_source=SEEDS, material=paths)
    for a, b in zip(whole.results, online.results, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), name
    assert _online(online) == _online(whole)
    assert [s["payload_bytes"] for s in online.streams] == [s["payload_bytes"] for s in whole.streams]
    # No dealer: nothing was sent in the offline phase.
    assert [r["phases"]["offline"]["bytes"] for r in online.reports] == [0, 0]
    # Used once: the file is renamed, emptied, and a second run is refused.
    assert [p.exists() for p in paths] == [False, False]
    assert [p.with_name(p.name + ".used").stat().st_size for p in paths] == [0, 0]
    with pytest.raises(Exception, match=r"party-[01].material was already used .* single-use"):
        run_in_memory_detailed(cfg, job.run, CORRELATIONS, material=paths)
    # nor can the claimed file itself be given (it keeps its contents if its run is killed)
    with pytest.raises(MaterialError, match=r"party-0.material.used is used up"):
        MaterialFile.open(paths[0].with_name(paths[0].name + ".used"), CORRELATIONS)


def test_material_from_another_config_is_refused(tmp_path: Path) -> None:
    paths = _preprocess(MLP, tmp_path)
    other = RunConfig(n_parties=2, seed=3, frac_bits=14, timeout_s=60, job=JobSpec.make("mlp"))
    material = MaterialFile.open(paths[0], CORRELATIONS)
    with pytest.raises(MaterialError, match=r"preprocessed for another config: frac_bits is "
                                            r"16 there, 14 here"):
        material.check(other, 0)
    with pytest.raises(MaterialError, match=r"party-0.material is party 0's, not party 1's"):
        material.check(MLP, 1)
    material.close()
    assert paths[0].exists()  # refused before any use: not claimed


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_file_is_refused(tmp_path: Path, damage: str) -> None:
    path = _preprocess(MLP, tmp_path)[0]
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[len(data) // 2:]
        expected = "no end marker"
    else:
        data[len(data) // 2] ^= 1
        expected = "digest does not match"
    path.write_bytes(bytes(data))
    with pytest.raises(MaterialError, match=f"is not a valid material file: .*{expected}"):
        MaterialFile.open(path, CORRELATIONS)


def test_parties_refuse_material_of_two_preprocess_runs() -> None:
    hub = MemoryHub([0, 1, 2])
    channels = [MemoryChannel(hub, p, [q for q in range(3) if q != p], Counters(), timeout_s=5.0)
                for p in range(2)]
    channels[1].send(0, "data", "barrier", meta={"material_id": "b" * 32})
    with pytest.raises(MaterialError, match="party 1's material is not from the same "
                                            "preprocess run as party 0's"):
        barrier(channels[0], MLP, 0, "a" * 32)


def _privit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(PRIVIT + list(args), capture_output=True, text=True, timeout=300)


def _report(path: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def test_processes_preprocess_then_run(tmp_path: Path) -> None:
    """Real processes, the default vit job: `privit preprocess` then `privit run
    --material` gives the online bytes and rounds of one streamed `privit run` (the same
    config), reads from disk what the dealer would have sent, starts no dealer, and uses
    the material up. (The in-memory test above also pins the logits, for mlp and vit.)"""
    job = ["--batch", "1"]
    streamed = tmp_path / "streamed.json"
    assert _privit("run", *job, "--insecure", "--json", str(streamed)).returncode == 0
    out, summary = tmp_path / "material", tmp_path / "summary.json"
    proc = _privit("preprocess", *job, "--insecure", "--out", str(out), "--json", str(summary))
    assert proc.returncode == 0, proc.stderr
    online = tmp_path / "online.json"
    proc = _privit("run", *job, "--insecure", "--material", str(out), "--json", str(online))
    assert proc.returncode == 0, proc.stderr
    assert "read from disk" in proc.stdout
    whole, done, pre = _report(streamed), _report(online), _report(summary)
    assert [(p["online_bytes"], p["online_rounds"]) for p in done["per_party"]] == \
        [(p["online_bytes"], p["online_rounds"]) for p in whole["per_party"] if p["role"] != "dealer"]
    assert [p["role"] for p in done["per_party"]] == ["party 0", "party 1"]  # no dealer
    payload = [p["stream"]["payload_bytes"] for p in whole["per_party"] if p["role"] != "dealer"]
    assert [p["payload_bytes"] for p in pre["parties"]] == payload
    assert done["offline"]["source"] == "disk"
    assert done["offline"]["bytes"] == 0
    assert done["offline"]["from_disk_bytes"] == sum(payload)
    assert done["offline"]["material_id"] == pre["material_id"]
    assert done["offline"]["requests"] == whole["offline"]["requests"]
    assert done["accuracy"]["parties_agree"]
    assert done["accuracy"]["max_abs_error"] < 0.05
    assert done["total"]["offline_s"] > 0 and done["total"]["online_s"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["party-0.material.used", "party-1.material.used"]
    again = _privit("run", *job, "--insecure", "--material", str(out))
    assert again.returncode != 0
    assert "party-0.material was already used" in again.stderr


def test_processes_refuse_material_of_two_preprocess_runs(tmp_path: Path) -> None:
    for name in ("a", "b"):
        proc = _privit("preprocess", "--job", "mlp", "--insecure", "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (tmp_path / "a" / "party-0.material").rename(mixed / "party-0.material")
    (tmp_path / "b" / "party-1.material").rename(mixed / "party-1.material")
    proc = _privit("run", "--job", "mlp", "--insecure", "--material", str(mixed))
    assert proc.returncode == 1
    assert "material is not from the same preprocess run" in proc.stderr
    # Refused before the online phase: neither file was claimed.
    assert sorted(p.name for p in mixed.iterdir()) == ["party-0.material", "party-1.material"]
    # Another config is refused by each party before it starts.
    proc = _privit("run", "--job", "mlp", "--insecure", "--frac-bits", "14", "--material",
                   str(mixed))
    assert proc.returncode == 1
    assert "preprocessed for another config: frac_bits is 16 there, 14 here" in proc.stderr


def test_claim_refuses_a_file_replaced_after_it_was_verified(tmp_path: Path) -> None:
    """The claim renames by name but the run reads the descriptor it verified: a file put
    at the same name in between is refused, given its name back, and not marked used."""
    ours = _preprocess(MLP, tmp_path / "a")[0]
    theirs = _preprocess(MLP, tmp_path / "b")[0]
    material = MaterialFile.open(ours, CORRELATIONS)
    os.replace(theirs, ours)  # e.g. another preprocess writing into the same place
    with pytest.raises(MaterialError, match=r"party-0.material was replaced after it was "
                                            r"verified; refusing it"):
        material.claim()
    material.close()
    assert sorted(p.name for p in ours.parent.iterdir()) == ["party-0.material", "party-1.material"]
    other = MaterialFile.open(ours, CORRELATIONS)  # the other run's file, whole and unused
    other.close()


def test_a_run_wipes_only_the_file_it_claimed(tmp_path: Path) -> None:
    ours = _preprocess(MLP, tmp_path / "a")[0]
    theirs = _preprocess(MLP, tmp_path / "b")[0]
    material = MaterialFile.open(ours, CORRELATIONS)
    material.claim()
    used = ours.with_name(ours.name + ".used")
    seed = material.header.seed
    assert seed in used.read_bytes()
    kept = theirs.read_bytes()
    os.replace(theirs, used)  # a later file at the mark's name is not this run's to wipe
    material.close()
    assert used.read_bytes() == kept
    material = MaterialFile.open(tmp_path / "a" / "party-1.material", CORRELATIONS)
    material.claim()
    material.close()
    assert (tmp_path / "a" / "party-1.material.used").stat().st_size == 0


def test_a_file_that_cannot_be_wiped_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    """A claimed file the run cannot open for writing (read-only mount, another owner)
    still holds its seed: closing says so in one line instead of passing silently."""
    from privit.parties import material_leftovers

    ours = _preprocess(MLP, tmp_path)[0]
    material = MaterialFile.open(ours, CORRELATIONS)
    material.claim()
    real_open = os.open

    def no_write(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith(".used") and flags & os.O_WRONLY:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(material_leftovers.os, "open", no_write)
    with pytest.raises(MaterialError, match=r"cannot wipe .*party-0.material.used \(Permission "
                                            r"denied\): it still holds a party's seed; remove it"):
        material.close()


def _header() -> MaterialHeader:
    return MaterialHeader("c" * 32, 0, 2, "h", "{}", "p", b"s" * 16)


def test_a_seed_left_on_disk_is_named_with_how_to_remove_it(tmp_path: Path) -> None:
    """A killed preprocess's NAME.partial and a killed online run's non-empty NAME.used
    hold a seed: the next preprocess into that place is refused with one line naming the
    file and how to remove it; files in use (locked by a live writer or run) are not
    called leftovers, and an emptied mark is none."""
    out = tmp_path / "mat"
    path = out / "party-0.material"
    out.mkdir()
    writer = MaterialWriter(path, _header())  # a live writer: its lock is held
    assert stale_material(path) == (f"{path}.partial is being written by a preprocess that "
                                    f"runs now; use another place")
    writer.discard()
    assert stale_material(path) is None
    Path(f"{path}.partial").write_bytes(b"PRIVMAT\n" + b"s" * 64)  # as a SIGKILL leaves it
    left = (f"{path}.partial was left by a preprocess that was killed before it finished, "
            f"but it still holds a party's seed: remove it (rm {path}.partial)")
    assert stale_material(path) == left
    with pytest.raises(MaterialError) as refused:
        MaterialWriter(path, _header())
    assert str(refused.value) == left
    with pytest.raises(MaterialError) as refused:
        preprocess_local(MLP, str(out))
    assert str(refused.value) == left
    os.unlink(f"{path}.partial")
    used = Path(f"{path}.used")
    used.write_bytes(b"PRIVMAT\n" + b"s" * 64)  # an online run killed after its claim
    left = (f"{used} was left by an online run that was killed; its material is spent, but "
            f"it still holds a party's seed: remove it (rm {used})")
    assert stale_material(path) == left
    with pytest.raises(MaterialError) as refused:
        check_unused(path)
    assert str(refused.value).endswith(f"material is single-use: run `privit preprocess` "
                                       f"again; {left}")
    used.write_bytes(b"")  # the mark a finished run leaves holds nothing
    assert stale_material(path) is None
    # a run that claimed its file and still reads it holds its lock: not a leftover
    live = _preprocess(MLP, tmp_path / "live")[0]
    material = MaterialFile.open(live, CORRELATIONS)
    material.claim()
    assert stale_material(live) is None
    material.close()


def _slow_preprocess(out: Path) -> subprocess.Popen[str]:
    """`privit preprocess` of the mlp job into `out` over a slow emulated link, which keeps
    party 1 writing its file for seconds."""
    return subprocess.Popen(PRIVIT + ["preprocess", "--job", "mlp", "--insecure", "--rtt-ms", "1",
                                      "--bandwidth-mbps", "0.02", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("how", ["interrupt", "kill"])
def test_a_stopped_preprocess_leaves_no_seed_on_disk(tmp_path: Path, how: str) -> None:
    """`privit preprocess` interrupted (Ctrl-C: the coordinator stops its roles with
    SIGTERM), or killed outright (each role sees its parent gone and stops itself), while
    party 1 writes its file and party 0 has finished its own: no NAME.partial is left and
    no role process. Interrupted, the coordinator also removes party 0's finished file;
    killed, it cannot, and the next preprocess there names that file as a leftover."""
    out = tmp_path / "mat"
    proc = _slow_preprocess(out)
    try:
        partial, finished = out / "party-1.material.partial", out / "party-0.material"
        deadline = time.monotonic() + 120
        while not (partial.exists() and finished.exists()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT if how == "interrupt" else signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
        deadline = time.monotonic()
        assert proc.returncode != 0
        if how == "interrupt":
            assert stderr.strip().splitlines() == ["Aborted!"]
        while marked_descendants():  # the roles, each in its own session
            assert time.monotonic() < deadline + 30, "a role outlived its preprocess run"
            time.sleep(0.05)
        if how == "interrupt":
            assert sorted(p.name for p in out.iterdir()) == []
            return
        assert sorted(p.name for p in out.iterdir()) == ["party-0.material"]
        with pytest.raises(MaterialError) as refused:
            preprocess_local(MLP, str(out))
        assert str(refused.value) == (
            f"{finished} was left by a preprocess that did not finish (there is no "
            f"{out / 'party-1.material'}); it holds a party's seed: remove it (rm {finished})")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_a_failed_preprocess_removes_only_the_files_it_wrote(tmp_path: Path) -> None:
    """Another preprocess puts party 1's file in place while this one writes it (after this
    run checked that the names were free): party 1 refuses to overwrite it and the run
    fails. The clean-up removes party 0's file, which this run wrote, and leaves the other
    run's file as it was."""
    out = tmp_path / "mat"
    proc = _slow_preprocess(out)
    try:
        partial, other = out / "party-1.material.partial", out / "party-1.material"
        deadline = time.monotonic() + 120
        while not partial.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.01)
        other.write_bytes(b"another preprocess's material")
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 1, stderr
        assert f"{other} appeared while this preprocess wrote it" in stderr
        assert sorted(p.name for p in out.iterdir()) == ["party-1.material"]
        assert other.read_bytes() == b"another preprocess's material"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("error, outcome", [
    (errno.EPERM, "renamed"),  # vfat: no hard links
    (errno.EOPNOTSUPP, "renamed"),  # some FUSE and network filesystems
    (errno.ENOSPC, "cannot name {path}: No space left on device"),
    (errno.EIO, "cannot name {path}: Input/output error"),
], ids=["EPERM", "EOPNOTSUPP", "ENOSPC", "EIO"])
def test_finish_renames_only_where_the_filesystem_has_no_hard_links(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int, outcome: str) -> None:
    """A link that fails because the filesystem has none falls back to a rename; any other
    failure is a one-line error that leaves neither the file nor its seed-holding partial."""
    from privit.parties import material as material_module

    def failing_link(src: Any, dst: Any) -> None:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(material_module.os, "link", failing_link)
    path = tmp_path / "party-0.material"
    writer = MaterialWriter(path, _header())
    if outcome == "renamed":
        assert writer.finish() == path.stat().st_size
        assert sorted(p.name for p in tmp_path.iterdir()) == ["party-0.material"]
        # a file at the name is refused, not replaced, on such a filesystem too
        other = tmp_path / "party-1.material"
        writer = MaterialWriter(other, _header())
        other.write_bytes(b"another preprocess's material")
        with pytest.raises(MaterialError, match="party-1.material appeared while this preprocess"):
            writer.finish()
        assert other.read_bytes() == b"another preprocess's material"
    else:
        with pytest.raises(MaterialError) as refused:
            writer.finish()
        assert str(refused.value) == outcome.format(path=path)
        assert list(tmp_path.iterdir()) == []
