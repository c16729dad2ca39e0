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
    # Since 2026-12-08 two parties truncate exactly by default (truncation.truncate_exact_many:
    # 1 round of one packed bit per element each way, 2 B per element to party 1 from the
    # dealer at s <= 16) instead of locally (0 rounds, but a failure with probability
    # |x| / 2^64 per element). The teacher: 494 -> 726 rounds, +494,089 B online per party,
    # +8,829,546 B dealer; the "-local" case keeps local truncation's costs pinned.
    "teacher": ({"model": "vit_7_4_32_teacher"},
                ((90_365_420, 726), (65_049_564, 725), 99_031_941)),
    "teacher-local": ({"model": "vit_7_4_32_teacher"},
                      ((89_871_331, 494), (64_555_475, 493), 90_202_395)),
    "teacher-online": ({"model": "vit_7_4_32_teacher"},
                       ((88_948_884, 591), (63_633_028, 590), 301_708_073)),
    # --precision precise: f = 20, finer LayerNorm, softmax and GeLU
    # (protocols/approx_config.precision_configs); its truncation went from the dealer's
    # pairs to exact with the same rounds: online -31,099,129 B per party (8 B -> 1 bit per
    # element), dealer -48,349,665 B (16 B -> 4 B per element at 17 <= s <= 32). The GeLU's
    # comparisons drop 20 - 5 = 15 bits there: 17 bits, P = 16 positions on the adder.
    # Was ((117_940_731, 763), (92_624_875, 762), 163_353_924) with dealer truncation.
    "teacher-precise": ({"model": "vit_7_4_32_teacher", "precision": "precise"},
                        ((86_841_602, 763), (61_525_746, 762), 115_004_259)),
    "mu0.5": ({"model": "vit_7_4_32", "mu": 0.5},
              ((81_462_016, 467), (56_146_160, 466), 82_806_442)),
    "mu0.5-online": ({"model": "vit_7_4_32", "mu": 0.5},
                     ((81_355_606, 459), (56_039_750, 458), 94_941_765)),
}


@pytest.mark.parametrize("case", sorted(PINS))
def test_vit_7_4_32_whole_model_cost_is_pinned(case: str) -> None:
    params, (party0, party1, dealer_bytes) = PINS[case]
    objective = "online" if case.endswith("-online") else "whole"
    precision = str(params.get("precision", "default"))
    trunc = "local" if case.endswith("-local") else precision_truncation(precision, 2)
    cfg = RunConfig(n_parties=2, seed=0, timeout_s=120, auto_objective=objective,
                    frac_bits=PRECISION_FRAC_BITS[precision], truncation=trunc,
                    job=JobSpec.make("vit", batch=1, **params))
    job = VitJob(cfg)
    run = run_in_memory_detailed(cfg, job.run, CORRELATIONS)
    online = [(r["phases"]["online"]["bytes"], r["phases"]["online"]["rounds"]) for r in run.reports]
    assert online == [party0, party1]
    assert run.dealer_report["phases"]["offline"]["bytes"] == dealer_bytes
