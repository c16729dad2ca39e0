"""Typed, frozen configuration of the non-linear approximations (docs/nonlinear.md).

Every iteration count, initial-guess table, polynomial and input range of exp.py,
reciprocal.py, rsqrt.py, softmax.py, gelu.py and layernorm.py lives here, in frozen
dataclasses built by launch/ (or the defaults) and passed down explicitly. Derived tables
(polynomial coefficients, threshold grids) are computed from a config on first use and
cached per config value; nothing is computed at import.

`method` is the comparison path of protocols/compare.py ("auto", "fss", "fss_compact",
"adder", "adder_compact"; the compact ones: one round more per ReLU gate); the
round counts in the docstrings are those of the FSS path (1 round per comparison step);
"adder" replaces each comparison step's 1 round by its log2(P) rounds (6 at 64 bits).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
from numpy.polynomial import chebyshev, polynomial

METHODS = ("auto", "fss", "fss_compact", "adder", "adder_compact")
T = TypeVar("T", bound=Any)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown comparison method {method!r}; choose from {METHODS}")


def with_method(cfg: T, method: str | None) -> T:
    """`cfg` with its comparison method replaced (None: unchanged)."""
    return cfg if method is None else replace(cfg, method=method)


def _monomial_fit(fn: Callable[[np.ndarray], np.ndarray], degree: int, lo: float, hi: float
                  ) -> tuple[float, ...]:
    """Monomial coefficients (lowest first) of the Chebyshev interpolant of fn on [lo, hi],
    in the variable itself (near-minimax; error within a few % of the best)."""
    cheb = chebyshev.Chebyshev.interpolate(fn, degree, domain=[lo, hi])
    mono = cheb.convert(kind=polynomial.Polynomial, domain=[lo, hi], window=[lo, hi])
    coef = list(mono.coef) + [0.0] * (degree + 1 - len(mono.coef))
    return tuple(float(c) for c in coef)


# -- exp ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpConfig:
    """exp(x) for x <= 0 (exp.py).

    clip: inputs below -clip are clamped to -clip (result e^-clip; abs error < e^-clip).
      A power of two >= 4, so that mapping [-clip, 0] onto [-1, 1] is a shift.
    squarings: s; the polynomial approximates e^y on y in [-clip / 2^s, 0] and the
      result is raised to 2^s by s squarings (relative errors grow by 2^s).
    degree: of the polynomial in v = 2 (x + clip) / clip - 1 in [-1, 1]; evaluated in
      ceil(log2 degree) rounds (degree <= 2^r).
    coeff_bits: extra fractional bits of the public coefficients.
    clamp_high: also clamp x > 0 to 0 (result 1) in the same comparison round (doubles
      the comparisons); softmax turns it off because x - max <= 0 by construction.
    compare_bits: bits of the clamp's ReLU (compare.relu): exact for |x| + clip <
      2^(bits - 1 - f) (32 bits, f = 16: 32768); 64 halves the online bytes of the clamp
      (one shared opening) but doubles its offline key material.
    clamp_drop_bits: without clamp_high, the low clamp relu(x + T) compares x + T with its
      k low bits dropped (Circa's truncated sign, circa.truncated_share, floor mode) on
      compare_bits - k + 1 bits (same range); None: k = f. An x + T in [0, 2^k) ulps may
      clamp to 0: abs error < e^(-T + 2^(k-f)) - e^(-T) (k = f, T = 16: 2.0e-7), for keys
      of 64 (compare_bits - k + 1) - 16 B instead of 64 compare_bits - 16 (k = f = 16: 1072
      instead of 2032). 0: the exact comparison.
    """

    clip: float = 16.0
    squarings: int = 2
    degree: int = 8
    coeff_bits: int = 2
    clamp_high: bool = True
    compare_bits: int = 32
    method: str = "auto"
    clamp_drop_bits: int | None = None

    def __post_init__(self) -> None:
        _check_method(self.method)
        if self.clamp_drop_bits is not None and not 0 <= self.clamp_drop_bits <= self.compare_bits - 8:
            raise ValueError(f"clamp_drop_bits must be in [0, compare_bits - 8], got "
                             f"{self.clamp_drop_bits}")
        if self.clip < 4 or 2 ** round(math.log2(self.clip)) != self.clip:
            raise ValueError(f"clip must be a power of two >= 4, got {self.clip}")
        if not 0 <= self.squarings <= 6:
            raise ValueError(f"squarings must be in [0, 6], got {self.squarings}")
        if not 2 <= self.degree <= 16:
            raise ValueError(f"degree must be in [2, 16], got {self.degree}")
        if not 0 <= self.coeff_bits <= 8:
            raise ValueError(f"coeff_bits must be in [0, 8], got {self.coeff_bits}")
        if not 8 <= self.compare_bits <= 64:
            raise ValueError(f"compare_bits must be in [8, 64], got {self.compare_bits}")

    @property
    def half_width(self) -> float:
        """y = half_width (v - 1): the polynomial's variable v in [-1, 1] covers y in
        [-clip / 2^s, 0]."""
        return self.clip / 2 ** (self.squarings + 1)

    def coefficients(self) -> tuple[float, ...]:
        """p(v) ~ exp(half_width (v - 1)) on [-1, 1], lowest degree first."""
        return _exp_coefficients(self)


@lru_cache(maxsize=32)
def _exp_coefficients(cfg: ExpConfig) -> tuple[float, ...]:
    h = cfg.half_width
    return _monomial_fit(lambda v: np.exp(h * (v - 1.0)), cfg.degree, -1.0, 1.0)


# -- threshold grids: the initial guesses of reciprocal and rsqrt ----------------------------------
@dataclass(frozen=True)
class Grid:
    """Thresholds tau_1 < ... < tau_K (real units) and guesses y_0..y_K: the guess is y_i
    for x in [tau_i, tau_{i+1}) (tau_0 = -inf, tau_{K+1} = +inf)."""

    thresholds: tuple[float, ...]
    guesses: tuple[float, ...]

    @property
    def ratio(self) -> float:
        t = self.thresholds
        return t[1] / t[0] if len(t) > 1 else 2.0


def geometric_thresholds(lo_log2: float, hi_log2: float, per_octave: int) -> tuple[float, ...]:
    """2^(lo + i / per_octave) for i = 0 .. (hi - lo) per_octave (both ends included)."""
    steps = int(round((hi_log2 - lo_log2) * per_octave))
    if steps < 1 or abs(steps - (hi_log2 - lo_log2) * per_octave) > 1e-9:
        raise ValueError(f"range [2^{lo_log2}, 2^{hi_log2}] is not a whole number of "
                         f"1/{per_octave} octaves")
    return tuple(2.0 ** (lo_log2 + i / per_octave) for i in range(steps + 1))


@lru_cache(maxsize=64)
def reciprocal_grid(lo_log2: float, hi_log2: float, per_octave: int) -> Grid:
    """Guess 2 / (tau_i + tau_{i+1}) on [tau_i, tau_{i+1}): |1 - x y| <= (rho-1)/(rho+1).
    Below tau_1 the first interval's guess; from tau_K = 2^hi on the guess is 0 (the
    reciprocal is clamped to 0 there, abs error < 2^-hi)."""
    t = geometric_thresholds(lo_log2, hi_log2, per_octave)
    inner = [2.0 / (a + b) for a, b in zip(t[:-1], t[1:], strict=True)]
    return Grid(t, (inner[0], *inner, 0.0))


@lru_cache(maxsize=64)
def rsqrt_grid(lo_log2: float, hi_log2: float, per_octave: int, scale: float = 1.0) -> Grid:
    """Guess y with y^2 = 2 scale / (tau_i (1 + rho)) on [tau_i, rho tau_i): |1 - x y^2 /
    scale| <= (rho-1)/(rho+1). Below tau_1 the first interval's guess; above tau_K the grid
    continues one more step (the error then grows smoothly, see rsqrt.py)."""
    t = geometric_thresholds(lo_log2, hi_log2, per_octave)
    rho = 2.0 ** (1.0 / per_octave)
    inner = [math.sqrt(2.0 * scale / (a * (1.0 + rho))) for a in t]
    return Grid(t, (inner[0], *inner))


def guess_error(per_octave: int) -> float:
    """max |e0| of a grid guess, (rho - 1) / (rho + 1) with rho = 2^(1/per_octave)."""
    rho = 2.0 ** (1.0 / per_octave)
    return (rho - 1.0) / (rho + 1.0)


# -- reciprocal -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReciprocalConfig:
    """1/x for x in [2^lo_log2, 2^hi_log2) (reciprocal.py).

    per_octave: thresholds per octave of the guess grid (ONE batched comparison round);
      initial relative error |e0| <= (rho-1)/(rho+1), rho = 2^(1/per_octave) (4: 0.0864).
    factors: k, the result is y0 (1 + e0)(1 + e0^2)...(1 + e0^(2^(k-1))) = (1 - e0^(2^k))/x;
      rounds after the comparison: k + 1.
    scale_bits: L, extra fractional bits of the guess y0, so that y0 >= 2^-hi keeps >= 6
      significant bits: need f + L - hi >= 6. Products of y0 carry 2^(2f+L).
    compare_bits: bits of the threshold comparisons (None: the smallest that holds x).
    Below 2^lo the guess of the first interval is used: the result (1 - e0^(2^k))/x stays
    below 2^k y_0 (bounded, an underestimate). At x >= 2^hi the result is 0.
    """

    lo_log2: float = 0.0
    hi_log2: float = 8.0
    per_octave: int = 4
    factors: int = 2
    scale_bits: int = 0
    compare_bits: int | None = None
    method: str = "auto"

    def __post_init__(self) -> None:
        _check_method(self.method)
        if not self.lo_log2 < self.hi_log2:
            raise ValueError(f"empty range [2^{self.lo_log2}, 2^{self.hi_log2})")
        if not 1 <= self.per_octave <= 16:
            raise ValueError(f"per_octave must be in [1, 16], got {self.per_octave}")
        if not 1 <= self.factors <= 6:
            raise ValueError(f"factors must be in [1, 6], got {self.factors}")
        if not 0 <= self.scale_bits <= 12:
            raise ValueError(f"scale_bits must be in [0, 12], got {self.scale_bits}")

    def grid(self) -> Grid:
        return reciprocal_grid(self.lo_log2, self.hi_log2, self.per_octave)

    def relative_error(self) -> float:
        """Bound of the approximation alone (before fixed-point rounding) inside the range."""
        return guess_error(self.per_octave) ** (2 ** self.factors)


# -- inverse square root ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RsqrtConfig:
    """1/sqrt(x) for x in [2^lo_log2, 2^hi_log2) (rsqrt.py; LayerNorm uses the same guess).

    per_octave: thresholds per octave of x (ONE comparison round); |e0| = |1 - x y0^2|
      <= (rho-1)/(rho+1). degree: of the polynomial P(e) ~ (1 - e)^(-1/2) fitted on
      [-e_max, e_max], e_max = guess error + `rounding_margin`.
    scale_bits: extra fractional bits of y0 (need f + L - hi/2 >= 8 for a precise guess).
    """

    lo_log2: float = -8.0
    hi_log2: float = 12.0
    per_octave: int = 4
    degree: int = 2
    rounding_margin: float = 0.015
    scale_bits: int = 0
    compare_bits: int | None = None
    method: str = "auto"

    def __post_init__(self) -> None:
        _check_method(self.method)
        if not self.lo_log2 < self.hi_log2:
            raise ValueError(f"empty range [2^{self.lo_log2}, 2^{self.hi_log2})")
        if not 1 <= self.per_octave <= 16:
            raise ValueError(f"per_octave must be in [1, 16], got {self.per_octave}")
        if not 1 <= self.degree <= 4:
            raise ValueError(f"degree must be in [1, 4], got {self.degree}")
        if not 0 <= self.scale_bits <= 8:
            raise ValueError(f"scale_bits must be in [0, 8], got {self.scale_bits}")

    def grid(self) -> Grid:
        return rsqrt_grid(self.lo_log2, self.hi_log2, self.per_octave)

    def correction(self) -> tuple[float, ...]:
        return inv_sqrt_correction(guess_error(self.per_octave) + self.rounding_margin, self.degree)


@lru_cache(maxsize=32)
def inv_sqrt_correction(e_max: float, degree: int) -> tuple[float, ...]:
    """Coefficients of P(e) ~ (1 - e)^(-1/2) on [-e_max, e_max], lowest first."""
    return _monomial_fit(lambda e: (1.0 - e) ** -0.5, degree, -e_max, e_max)


# -- attention normalisers -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SoftmaxConfig:
    """softmax (softmax.py): max by compare.maximum, exp of x - max (clamp_high off),
    row sum in [1, N], reciprocal on [2^-0.5, 2^(ceil(log2 N) + 0.5)) with this
    per_octave / factors (scale_bits 0: y0 >= 2^-9 keeps 7 bits).

    compare_bits: of the maximum's and the clamp's comparisons: exact for inputs with
      |x| < 2^(bits - 2 - f) (32 bits, f = 16: 16384); a larger spread wraps the
      comparisons (use 64 bits for unbounded inputs, at twice the offline key size).
    """

    exp: ExpConfig = field(default_factory=lambda: ExpConfig(clamp_high=False))
    per_octave: int = 4
    factors: int = 2
    compare_bits: int = 32
    method: str = "auto"

    def __post_init__(self) -> None:
        _check_method(self.method)
        if not 8 <= self.compare_bits <= 64:
            raise ValueError(f"compare_bits must be in [8, 64], got {self.compare_bits}")

    def reciprocal(self, n: int) -> ReciprocalConfig:
        """The row-sum reciprocal for rows of n elements (sum in [1, n])."""
        hi = math.ceil(math.log2(max(n, 2))) + 0.5
        return ReciprocalConfig(lo_log2=-0.5, hi_log2=hi, per_octave=self.per_octave,
                                factors=self.factors, scale_bits=0, method=self.method)


@dataclass(frozen=True)
class ReluSoftmaxConfig:
    """MPCViT's ReLU-softmax (softmax.py): relu, row sum s, s + eps in [0, 2^hi).

    The default covers row sums up to 2^14 (N = 257 keys with a mean ReLU score up to 63)
    with scale_bits 4 (f + L - hi = 6); a row sum >= 2^hi gives an all-zero row.
    compare_bits: of the ReLU, exact for |s| < 2^(bits - 1 - f) (32 bits: 32768); the row
    sum's threshold comparisons then use bits + ceil(log2 N) + 1 bits (at most 64)."""

    reciprocal: ReciprocalConfig = field(default_factory=lambda: ReciprocalConfig(
        lo_log2=-16.0, hi_log2=14.0, per_octave=4, factors=2, scale_bits=4))
    compare_bits: int = 32
    method: str = "auto"

    def __post_init__(self) -> None:
        _check_method(self.method)
        if not 8 <= self.compare_bits <= 64:
            raise ValueError(f"compare_bits must be in [8, 64], got {self.compare_bits}")


