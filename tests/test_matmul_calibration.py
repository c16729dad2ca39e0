"""The calibrated choice of exact ring-matmul kernel: cache, overrides, the model's choice,
and that every kernel gives the same ring result whatever is chosen. Nothing here is timed:
kernels are counted, calibrations are given."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from privit.protocols import matmul_calibration as mc
from privit.protocols import ring

TINY_SHAPES = (mc.MatmulDims(1, 2, 3, 2), mc.MatmulDims(2, 3, 4, 3), mc.MatmulDims(1, 4, 2100, 2))


class CountingKernels:
    """The real kernels, counting calls, so a test can tell a measurement from a cache hit."""

    def __init__(self) -> None:
        self.calls = 0

    def kernels(self) -> dict[str, mc.Kernel]:
        def int64(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return torch.matmul(a, b)

        def limbs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return ring.ring_matmul_limbs(a, b)
        return {"int64": int64, "limbs": limbs}

    def calibrator(self) -> mc.MatmulCalibrator:
        return mc.MatmulCalibrator(self.kernels(), ring.matmul_features, shapes=TINY_SHAPES, reps=1)


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "privit"


def fake(int64: tuple[float, ...], limbs: tuple[float, ...]) -> mc.Calibration:
    return mc.Calibration(mc.CalibrationKey.here(1), {"int64": int64, "limbs": limbs})


# -- cache ---------------------------------------------------------------------------------
def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert mc.cache_dir() == tmp_path / "privit"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec says: ignore it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mc.cache_dir() == tmp_path / "home" / ".cache" / "privit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert mc.cache_dir() == tmp_path / "home" / ".cache" / "privit"


def test_calibration_is_measured_once_then_read_from_the_cache(cache_home: Path) -> None:
    first = CountingKernels()
    cal = first.calibrator().calibration(threads=1)
    # one warm-up and `reps` timed passes over every shape, for both kernels
    assert first.calls == 2 * len(TINY_SHAPES) * 2
    assert cal.source == "measured" and cal.key.threads == 1
    assert len(cal.samples) == 2 * len(TINY_SHAPES)
    files = list(cache_home.glob("matmul-*.json"))
    assert [f.name for f in files] == [cal.key.file_name()]

    second = CountingKernels()
    calibrator = second.calibrator()
    again = calibrator.calibration(threads=1)
    assert second.calls == 0
    assert again.source == "cache"
    assert again.coefficients == cal.coefficients and again.key == cal.key
    assert again.samples == cal.samples
    assert calibrator.calibration(threads=1) is again  # memoised in the process

    calibrator.calibration(threads=1, remeasure=True)
    assert second.calls == 2 * len(TINY_SHAPES) * 2


def test_each_thread_count_has_its_own_entry(cache_home: Path) -> None:
    calibrator = CountingKernels().calibrator()
    one, two = calibrator.calibration(threads=1), calibrator.calibration(threads=2)
    assert (one.key.threads, two.key.threads) == (1, 2)
    assert one.key.file_name() != two.key.file_name()
    assert len(list(cache_home.glob("matmul-*.json"))) == 2


@pytest.mark.parametrize("content", [
    "{not json",
    "",
    "[1, 2, 3]",
    '{"key": {"cpu": "another CPU", "torch": "0", "threads": 1, "model": 1}}',
    "NEGATIVE",
    "MISSING_KERNEL",
    "NAN",
])
def test_corrupt_cache_is_ignored_and_rewritten(cache_home: Path, content: str) -> None:
    key = mc.CalibrationKey.here(1)
    good = fake((1e-5, 1e-9), (1e-4, 1e-11, 1e-9)).to_json()
    if content == "NEGATIVE":
        good["coefficients"]["int64"] = [1e-5, -1e-9]
        content = json.dumps(good)
    elif content == "MISSING_KERNEL":
        del good["coefficients"]["limbs"]
        content = json.dumps(good)
    elif content == "NAN":
        good["coefficients"]["limbs"] = [1e-4, float("nan"), 0.0]
        content = json.dumps(good)
    cache_home.mkdir(parents=True)
    path = cache_home / key.file_name()
    path.write_text(content)

    counting = CountingKernels()
    cal = counting.calibrator().calibration(threads=1)
    assert counting.calls > 0 and cal.source == "measured"
    reread = mc.Calibration.from_json(json.loads(path.read_text()), key, {"int64": 2, "limbs": 3})
    assert reread.coefficients == cal.coefficients


def test_unwritable_cache_is_not_an_error(cache_home: Path) -> None:
    cache_home.parent.mkdir(parents=True, exist_ok=True)
    cache_home.write_text("a file where the cache folder should be")
    counting = CountingKernels()
    cal = counting.calibrator().calibration(threads=1)
    assert cal.source == "measured" and counting.calls > 0
    assert cache_home.read_text() == "a file where the cache folder should be"


def test_calibration_key_names_cpu_torch_threads() -> None:
    key = mc.CalibrationKey.here(3)
    assert key.torch == torch.__version__ and key.threads == 3 and key.model == mc.MODEL_VERSION
    assert key.cpu and key.cpu == mc.cpu_model()
    assert key.file_name() != mc.CalibrationKey(key.cpu, "0.0", 3).file_name()


# -- the model and the choice ------------------------------------------------------------
def test_fit_recovers_coefficients_and_stays_non_negative() -> None:
    rows = [(1.0, 10.0, 3.0), (1.0, 200.0, 1.0), (1.0, 50.0, 40.0), (1.0, 1000.0, 7.0)]
    truth = (0.5, 0.01, 0.2)
    seconds = [sum(c * x for c, x in zip(truth, r, strict=True)) for r in rows]
    assert mc.fit_non_negative(rows, seconds) == pytest.approx(truth, rel=1e-9)
    # Time falling with the second feature would need a negative coefficient: clamped to 0.
    coef = mc.fit_non_negative([(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)], [3.0, 2.0, 1.0])
    assert coef[1] == 0.0 and coef[0] > 0


def test_features_count_the_limb_kernel_work() -> None:
    d = mc.MatmulDims(2, 3, 5, 7)
    assert ring.matmul_features("int64", d) == (1.0, 2 * 3 * 5 * 7)
    for k, gemms, n_limbs in ((5, 6, 3), (2048, 6, 3), (2049, 10, 4)):
        d = mc.MatmulDims(2, 3, k, 7)
        _, gemm_macs, passes = ring.matmul_features("limbs", d)
        assert gemm_macs == gemms * d.macs
        assert passes > n_limbs * 2 * (3 * k + k * 7)
    with pytest.raises(ValueError):
        ring.matmul_features("float32", d)


def test_matmul_dims_broadcast_the_batch() -> None:
    assert ring.matmul_dims((3, 1, 4, 5), (2, 5, 6)) == (6, 4, 5, 6)
    assert ring.matmul_dims((4, 5), (5, 6)) == (1, 4, 5, 6)


def test_choice_follows_the_given_model() -> None:
    # int64 costs 1 ns per MAC; limbs a fixed 1 ms: the crossover is at 10^6 MACs.
    cal = fake((0.0, 1e-9), (1e-3, 0.0, 0.0))
    assert ring.choose_matmul_method((100, 100), (100, 99), 1, cal) == "int64"   # 990,000 MACs
    assert ring.choose_matmul_method((100, 100), (100, 101), 1, cal) == "limbs"  # 1,010,000
    assert ring.choose_matmul_method((2, 50, 100), (100, 101), 1, cal) == "limbs"  # batch counts
    # limbs pay per GEMM MAC: 6 GEMMs up to k = 2048, 10 beyond. At 0.2 ns int64 wins both
    # (1.2 and 2 ns against 1 ns per MAC); at 0.05 ns limbs win both (0.3 and 0.5 ns).
    slow_gemm = fake((0.0, 1e-9), (0.0, 2e-10, 0.0))
    fast_gemm = fake((0.0, 1e-9), (0.0, 5e-11, 0.0))
    for shapes in (((64, 256), (256, 64)), ((16, 3072), (3072, 16))):
        assert ring.choose_matmul_method(*shapes, 1, slow_gemm) == "int64"
        assert ring.choose_matmul_method(*shapes, 1, fast_gemm) == "limbs"
    # a tie goes to the native kernel
    assert ring.choose_matmul_method((64, 256), (256, 64), 1, fake((1.0, 0.0), (1.0, 0.0, 0.0))) == "int64"


class RefusingCalibrator:
    def calibration(self, threads: int, remeasure: bool = False) -> mc.Calibration:
        raise AssertionError("calibration was not supposed to run")


def test_small_products_take_int64_without_calibrating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ring, "MATMUL_CALIBRATOR", RefusingCalibrator())
    assert ring.choose_matmul_method((17, 64), (64, 59), 1) == "int64"  # 64,192 MACs
    assert ring.choose_matmul_method((0, 4096), (4096, 4096), 1) == "int64"
    limbs_cheap = fake((0.0, 1.0), (0.0, 0.0, 0.0))
    assert ring.choose_matmul_method((1, ring.LIMBS_MAX_K + 1), (ring.LIMBS_MAX_K + 1, 1), 1,
                                     limbs_cheap) == "int64"
    with pytest.raises(AssertionError, match="not supposed"):
        ring.choose_matmul_method((64, 64), (64, 64), 1)


def test_auto_uses_the_process_calibration_of_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    class Given:
        def calibration(self, threads: int, remeasure: bool = False) -> mc.Calibration:
            asked.append(threads)
            return fake((0.0, 1.0), (0.0, 0.0, 0.0))  # limbs free

    monkeypatch.setattr(ring, "MATMUL_CALIBRATOR", Given())
    assert ring.choose_matmul_method((64, 64), (64, 64), 3) == "limbs"
    calls = spy_limbs(monkeypatch)
    a = torch.ones((64, 64), dtype=torch.int64)
    assert torch.equal(ring.ring_matmul(a, a), torch.full((64, 64), 64, dtype=torch.int64))
    assert calls == [1] and asked == [3, torch.get_num_threads()]


def spy_limbs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = ring.ring_matmul_limbs

    def spy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return real(a, b)
    monkeypatch.setattr(ring, "ring_matmul_limbs", spy)
    return calls


# -- overrides -------------------------------------------------------------------------------
def test_environment_forces_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ring, "MATMUL_CALIBRATOR", RefusingCalibrator())
    limbs_cheap = fake((0.0, 1.0), (0.0, 0.0, 0.0))
    int64_cheap = fake((0.0, 0.0), (1.0, 1.0, 1.0))
    monkeypatch.setenv(ring.MATMUL_ENV, "int64")
    assert ring.choose_matmul_method((500, 500), (500, 500), 1, limbs_cheap) == "int64"
    monkeypatch.setenv(ring.MATMUL_ENV, " Limbs ")
    assert ring.choose_matmul_method((500, 500), (500, 500), 1, int64_cheap) == "limbs"
    assert ring.choose_matmul_method((2, 2), (2, 2), 1) == "limbs"  # small products too
    monkeypatch.setenv(ring.MATMUL_ENV, "auto")
    assert ring.choose_matmul_method((500, 500), (500, 500), 1, int64_cheap) == "int64"
    monkeypatch.setenv(ring.MATMUL_ENV, "")
    assert ring.choose_matmul_method((500, 500), (500, 500), 1, limbs_cheap) == "limbs"
    monkeypatch.setenv(ring.MATMUL_ENV, "float32")
    with pytest.raises(ValueError, match="PRIVIT_MATMUL"):
        ring.choose_matmul_method((500, 500), (500, 500), 1, limbs_cheap)


def test_ring_matmul_honours_environment_and_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_limbs(monkeypatch)
    gen = torch.Generator().manual_seed(1)
    a, b = random_ring((3, 4), gen), random_ring((4, 5), gen)
    monkeypatch.setenv(ring.MATMUL_ENV, "limbs")
    assert torch.equal(ring.ring_matmul(a, b), torch.matmul(a, b))
    assert calls == [1]
    assert torch.equal(ring.ring_matmul(a, b, "int64"), torch.matmul(a, b))  # argument wins
    assert calls == [1]
    monkeypatch.setenv(ring.MATMUL_ENV, "int64")
    ring.ring_matmul(a, b, "limbs")
    ring.ring_matmul(a, b)
    assert calls == [1, 1]


# -- exactness, whatever is chosen ---------------------------------------------------------
def random_ring(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randint(ring.INT64_MIN, ring.INT64_MAX, shape, generator=gen, dtype=torch.int64)


def random_shapes(count: int, seed: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Random product shapes with broadcast batch dims and inner dimensions on both sides
    of the limbs' 3-to-4-limb switch at k = 2048."""
    gen = torch.Generator().manual_seed(seed)

    def draw(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))
    shapes = []
    for i in range(count):
        n, m = draw(1, 9), draw(1, 9)
        k = (draw(1, 300), draw(2040, 2060), draw(2049, 3100))[i % 3]
        batch_a = [draw(1, 3) for _ in range(draw(0, 2))]
        # the other operand's batch: some dims 1, some leading dims absent (both broadcast)
        batch_b = [d if draw(0, 1) else 1 for d in batch_a][draw(0, len(batch_a)):]
        if draw(0, 1):
            batch_a, batch_b = batch_b, batch_a
        shapes.append(((*batch_a, n, k), (*batch_b, k, m)))
    return shapes


