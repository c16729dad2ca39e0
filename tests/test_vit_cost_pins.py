"""The whole-model cost, pinned: vit_7_4_32 at batch 1, teacher and μ = 0.5 (seeded).

Exact online bytes and rounds of each party and the dealer's offline bytes, from the
in-memory runner (the same framing and counting as real processes). A change that makes
the model cost more (or less) fails here; update the numbers deliberately, with the
reason in the commit, and BENCHMARKS.md with them.
"""
from __future__ import annotations

import pytest

from privit.launch.vit_job import VitJob
from privit.parties.config import PRECISION_FRAC_BITS, JobSpec, RunConfig, precision_truncation
from privit.parties.inmemory_run import run_in_memory_detailed
from privit.protocols.registry import CORRELATIONS

PINS = {
    # (party 0's bytes include 4 messages of masked weights, WEIGHT_PIECE_ELEMENTS = 2^20)
    # params: ((party 0 online bytes, rounds), (party 1 online bytes, rounds), dealer bytes);
    # auto_objective "whole" (the default: auto counts the dealer's keys too) and "online";
    # the default GeLU, erf. Since "adder_compact" (the adder ending in XOR shares +
    # bit_select) is a candidate of auto and the erf GeLU's adder path converts its XOR
    # bits in its first product's opening, the teacher's dealer bytes fell from 159.0 to
    # 90.2 MB for 6 rounds more; the logits' max error stayed within 1e-3 (5.5e-4 -> 5.7e-4).
    # The GeLU's piece comparisons keep 5 fractional bits (GeluConfig.compare_frac_bits,
    # gelu.piece_comparisons): at f = 16 they compare on 21 bits instead of 32. The adder
    # needs P = 32 positions for both (no change on "whole"); the last layer's class-token
    # GeLU, on the fss path under "online", has 452 B keys instead of 806: 7 x 512 x 354 =
    # 1,268,736 B fewer dealer bytes (294,147,471 -> 292,878,735; mu0.5: 89,548,547 ->
    # 88,279,811).
    "teacher": ({"model": "vit_7_4_32_teacher"},
                ((89_871_331, 494), (64_555_475, 493), 90_202_395)),
    "teacher-online": ({"model": "vit_7_4_32_teacher"},
                       ((88_454_795, 359), (63_138_939, 358), 292_878_735)),
    # --precision precise: f = 20, dealer truncation (1 round per truncation), finer
    # LayerNorm, softmax and GeLU (protocols/approx_config.precision_configs). The GeLU's
    # comparisons drop 20 - 5 = 15 bits there: 17 bits, P = 16 positions on the adder, one
    # round fewer per GeLU (7) and cost_model.adder_costs(compact=True) at 17 bits instead
    # of 32: online 13,229,568 B fewer per party (+ 7 headers of 60 B), dealer 8,797,184 B
    # fewer (+ 7 x 14 B of array headers); was ((131_170_719, 770), (105_854_863, 769),
    # 172_151_206)
    "teacher-precise": ({"model": "vit_7_4_32_teacher", "precision": "precise"},
                        ((117_940_731, 763), (92_624_875, 762), 163_353_924)),
    "mu0.5": ({"model": "vit_7_4_32", "mu": 0.5},
              ((81_099_326, 280), (55_783_470, 279), 76_144_610)),
    "mu0.5-online": ({"model": "vit_7_4_32", "mu": 0.5},
                     ((80_992_916, 272), (55_677_060, 271), 88_279_811)),
}


@pytest.mark.parametrize("case", sorted(PINS))
def test_vit_7_4_32_whole_model_cost_is_pinned(case: str) -> None:
    params, (party0, party1, dealer_bytes) = PINS[case]
    objective = "online" if case.endswith("-online") else "whole"
    precision = str(params.get("precision", "default"))
    cfg = RunConfig(n_parties=2, seed=0, timeout_s=120, auto_objective=objective,
                    frac_bits=PRECISION_FRAC_BITS[precision],
                    truncation=precision_truncation(precision, 2),
                    job=JobSpec.make("vit", batch=1, **params))
    job = VitJob(cfg)
    run = run_in_memory_detailed(cfg, job.run, CORRELATIONS)
    online = [(r["phases"]["online"]["bytes"], r["phases"]["online"]["rounds"]) for r in run.reports]
    assert online == [party0, party1]
    assert run.dealer_report["phases"]["offline"]["bytes"] == dealer_bytes