@dataclass(frozen=True)
class TwoQuadConfig:
    """MPCFormer's 2Quad (softmax.py): (s + c)^2 / sum_row (s + c)^2, row sums in
    [0, 2^hi) (default 2^17: N = 257 with (s + c)^2 up to 510 on average)."""

    reciprocal: ReciprocalConfig = field(default_factory=lambda: ReciprocalConfig(
        lo_log2=-16.0, hi_log2=17.0, per_octave=4, factors=2, scale_bits=7))
    method: str = "auto"


# -- GeLU --------------------------------------------------------------------------------------------
def _gelu_tail(t: np.ndarray) -> np.ndarray:
    """g(t) = t Phi(-t) = t erfc(t / sqrt 2) / 2, the correction GeLU(x) = ReLU(x) - g(|x|)."""
    return t * 0.5 * np.vectorize(math.erfc)(t / math.sqrt(2.0))


@dataclass(frozen=True)
class GeluErfConfig:
    """The pieces of the "erf" GeLU (gelu.py `gelu_erf`): g(t) = t Phi(-t) ~ p_j(t) on
    [b_(j-1), b_j) for 0 = b_0 < b_1 < ... < b_m = cutoff, 0 from the cutoff on.

    breakpoints: b_1 .. b_(m-1); p_j has degree 4, the Chebyshev interpolant of g on its
      piece (monomial coefficients in t itself). Defaults (0.95, 2.2, cutoff 4.25): 3.9e-5
      inside, g(4.25) = 4.5e-5 beyond; both below 1e-4 with the fixed-point rounding.
    coeff_bits: fractional bits of the coefficients beyond f; their rounding costs at most
      2^-(coeff_bits + 1) sum_k |x|^k (24 bits: 1.3e-5 at |x| = 4.25). The correction is
      summed at f + coeff_bits bits before ONE truncation, so keep f + coeff_bits <= 44
      (local truncation fails with probability |value| / 2^64).
    """

    cutoff: float = 4.25
    breakpoints: tuple[float, ...] = (0.95, 2.2)
    coeff_bits: int = 24

    def __post_init__(self) -> None:
        ends = (0.0, *self.breakpoints, self.cutoff)
        if any(lo >= hi for lo, hi in zip(ends[:-1], ends[1:], strict=True)):
            raise ValueError(f"need 0 < breakpoints < cutoff, increasing; got {ends[1:]}")
        if not 0 < self.cutoff < 16:
            raise ValueError(f"cutoff must be in (0, 16), got {self.cutoff}")
        if not 8 <= self.coeff_bits <= 28:
            raise ValueError(f"coeff_bits must be in [8, 28], got {self.coeff_bits}")

    def pieces(self) -> tuple[tuple[float, float], ...]:
        """[(b_0, b_1), (b_1, b_2), ..., (b_(m-1), cutoff)]."""
        ends = (0.0, *self.breakpoints, self.cutoff)
        return tuple(zip(ends[:-1], ends[1:], strict=True))

    def coefficients(self) -> tuple[tuple[float, ...], ...]:
        """Per piece, p_j(t) = c_0 + c_1 t + ... + c_4 t^4 ~ t Phi(-t), lowest first."""
        return _gelu_piece_coefficients(self.pieces())


