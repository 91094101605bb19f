"""Lower and upper confidence bounds on the mean of iid [0, 1] scores (the smoothed score p_A).

Every bound here is one-sided: a lower bound at level alpha fails (exceeds the true mean) with
probability at most alpha, and so does an upper bound; using both at once fails with probability at
most 2 * alpha. Pure numpy/scipy so the statistics can be checked without the model stack.

Methods:

* ``clopper-pearson``: exact for 0/1 outcomes only (e.g. the bernoulli design, or randomised rounding).
* ``hoeffding``: any iid [0, 1] values; ignores the variance, so loose when the scores barely move.
* ``empirical-bernstein``: Maurer & Pontil (2009), Theorem 4; adapts to the sample variance.
* ``betting``: the predictable plug-in betting confidence sequence of Waudby-Smith & Ramdas (2023,
  JRSSB, "Estimating means of bounded random variables by betting"). Adapts to the variance and is
  anytime-valid: the guarantee holds simultaneously over all sample sizes, so at a data-dependent
  stopping time too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.stats import beta as _beta

__all__ = [
    "ANYTIME_VALID",
    "BOUNDS",
    "BETTING_GRID_SIZE",
    "BETTING_TRUNCATION",
    "Bound",
    "BettingSequence",
    "batch_lower_bound",
    "betting_log_capital",
    "betting_lower",
    "betting_upper",
    "bonferroni",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "empirical_bernstein_lower",
    "empirical_bernstein_upper",
    "hoeffding_lower",
    "hoeffding_upper",
    "lower_bound",
    "randomised_rounding",
    "upper_bound",
]

# Bets against mean m are capped at c/m (c < 1) so a single score of 0 never wipes out the capital.
# The paper suggests c = 1/2 or 3/4; in our simulations 3/4 narrows low-variance bounds but widens
# 0/1 ones, and 1/2 (the reference implementation's default) is the better compromise.
BETTING_TRUNCATION = 0.5
# Grid of candidate means j / BETTING_GRID_SIZE; one step (~2.4e-4) is the most the discretisation
# can cost, and it is always given away on the conservative side.
BETTING_GRID_SIZE = 4096


# --------------------------------------------------------------------------- validation


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


def _check_rows(x: np.ndarray | list[float], min_n: int, name: str = "x") -> np.ndarray:
    """A float array whose last axis is the sample; values must be finite and in [0, 1]."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 0:
        raise ValueError(f"{name} must be a 1-D array of scores, got a scalar")
    if arr.shape[-1] < min_n:
        raise ValueError(f"{name} needs at least {min_n} value(s), got {arr.shape[-1]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(arr < 0.0) or np.any(arr > 1.0):
        raise ValueError(f"{name} must lie in [0, 1] (min {arr.min():g}, max {arr.max():g})")
    return arr


def _check_sample(x: np.ndarray | list[float], min_n: int) -> np.ndarray:
    arr = _check_rows(x, min_n)
    if arr.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {arr.shape}")
    return arr


def _check_binary(x: np.ndarray) -> None:
    if not np.all((x == 0.0) | (x == 1.0)):
        raise ValueError(
            "clopper-pearson needs 0/1 outcomes; these scores are fractional. Use randomised_rounding, "
            "or a bounded-mean bound (betting, hoeffding, empirical-bernstein)"
        )


def _check_counts(k: int, n: int) -> tuple[int, int]:
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    k, n = int(k), int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n] = [0, {n}], got {k}")
    return k, n


