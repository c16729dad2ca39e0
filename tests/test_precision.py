"""`--precision precise` (models/private_options.py, protocols/approx_config.py).

- the run config (and so the command line) takes the level's fractional bits and
  truncation unless named;
- on a softmax teacher small enough for the suite, the precise level's logits are within a
  bound the default level does not meet on the same input and randomness.
(tests/test_vit_cost_pins.py pins its cost on vit_7_4_32_teacher; tests/test_launch.py
checks that parties at different levels refuse each other.)
"""
from __future__ import annotations

import click
import pytest

from privit.launch.cli_options import build_config
from privit.launch.vit_job import VitJob
from privit.launch.vit_spec import VitSpec
from privit.models.private_options import PrivateOptions
from privit.parties.config import PRECISION_FRAC_BITS, JobSpec, RunConfig, precision_truncation
from privit.parties.inmemory_run import run_in_memory_detailed
from privit.protocols.approx_config import ReluSoftmaxConfig, precision_configs
from privit.protocols.registry import CORRELATIONS


def _config(params: tuple[str, ...], frac_bits: int | None = None, truncation: str = "auto",
            n_parties: int = 2, job: str = "vit") -> RunConfig:
    return build_config(job, params, n_parties, "none", None, None, frac_bits, truncation, 60.0,
                        60.0, 0, None, True, 64, 64, 2048, default_session="t")


def test_command_line_takes_the_levels_bits_and_truncation() -> None:
    default = _config(())
    assert (default.frac_bits, default.truncation) == (16, "exact")
    precise = _config(("precision=precise",))
    assert (precise.frac_bits, precise.truncation) == (PRECISION_FRAC_BITS["precise"], "exact")
    assert precise.job.param("precision") == "precise"
    named = _config(("precision=precise",), frac_bits=18, truncation="dealer")
    assert (named.frac_bits, named.truncation) == (18, "dealer")
    assert _config((), n_parties=3, job="mlp").truncation == "dealer"
    with pytest.raises(click.UsageError, match="precision must be one of"):
        _config(("precision=exact",))


def test_a_config_built_in_python_takes_the_levels_bits_and_truncation() -> None:
    """Not only the command line: a RunConfig resolves its unnamed bits and "auto"
    truncation from the job's precision, and carries the resolved values, so that a role
    that reads its config.json and one built from the command line hash the same."""
    precise_job = JobSpec.make("vit", **VitSpec.from_params({"precision": "precise"}).to_params())
    precise = RunConfig(job=precise_job, session_id="t", channels="insecure", max_frame_mb=64,
                        max_buffer_mb=64)
    assert (precise.frac_bits, precise.truncation) == (20, "exact")
    assert precise.config_hash() == _config(("precision=precise",)).config_hash()
    assert RunConfig.from_dict(precise.to_dict()) == precise
    named = RunConfig(job=precise_job, frac_bits=18, truncation="dealer")
    assert (named.frac_bits, named.truncation) == (18, "dealer")
    assert (RunConfig().frac_bits, RunConfig().truncation) == (16, "exact")
    assert RunConfig(n_parties=3).truncation == "dealer"
    with pytest.raises(ValueError, match="precision must be one of default, precise, got 'exact'"):
        RunConfig(job=JobSpec.make("vit", precision="exact"))


UNSAFE_LOCAL = ("local truncation is unsafe with precision precise (it fails with probability "
                "|x| 2^(2f-64) per product, too often at f >= 18; docs/nonlinear.md): use "
                "exact truncation (--truncation exact)")


@pytest.mark.parametrize("frac_bits", [None, 18])
def test_local_truncation_with_precision_precise_is_refused(frac_bits: int | None) -> None:
    with pytest.raises(click.UsageError) as refused:
        _config(("precision=precise",), frac_bits=frac_bits, truncation="local")
    assert str(refused.value) == UNSAFE_LOCAL
    with pytest.raises(ValueError) as refused_here:
        RunConfig(job=JobSpec.make("vit", precision="precise"), truncation="local")
    assert str(refused_here.value) == UNSAFE_LOCAL
    from click.testing import CliRunner

    from privit.launch.cli import main
    result = CliRunner().invoke(main, ["run", "--precision", "precise", "--truncation", "local"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == f"Error: {UNSAFE_LOCAL}"


def test_levels_differ_only_where_documented() -> None:
    default, precise = precision_configs("default"), precision_configs("precise")
    assert default == precision_configs("default").with_method("auto")
    assert precise.layer_norm.degree == 3 and precise.layer_norm.var_hi_log2 == 10.0
    assert precise.softmax.factors == 3 and precise.gelu.erf.cutoff == 5.25
    assert precise.relu_softmax.reciprocal.factors == 3
    assert default.relu_softmax == ReluSoftmaxConfig()
    assert precise.gelu.coefficients == default.gelu.coefficients  # "poly" unchanged
    assert precision_truncation("default", 2) == precision_truncation("precise", 2) == "exact"
    assert precision_truncation("default", 3) == "dealer"
    with pytest.raises(ValueError, match="precision"):
        PrivateOptions(precision="exact")


def _teacher_error(precision: str) -> float:
    cfg = RunConfig(n_parties=2, seed=0, timeout_s=60, frac_bits=PRECISION_FRAC_BITS[precision],
                    truncation=precision_truncation(precision, 2),
                    job=JobSpec.make("vit", model="vit_digits_teacher", batch=2,
                                     precision=precision))
    job = VitJob(cfg)
    run = run_in_memory_detailed(cfg, job.run, CORRELATIONS, seed_source=b"precision")
    return float((run.results[0]["logits"] - job.reference()["logits"]).abs().max())


def test_precise_logits_are_tighter_than_the_default_on_the_same_input() -> None:
    """A seeded random vit_digits_teacher (softmax, LayerNorm, GeLU in every layer), two
    images, the same share randomness: the default is 2.4e-4..3.7e-4 off, the precise
    level about 2e-5 (measured with other seeds too); the bound 5e-5 sits between."""
    default, precise = _teacher_error("default"), _teacher_error("precise")
    assert precise < 5e-5 < default