@lru_cache(maxsize=32)
def _gelu_piece_coefficients(pieces: tuple[tuple[float, float], ...]) -> tuple[tuple[float, ...], ...]:
    return tuple(_monomial_fit(_gelu_tail, 4, lo, hi) for lo, hi in pieces)


@dataclass(frozen=True)
class GeluConfig:
    """GeLU(x) = ReLU(x) - g(|x|), g(t) = t Phi(-t), for both accurate kinds of gelu.py.

    "poly": g ~ t h(t) on [0, cutoff), 0 beyond.
    coefficients: h(t) = c0 + c1 t + c2 t^2 + c3 t^3, the minimax (LP on 3000 points) of
      |t (Phi(-t) - h(t))| on [0, 3.3]: 2.07e-3; the tail cutoff Phi(-cutoff) = 1.6e-3.
      Max abs error of the approximation 2.1e-3 on the whole line.
    coeff_bits: extra fractional bits of the coefficients.
    "erf": the pieces in `erf` (GeluErfConfig): max abs error 4.5e-5 of the approximation,
      6.5e-5 with the comparisons' dropped bits (compare_frac_bits), 8.1e-5 with the
      fixed-point rounding too (f = 16; 5.8e-5 with compare_frac_bits=None), on the whole
      line.
    compare_bits: the comparisons (x against 0 and +-each piece end) look at this many low
      bits of x: exact for |x| < 2^(bits - 1 - f) - cutoff - 2^-compare_frac_bits (32 bits,
      f = 16: |x| < 32763).
    compare_frac_bits: the comparisons keep this many fractional bits of x: every party
      drops the k = f - compare_frac_bits low bits of its share of x - end + 2^(k-1)
      (Circa's local truncation, circa.truncated_share; 0 if f <= compare_frac_bits) and
      they compare on compare_bits - k bits (f = 16: 21, f = 20: 17). A comparison then
      reads x against the end moved by less than 2^-(compare_frac_bits + 1) (1/64 at 5):
      near a piece end the neighbouring piece's polynomial, near 0 the other sign (where
      x - p_1(x) and -p_1(-x) are both GeLU(x), Circa's observation for ReLU), near the
      cutoff the polynomial or 0. The worst of these on the default pieces: 6.5e-5 erf
      (4.5e-5 at full precision), 2.07e-3 poly (unchanged); see gelu.py. None: k = 0.
    """

    cutoff: float = 3.3
    coefficients: tuple[float, ...] = (0.52984584, -0.53099737, 0.17928217, -0.02031018)
    compare_bits: int = 32
    coeff_bits: int = 4
    method: str = "auto"
    erf: GeluErfConfig = field(default_factory=GeluErfConfig)
    compare_frac_bits: int | None = 5

    def __post_init__(self) -> None:
        _check_method(self.method)
        if len(self.coefficients) != 4:
            raise ValueError("GeLU h(t) has 4 coefficients (degree 3)")
        if not 0 < self.cutoff < 16:
            raise ValueError(f"cutoff must be in (0, 16), got {self.cutoff}")
        if not 8 <= self.compare_bits <= 64:
            raise ValueError(f"compare_bits must be in [8, 64], got {self.compare_bits}")
        if self.compare_frac_bits is not None and not 0 <= self.compare_frac_bits <= 16:
            raise ValueError(f"compare_frac_bits must be None or in [0, 16], got "
                             f"{self.compare_frac_bits}")

    def compare_drop(self, frac_bits: int) -> int:
        """k, the low bits of x the piece comparisons drop at f = frac_bits."""
        if self.compare_frac_bits is None:
            return 0
        drop = max(0, frac_bits - self.compare_frac_bits)
        if self.compare_bits - drop < 8:
            raise ValueError(f"GeLU comparisons on {self.compare_bits} - {drop} bits: keep "
                             f"at least 8 (raise compare_frac_bits or compare_bits)")
        return drop