# --------------------------------------------------------------------------- Clopper-Pearson


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided exact Clopper-Pearson lower bound for k successes in n Bernoulli(p) trials.

    Guarantee: with probability >= 1 - alpha over the draws, p >= returned value, for iid
    X_i in {0, 1} with mean p (k = sum of the X_i). Not valid for fractional X_i.
    """
    k, n = _check_counts(k, n)
    alpha = _check_alpha(alpha)
    if k == 0:
        return 0.0
    # Equals statsmodels proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]: the one-sided
    # level-alpha bound is one end of the two-sided level-2*alpha interval (Cohen et al. 2019).
    return float(_beta.ppf(alpha, k, n - k + 1))


def clopper_pearson_upper(k: int, n: int, alpha: float) -> float:
    """One-sided exact Clopper-Pearson upper bound for k successes in n Bernoulli(p) trials.

    Guarantee: with probability >= 1 - alpha over the draws, p <= returned value, for iid
    X_i in {0, 1} with mean p (k = sum of the X_i). Not valid for fractional X_i.
    """
    k, n = _check_counts(k, n)
    alpha = _check_alpha(alpha)
    if k == n:
        return 1.0
    return float(_beta.ppf(1.0 - alpha, k + 1, n - k))


def _cp_lower_rows(x: np.ndarray, alpha: float) -> np.ndarray:
    _check_binary(x)
    n = x.shape[-1]
    k = np.rint(x.sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = _beta.ppf(alpha, np.maximum(k, 1.0), n - k + 1)
    return np.where(k == 0, 0.0, lo)


def _cp_upper_rows(x: np.ndarray, alpha: float) -> np.ndarray:
    _check_binary(x)
    n = x.shape[-1]
    k = np.rint(x.sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        hi = _beta.ppf(1.0 - alpha, k + 1, np.maximum(n - k, 1.0))
    return np.where(k == n, 1.0, hi)


# --------------------------------------------------------------------------- Hoeffding


def _hoeffding_rows(x: np.ndarray, alpha: float, upper: bool) -> np.ndarray:
    n = x.shape[-1]
    eps = math.sqrt(math.log(1.0 / alpha) / (2.0 * n))
    mean = x.mean(axis=-1)
    return np.clip(mean + eps if upper else mean - eps, 0.0, 1.0)


def hoeffding_lower(x: np.ndarray, alpha: float) -> float:
    """Hoeffding lower bound: mean(x) - sqrt(log(1/alpha) / (2n)), clipped to [0, 1].

    Guarantee: with probability >= 1 - alpha over the draws, p >= returned value, for iid
    X_i in [0, 1] with mean p. Needs n >= 1.
    """
    return float(_hoeffding_rows(_check_sample(x, 1), _check_alpha(alpha), upper=False))


def hoeffding_upper(x: np.ndarray, alpha: float) -> float:
    """Hoeffding upper bound: mean(x) + sqrt(log(1/alpha) / (2n)), clipped to [0, 1].

    Guarantee: with probability >= 1 - alpha over the draws, p <= returned value, for iid
    X_i in [0, 1] with mean p. Needs n >= 1.
    """
    return float(_hoeffding_rows(_check_sample(x, 1), _check_alpha(alpha), upper=True))


# --------------------------------------------------------------------------- empirical Bernstein


def _eb_rows(x: np.ndarray, alpha: float, upper: bool) -> np.ndarray:
    n = x.shape[-1]
    log_term = math.log(2.0 / alpha)
    var = x.var(axis=-1, ddof=1)
    eps = np.sqrt(2.0 * var * log_term / n) + 7.0 * log_term / (3.0 * (n - 1))
    mean = x.mean(axis=-1)
    return np.clip(mean + eps if upper else mean - eps, 0.0, 1.0)


def empirical_bernstein_lower(x: np.ndarray, alpha: float) -> float:
    """Empirical Bernstein lower bound (Maurer & Pontil 2009, Theorem 4).

    mean(x) - sqrt(2 V log(2/alpha) / n) - 7 log(2/alpha) / (3 (n - 1)), V the sample variance
    (ddof=1), clipped to [0, 1].
    Guarantee: with probability >= 1 - alpha over the draws, p >= returned value, for iid
    X_i in [0, 1] with mean p. Needs n >= 2.
    """
    return float(_eb_rows(_check_sample(x, 2), _check_alpha(alpha), upper=False))


def empirical_bernstein_upper(x: np.ndarray, alpha: float) -> float:
    """Empirical Bernstein upper bound (Maurer & Pontil 2009, Theorem 4), the mirror of the lower one.

    Guarantee: with probability >= 1 - alpha over the draws, p <= returned value, for iid
    X_i in [0, 1] with mean p. Needs n >= 2.
    """
    return float(_eb_rows(_check_sample(x, 2), _check_alpha(alpha), upper=True))


# --------------------------------------------------------------------------- betting
#
# One-sided construction. For a lower bound at level alpha we run only the "positive" capital
#   K+_t(m) = prod_{i<=t} (1 + min(lambda_i, c/m) (x_i - m))
# against the threshold 1/alpha (the hedged process with theta = 1). At the true mean it is a
# nonnegative martingale starting at 1, so by Ville's inequality P(exists t: K+_t(p) >= 1/alpha)
# <= alpha. K+_t(m) is non-increasing in m, so the rejected means form an interval [0, L_t) and the
# confidence sequence is [L_t, 1]. The two-sided hedged process (theta = 1/2) would reject only at
# K+ >= 2/alpha, i.e. it spends alpha/2 per side: the one-sided process is tighter for the claim
# the certificate makes (p >= p_lower). The upper bound is the same construction on 1 - x
# (that is exactly the K- process), so lower and upper each hold at level alpha, jointly at 2 alpha.
#
# Bets are the predictable plug-in of the paper (eqs. 26-27) with log(2/alpha) replaced by
# log(1/alpha), the paper's one-sided choice:
#   mu_t = (1/2 + sum_{i<=t} x_i) / (t + 1),  s2_t = (1/4 + sum_{i<=t} (x_i - mu_i)^2) / (t + 1),
#   lambda_t = sqrt(2 log(1/alpha) / (s2_{t-1} t log(1 + t))),  s2_0 = 1/4,
# then min(lambda_t, c/m) inside K+. lambda_t only uses x_1..x_{t-1}, which keeps K+ a martingale.
# As in the authors' reference implementation, lambda_t is not also capped at c itself: that cap is
# not needed for validity and, since c/m >= c, it would bind first everywhere; in bench/coverage.py
# it widened the bound on low-variance scores at n = 32 by about 1.6x.


def _grid(size: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, size + 1)


def _caps(grid: np.ndarray) -> np.ndarray:
    """c/m per grid point (inf at m = 0): keeps every factor 1 + b (x - m) >= 1 - c > 0."""
    with np.errstate(divide="ignore"):
        return np.where(grid > 0.0, BETTING_TRUNCATION / np.where(grid > 0.0, grid, 1.0), np.inf)


def _bet_size(t: int | np.ndarray, s2_prev: float | np.ndarray, log_inv_alpha: float) -> np.ndarray:
    return np.sqrt(2.0 * log_inv_alpha / (s2_prev * t * np.log1p(t)))


def _bets(x: np.ndarray, alpha: float) -> np.ndarray:
    """Predictable bets lambda_1..lambda_n for each row of x (same arithmetic as BettingSequence)."""
    n = x.shape[-1]
    t = np.arange(1, n + 1, dtype=float)
    mu = (0.5 + np.cumsum(x, axis=-1)) / (t + 1.0)
    s2 = (0.25 + np.cumsum((x - mu) * (x - mu), axis=-1)) / (t + 1.0)
    s2_prev = np.concatenate([np.full(x.shape[:-1] + (1,), 0.25), s2[..., :-1]], axis=-1)
    return _bet_size(t, s2_prev, -math.log(alpha))


def _log_factors(x: np.ndarray, lam: np.ndarray, m: np.ndarray, cap: np.ndarray) -> np.ndarray:
    return np.log1p(np.minimum(lam, cap) * (x - m))


def betting_log_capital(x: np.ndarray, m: float, alpha: float) -> np.ndarray:
    """log K+_t(m) for t = 1..n: the one-sided betting capital against the hypothesis "mean <= m".

    Works on a sample (1-D) or on independent samples in rows (2-D). Guarantee (Ville): for iid
    X_i in [0, 1] with mean p, P(max_t log K+_t(p) >= log(1/alpha)) <= alpha; m is rejected by
    ``betting_lower`` at time t exactly when log K+_t(m) >= log(1/alpha).
    """
    arr = _check_rows(x, 1)
    alpha = _check_alpha(alpha)
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"m must be in [0, 1], got {m!r}")
    mm = np.array(m, dtype=float)
    return np.cumsum(_log_factors(arr, _bets(arr, alpha), mm, _caps(mm)), axis=-1)


def _betting_lower_rows(x: np.ndarray, alpha: float, grid_size: int = BETTING_GRID_SIZE) -> np.ndarray:
    """Running-intersection lower bound of the betting CS for every row of a 2-D array.

    A grid point is "ever rejected" when max_t log K+_t >= log(1/alpha); that set is a prefix of
    the grid (K+ is monotone in m), so a bisection per row finds the first point never rejected
    with O(n log grid) work instead of O(n grid). The result is one grid step below that point,
    exactly what BettingSequence reports after the same data.
    """
    grid, caps = _grid(grid_size), _caps(_grid(grid_size))
    thr = -math.log(alpha)
    lam = _bets(x, alpha)
    rows = x.shape[0]
    lo = np.full(rows, -1)  # invariant: grid[lo] rejected (or lo = -1)
    hi = np.full(rows, grid_size)  # invariant: grid[hi] never rejected; m = 1 never is
    while True:
        active = np.flatnonzero(hi - lo > 1)
        if active.size == 0:
            break
        mid = (lo[active] + hi[active]) // 2
        logk = np.cumsum(_log_factors(x[active], lam[active], grid[mid][:, None], caps[mid][:, None]), axis=1)
        rejected = logk.max(axis=1) >= thr
        lo[active[rejected]] = mid[rejected]
        hi[active[~rejected]] = mid[~rejected]
    return np.where(hi > 0, grid[np.maximum(hi - 1, 0)], 0.0)


def betting_lower(x: np.ndarray, alpha: float) -> float:
    """Lower end of the one-sided betting confidence sequence (Waudby-Smith & Ramdas 2023), intersected.

    Returns max over t <= n of the time-t lower bounds, discretised one grid step downwards.
    Guarantee: with probability >= 1 - alpha over the draws, p >= returned value, for iid
    X_i in [0, 1] with mean p; anytime-valid, i.e. this holds simultaneously for every n, so also
    when n was chosen by looking at the data. Needs n >= 1.
    """
    arr = _check_sample(x, 1)
    return float(_betting_lower_rows(arr[None, :], _check_alpha(alpha))[0])


def betting_upper(x: np.ndarray, alpha: float) -> float:
    """Upper end of the one-sided betting confidence sequence: 1 - betting_lower(1 - x).

    Guarantee: with probability >= 1 - alpha over the draws, p <= returned value, for iid
    X_i in [0, 1] with mean p; anytime-valid like ``betting_lower``. Needs n >= 1.
    """
    arr = _check_sample(x, 1)
    return float(_betting_upper_rows(arr[None, :], _check_alpha(alpha))[0])


class _LowerSequence:
    """Incremental one-sided betting CS on the whole grid: O(grid) work per observation."""

    def __init__(self, alpha: float, grid_size: int) -> None:
        self._grid = _grid(grid_size)
        self._caps = _caps(self._grid)
        self._log_inv_alpha = -math.log(alpha)
        self._log_k = np.zeros_like(self._grid)
        self._t = 0
        self._sum = 0.0
        self._sum_dev2 = 0.0
        self._s2 = 0.25
        self.lower = 0.0

    def update(self, x: float) -> None:
        t = self._t + 1
        lam = _bet_size(t, self._s2, self._log_inv_alpha)
        self._log_k += _log_factors(np.asarray(x, dtype=float), lam, self._grid, self._caps)
        self._t = t
        self._sum += x
        mu = (0.5 + self._sum) / (t + 1.0)
        d = x - mu
        self._sum_dev2 += d * d
        self._s2 = (0.25 + self._sum_dev2) / (t + 1.0)
        kept = np.flatnonzero(self._log_k < self._log_inv_alpha)
        # m = 1 is never rejected (every factor <= 1 there), so `kept` is never empty
        j = int(kept[0])
        self.lower = max(self.lower, float(self._grid[j - 1]) if j > 0 else 0.0)


class BettingSequence:
    """Sequential betting bounds on the mean of iid [0, 1] scores, updated one score at a time.

    Guarantee: with probability >= 1 - alpha over the draws, p >= ``lower`` at every n at once
    (and, separately, p <= ``upper`` at every n at once), for iid X_i in [0, 1] with mean p. So the
    bound read at a data-dependent stopping time is valid. Both at once hold with probability
    >= 1 - 2 alpha. After the same scores, ``lower`` equals ``betting_lower`` and ``upper`` equals
    ``betting_upper``.
    """

    def __init__(self, alpha: float, grid_size: int = BETTING_GRID_SIZE) -> None:
        self.alpha = _check_alpha(alpha)
        if grid_size < 2:
            raise ValueError(f"grid_size must be >= 2, got {grid_size}")
        self._lo = _LowerSequence(self.alpha, grid_size)
        self._hi = _LowerSequence(self.alpha, grid_size)  # fed 1 - x: its lower bound is 1 - upper
        self._n = 0
        self._sum = 0.0

    def update(self, x: float) -> None:
        """Add one score in [0, 1]."""
        v = float(x)
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ValueError(f"score must be a finite value in [0, 1], got {x!r}")
        self._lo.update(v)
        self._hi.update(1.0 - v)
        self._n += 1
        self._sum += v

    def extend(self, xs: np.ndarray | list[float]) -> None:
        """Add several scores in order."""
        for v in np.asarray(xs, dtype=float).ravel():
            self.update(float(v))

    @property
    def lower(self) -> float:
        """Running lower bound (0 before any score)."""
        return self._lo.lower

    @property
    def upper(self) -> float:
        """Running upper bound (1 before any score)."""
        return 1.0 - self._hi.lower

    @property
    def n(self) -> int:
        return self._n

    @property
    def mean(self) -> float:
        """Sample mean of the scores so far (NaN before any score)."""
        return self._sum / self._n if self._n else float("nan")


# --------------------------------------------------------------------------- dispatch


class Bound(NamedTuple):
    """A bound method: per-row lower/upper on a 2-D array (rows = independent samples)."""

    lower_rows: Callable[[np.ndarray, float], np.ndarray]
    upper_rows: Callable[[np.ndarray, float], np.ndarray]
    min_n: int
    binary_only: bool


def _hoeffding_lower_rows(x: np.ndarray, alpha: float) -> np.ndarray:
    return _hoeffding_rows(x, alpha, upper=False)


def _hoeffding_upper_rows(x: np.ndarray, alpha: float) -> np.ndarray:
    return _hoeffding_rows(x, alpha, upper=True)


def _eb_lower_rows(x: np.ndarray, alpha: float) -> np.ndarray:
    return _eb_rows(x, alpha, upper=False)


def _eb_upper_rows(x: np.ndarray, alpha: float) -> np.ndarray:
    return _eb_rows(x, alpha, upper=True)


def _betting_upper_rows(x: np.ndarray, alpha: float) -> np.ndarray:
    return 1.0 - _betting_lower_rows(1.0 - x, alpha)


BOUNDS: dict[str, Bound] = {
    "clopper-pearson": Bound(_cp_lower_rows, _cp_upper_rows, 1, True),
    "hoeffding": Bound(_hoeffding_lower_rows, _hoeffding_upper_rows, 1, False),
    "empirical-bernstein": Bound(_eb_lower_rows, _eb_upper_rows, 2, False),
    "betting": Bound(_betting_lower_rows, _betting_upper_rows, 1, False),
}

# Methods whose bounds stay valid when the number of draws depends on the data seen so far.
ANYTIME_VALID: frozenset[str] = frozenset({"betting"})


def _method(method: str) -> Bound:
    try:
        return BOUNDS[method]
    except KeyError:
        raise ValueError(f"unknown bound {method!r}; choose one of {', '.join(sorted(BOUNDS))}") from None


def batch_lower_bound(method: str, x: np.ndarray, alpha: float) -> np.ndarray:
    """``lower_bound`` applied to every row of a 2-D array (rows are independent samples).

    Guarantee per row: with probability >= 1 - alpha over that row's draws, p >= the row's value,
    under the same conditions as ``lower_bound``. Used by the coverage simulations.
    """
    spec = _method(method)
    arr = _check_rows(x, spec.min_n)
    if arr.ndim != 2:
        raise ValueError(f"x must be 2-D (samples in rows), got shape {arr.shape}")
    return np.asarray(spec.lower_rows(arr, _check_alpha(alpha)), dtype=float)


def lower_bound(method: str, x: np.ndarray, alpha: float) -> float:
    """Lower confidence bound on the mean of the scores x by ``method`` (a key of BOUNDS).

    Guarantee: with probability >= 1 - alpha over the draws, p >= returned value, for iid
    X_i in [0, 1] with mean p (X_i in {0, 1} for clopper-pearson, which raises ValueError on
    fractional scores). Only methods in ANYTIME_VALID keep this when n was chosen from the data.
    """
    spec = _method(method)
    arr = _check_sample(x, spec.min_n)
    return float(spec.lower_rows(arr[None, :], _check_alpha(alpha))[0])


def upper_bound(method: str, x: np.ndarray, alpha: float) -> float:
    """Upper confidence bound on the mean of the scores x by ``method`` (a key of BOUNDS).

    Guarantee: with probability >= 1 - alpha over the draws, p <= returned value, for iid
    X_i in [0, 1] with mean p (X_i in {0, 1} for clopper-pearson). Only methods in ANYTIME_VALID
    keep this when n was chosen from the data.
    """
    spec = _method(method)
    arr = _check_sample(x, spec.min_n)
    return float(spec.upper_rows(arr[None, :], _check_alpha(alpha))[0])


# --------------------------------------------------------------------------- helpers


def bonferroni(alpha: float, m: int) -> float:
    """Per-test level alpha / m, so that m bounds hold jointly with probability >= 1 - alpha."""
    alpha = _check_alpha(alpha)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive integer, got {m!r}")
    return alpha / int(m)


def randomised_rounding(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """B_i = 1{U_i < x_i} with U_i iid uniform on [0, 1): 0/1 outcomes with the same mean.

    If the X_i are iid in [0, 1] with mean p, the B_i are iid Bernoulli(p) (E B_i = E X_i), so the
    exact Clopper-Pearson bound applies to them; 0 and 1 are left unchanged. Returns floats.
    """
    arr = _check_rows(x, 0)
    return (rng.random(arr.shape) < arr).astype(float)
