"""Every job by name: one static table, built from explicit imports.

No job registers itself when its module is imported; adding a job is one line here.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from privit.launch.bench import BenchJob
from privit.launch.jobs import ALL_INPUTS, Job, MatmulChain, RoleInputs, SquareMlp
from privit.launch.vit_job import VitJob
from privit.parties.config import RunConfig

JOBS: Mapping[str, type[Job]] = MappingProxyType(
    {cls.name: cls for cls in (VitJob, SquareMlp, MatmulChain, BenchJob)})


def make_job(cfg: RunConfig, inputs: RoleInputs = ALL_INPUTS) -> Job:
    """The job `cfg` names, built for one role's `inputs` (all of them by default)."""
    if cfg.job.name not in JOBS:
        raise ValueError(f"unknown job {cfg.job.name!r}; available: {sorted(JOBS)}")
    return JOBS[cfg.job.name](cfg, inputs)
