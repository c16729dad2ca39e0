"""launch/truncation_risk.py: expected and observed local-truncation failures per site."""
from __future__ import annotations

import torch

from privit.launch.truncation_risk import format_table, recording
from privit.parties.config import RunConfig
from privit.parties.inmemory_run import run_in_memory_detailed
from privit.parties.session import Session
from privit.protocols import sharing, truncation
from privit.protocols.registry import CORRELATIONS


def test_expected_and_observed_failures_of_one_site() -> None:
    """Values of 2^60 fail with probability 1/16 each: the table expects n / 16 and counts
    exactly the elements whose reconstructed result is off by more than one."""
    n, value = 4096, 1 << 60
    x = torch.full((n,), value, dtype=torch.int64)

    def job(s: Session) -> torch.Tensor:
        mine = x if s.party_id == 1 and not s.is_tracing else None
        return truncation.truncate(s, sharing.share_input(s, 1, mine, (n,)), 16)

    real = truncation.truncate_local
    with recording() as sites:
        run = run_in_memory_detailed(RunConfig(n_parties=2, frac_bits=16, timeout_s=30,
                                                         truncation="local"), job,
                                     CORRELATIONS, seed_source=b"truncation risk")
    assert truncation.truncate_local is real
    (risk,) = sites.values()
    assert (risk.calls, risk.elements, risk.max_abs) == (1, n, float(value))
    assert abs(risk.expected - n / 16) < 1e-9
    off = (sharing.reconstruct(run.results) - (value >> 16)).abs()
    assert risk.failures == int((off > 1).sum()) > 0
    assert "expected failures per run 256" in format_table(sites)