# -- LayerNorm ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerNormConfig:
    """LayerNorm over the last dim (layernorm.py).

    var_lo_log2, var_hi_log2: the row variances (plus eps) the inverse-sqrt guess covers
      (default [2^-14, 2^14] ~ [6e-5, 1.6e4]); per_octave thresholds per octave of the
      variance (ONE comparison round); degree of the correction P(e) ~ (1 - e)^(-1/2).
    center_bits: the centred values are z = (d x - sum x) / 2^t with t = ceil(log2 d) -
      center_bits, i.e. z = kappa (x - mean) with kappa in (2^(c-1), 2^c].
    """

    var_lo_log2: float = -14.0
    var_hi_log2: float = 14.0
    per_octave: int = 4
    degree: int = 2
    rounding_margin: float = 0.015
    center_bits: int = 3
    coeff_bits: int = 2
    method: str = "auto"

    def __post_init__(self) -> None:
        _check_method(self.method)
        if not self.var_lo_log2 < self.var_hi_log2:
            raise ValueError("empty variance range")
        if not 1 <= self.per_octave <= 16:
            raise ValueError(f"per_octave must be in [1, 16], got {self.per_octave}")
        if not 1 <= self.degree <= 4:
            raise ValueError(f"degree must be in [1, 4], got {self.degree}")
        if not 0 <= self.center_bits <= 6:
            raise ValueError(f"center_bits must be in [0, 6], got {self.center_bits}")

    def correction_range(self) -> float:
        """e_max of the correction polynomial: the guess error plus a rounding margin."""
        return guess_error(self.per_octave) + self.rounding_margin