@pytest.mark.parametrize("sa, sb", random_shapes(18, seed=7))
def test_both_kernels_are_exact_on_random_shapes(sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(math.prod(sa) + math.prod(sb))
    a, b = random_ring(sa, gen), random_ring(sb, gen)
    a.view(-1)[:4] = torch.tensor([ring.INT64_MIN, ring.INT64_MAX, -1, 0])[: a.numel()][:4]
    want = torch.matmul(a, b)  # torch's own int64 kernel wraps mod 2^64, batch broadcast
    # one element against Python big integers, to pin the reference itself
    ia, ib = a.reshape(-1, *sa[-2:])[-1], b.reshape(-1, *sb[-2:])[-1]
    exact = sum(int(x) * int(y) for x, y in zip(ia[-1].tolist(), ib[:, -1].tolist(), strict=True))
    assert int(want.reshape(-1, *want.shape[-2:])[-1, -1, -1]) == ring.to_signed(exact)
    assert torch.equal(ring.ring_matmul(a, b, "limbs"), want)
    assert torch.equal(ring.ring_matmul(a, b, "int64"), want)
    assert torch.equal(ring.ring_matmul(a, b), want)


# -- the command ---------------------------------------------------------------------------
def test_calibrate_command_measures_then_reads_the_cache(cache_home: Path) -> None:
    cmd = [sys.executable, "-m", "privit.launch.cli", "calibrate", "--threads", "1"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    path = cache_home / mc.CalibrationKey.here(1).file_name()
    assert f"calibration measured now {path}" in first.stdout
    assert f"CPU {mc.cpu_model()}, torch {torch.__version__}, 1 thread" in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert f"calibration read from {path}" in second.stdout
    for output in (first.stdout, second.stdout):
        rows = [line for line in output.splitlines() if line.startswith(("vit_", "bench", "ViT-"))]
        assert len(rows) == 9 and all(line.split()[-1] in ("int64", "limbs") for line in rows)


# -- narrow weights (ring_matmul_narrow) -------------------------------------------------------
def test_narrow_features_are_the_limbs_ones_with_fewer_gemms() -> None:
    d = mc.MatmulDims(1, 197, 3072, 768)
    assert ring.narrow_features(d, 21) == (1.0, 3 * d.macs, 3 * 197 * (3072 + 768) + 3072 * 768)
    assert ring.narrow_features(d, 22) == (1.0, 4 * d.macs, 4 * 197 * (3072 + 768) + 3072 * 768)
    assert ring.narrow_features(d, 21)[1] < ring.matmul_features("limbs", d)[1]


def test_narrow_is_chosen_by_its_predicted_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ring, "MATMUL_CALIBRATOR", RefusingCalibrator())
    # int64 1 ns per MAC, limbs 0.3 ns per GEMM MAC: 6 GEMMs (1.8 ns) lose, 3 (0.9 ns) win
    cal = fake((0.0, 1e-9), (0.0, 3e-10, 0.0))
    shapes = ((197, 768), (768, 768))
    assert ring.choose_matmul_method(*shapes, 1, cal) == "int64"
    assert ring.choose_matmul_method(*shapes, 1, cal, w_bits=21) == "narrow"
    assert ring.choose_matmul_method(*shapes, 1, cal, w_bits=40) == "int64"  # 13 limbs
    # with cheap GEMMs narrow beats the general limbs; no plan for k (w_bits 53) leaves limbs
    cheap = fake((0.0, 1e-9), (0.0, 1e-11, 0.0))
    assert ring.choose_matmul_method(*shapes, 1, cheap, w_bits=21) == "narrow"
    assert ring.choose_matmul_method(*shapes, 1, cheap, w_bits=53) == "limbs"
    assert ring.choose_matmul_method((17, 64), (64, 59), 1, w_bits=21) == "int64"  # small
    monkeypatch.setenv(ring.MATMUL_ENV, "limbs")
    assert ring.choose_matmul_method(*shapes, 1, w_bits=21) == "narrow"
    assert ring.choose_matmul_method(*shapes, 1, w_bits=53) == "limbs"
    assert ring.choose_matmul_method(*shapes, 1) == "limbs"
    monkeypatch.setenv(ring.MATMUL_ENV, "int64")
    assert ring.choose_matmul_method(*shapes, 1, cheap, w_bits=21) == "int64"