# -- precision levels ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PrecisionConfigs:
    """The configs of the private ViT's non-linear steps at one precision level
    (`--precision`, models/private_options.py, which also fixes the level's fractional
    bits and truncation)."""

    layer_norm: LayerNormConfig
    gelu: GeluConfig
    softmax: SoftmaxConfig
    relu_softmax: ReluSoftmaxConfig

    def with_method(self, method: str) -> PrecisionConfigs:
        """These configs with every comparison on `method`."""
        return PrecisionConfigs(with_method(self.layer_norm, method),
                                with_method(self.gelu, method), with_method(self.softmax, method),
                                with_method(self.relu_softmax, method))


def precision_configs(name: str) -> PrecisionConfigs:
    """The configs of precision level `name` (models/private_options.PRECISIONS).

    "default": every config's defaults.
    "precise" (docs/nonlinear.md, "Precise mode"; meant for f = 20 with exact or dealer
      truncation, never local):
      LayerNorm: variances in [2^-14, 2^10) (at f = 20 and width 256, 2^14 overflows the
        ring and 2^10 leaves kappa = 2, see layernorm.centring_shift), correction of
        degree 3 (the largest approximation error left at f = 20);
      softmax and ReLU-softmax: the row-sum reciprocal with k = 3 factors (relative error
        e0^8 <= 3.1e-9 instead of e0^4 <= 5.6e-5; one more round each);
      GeLU "erf": 5 pieces up to 5.25 (approximation <= 1.0e-5, tail g(5.25) = 4.0e-7),
        coefficients at f + 26 bits (their rounding < 2^-27 sum_k 5.25^k = 7.0e-6; at
        f = 20 the correction's 46 bits exceed the 44 that GeluErfConfig asks of local
        truncation, which is why the level truncates with the dealer: |x| < 2^62); its
        comparisons keep compare_frac_bits = 5 as by default, i.e. 17 bits at f = 20.
    """
    if name == "default":
        return PrecisionConfigs(LayerNormConfig(), GeluConfig(), SoftmaxConfig(),
                                ReluSoftmaxConfig())
    if name == "precise":
        return PrecisionConfigs(
            LayerNormConfig(var_hi_log2=10.0, degree=3),
            GeluConfig(erf=GeluErfConfig(cutoff=5.25, breakpoints=(0.7, 1.5, 2.4, 3.5),
                                         coeff_bits=26)),
            SoftmaxConfig(factors=3),
            ReluSoftmaxConfig(reciprocal=replace(ReluSoftmaxConfig().reciprocal, factors=3)))
    raise ValueError(f"unknown precision {name!r}; choose default or precise")
