"""The anytime-valid betting confidence sequence (for sequential audits that may stop on the data).

One-sided construction (Waudby-Smith & Ramdas 2023, JRSSB, "Estimating means of bounded random
variables by betting"). For a lower bound at level alpha, the capital against "mean <= m" is

    K_t(m) = (1/J) sum_j prod_{i<=t} (1 + min(lambda_i, c_j/m) (x_i - m)),

an equal-weight average over the truncation levels c_j in BETTING_TRUNCATIONS. Each product is a
nonnegative supermartingale starting at 1 under any mean <= m (lambda_i >= 0 is predictable and
every factor is >= 1 - c_j > 0), so their average is one too, and by Ville's inequality
P(exists t: K_t(m) >= 1/alpha) <= alpha. K_t(m) is non-increasing in m, so the rejected means form
an interval [0, L_t) and the confidence sequence is [L_t, 1]; its running intersection is max_t L_t.

Why a mixture: the truncation c decides how hard the bet may be near the boundary. c = 1/2 (the
paper's default) is right when zeros are common; near p = 1 with few draws it throws away most of
the power (a run of all-ones certifies only about (1 + 1/m)/2 per draw instead of 1/m). The average
over c in {1/2, 3/4, 9/10, 99/100} never loses more than log 4 of log-capital against the best
truncation in hindsight and follows it in each regime (see reports/bound_efficiency.md).

Bets are the predictable plug-in of the paper (eqs. 26-27) with log(2/alpha) replaced by
log(1/alpha), the one-sided choice:
  mu_t = (1/2 + sum_{i<=t} x_i) / (t + 1),  s2_t = (1/4 + sum_{i<=t} (x_i - mu_i)^2) / (t + 1),
  lambda_t = sqrt(2 log(1/alpha) / (s2_{t-1} t log(1 + t))),  s2_0 = 1/4.
The upper bound is the same construction on 1 - x, so each side holds at level alpha.

What is reported never exceeds the sample mean: min(L, mean) for the lower bound, max(U, mean) for
the upper. That only widens the interval, so the guarantee is unchanged, and a certificate never
shows p_lower > p-hat (which the running intersection alone can produce).
"""

from __future__ import annotations

import math

import numpy as np

from auditor.stats._validate import check_alpha, check_rows, check_sample

# Truncation levels c of the bets (each bet against mean m is capped at c/m); averaged with equal weights.
BETTING_TRUNCATIONS: tuple[float, ...] = (0.5, 0.75, 0.9, 0.99)
# Grid of candidate means j / BETTING_GRID_SIZE; one step (~2.4e-4) is the most the discretisation
# can cost, and it is always given away on the conservative side.
BETTING_GRID_SIZE = 4096


def _grid(size: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, size + 1)


def _caps(grid: np.ndarray) -> np.ndarray:
    """c_j/m for every truncation (rows) and grid point (columns); inf at m = 0."""
    safe = np.where(grid > 0.0, grid, 1.0)
    c = np.asarray(BETTING_TRUNCATIONS)[:, None]
    return np.where(grid > 0.0, c / safe, np.inf)


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


def _log_mean_exp(log_k: np.ndarray) -> np.ndarray:
    """log of the equal-weight average over axis 0 of exp(log_k), without overflow."""
    top = log_k.max(axis=0)
    return top + np.log(np.exp(log_k - top).mean(axis=0))


def _mixture_log_capital(x: np.ndarray, lam: np.ndarray, m: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """log K_t(m), t = 1..n; x, lam (rows, n); m (rows, 1) or scalar; caps (J, rows, 1) or (J, 1, 1)."""
    per_c = np.cumsum(np.log1p(np.minimum(lam, caps) * (x - m)), axis=-1)  # (J, rows, n)
    return _log_mean_exp(per_c)


def betting_log_capital(x: np.ndarray, m: float, alpha: float) -> np.ndarray:
    """log K_t(m) for t = 1..n: the betting capital against the hypothesis "mean <= m".

    Works on a sample (1-D) or on independent samples in rows (2-D). Guarantee (Ville): for iid
    X_i in [0, 1] with mean p <= m, P(max_t log K_t(m) >= log(1/alpha)) <= alpha; m is rejected by
    ``betting_lower`` at time t exactly when log K_t(m) >= log(1/alpha).
    """
    arr = check_rows(x, 1)
    alpha = check_alpha(alpha)
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"m must be in [0, 1], got {m!r}")
    caps = _caps(np.array([float(m)]))[:, :, None]  # (J, 1, 1)
    rows = arr.reshape(-1, arr.shape[-1])
    out = _mixture_log_capital(rows, _bets(rows, alpha), np.array(m, dtype=float), caps)
    return out.reshape(arr.shape)


def betting_cs_lower_rows(x: np.ndarray, alpha: float, grid_size: int = BETTING_GRID_SIZE) -> np.ndarray:
    """Running-intersection lower end of the CS for every row of a 2-D array (not clipped to the mean).

    A grid point is "ever rejected" when max_t log K_t >= log(1/alpha); that set is a prefix of the
    grid (K_t is monotone in m), so a bisection per row finds the first point never rejected with
    O(n log grid) work. The result is one grid step below that point, exactly what BettingSequence
    reports after the same data.
    """
    grid = _grid(grid_size)
    caps_all = _caps(grid)  # (J, G+1)
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
        logk = _mixture_log_capital(x[active], lam[active], grid[mid][:, None], caps_all[:, mid][:, :, None])
        rejected = logk.max(axis=1) >= thr
        lo[active[rejected]] = mid[rejected]
        hi[active[~rejected]] = mid[~rejected]
    return np.where(hi > 0, grid[np.maximum(hi - 1, 0)], 0.0)


def betting_lower_rows(x: np.ndarray, alpha: float) -> np.ndarray:
    """Reported lower bound per row: min(running-intersection CS lower end, sample mean)."""
    return np.minimum(betting_cs_lower_rows(x, alpha), x.mean(axis=-1))


def betting_upper_rows(x: np.ndarray, alpha: float) -> np.ndarray:
    """Reported upper bound per row: 1 - (lower bound of 1 - x)."""
    return 1.0 - betting_lower_rows(1.0 - x, alpha)


def betting_lower(x: np.ndarray, alpha: float) -> float:
    """Lower end of the one-sided betting confidence sequence, intersected over t and capped at the mean.

    Returns min(max over t <= n of the time-t lower bounds, mean(x)), discretised one grid step
    downwards. Guarantee: with probability >= 1 - alpha over the draws, p >= returned value, for iid
    X_i in [0, 1] with mean p; anytime-valid, i.e. this holds simultaneously for every n, so also
    when n was chosen by looking at the data. Needs n >= 1.
    """
    arr = check_sample(x, 1)
    return float(betting_lower_rows(arr[None, :], check_alpha(alpha))[0])


def betting_upper(x: np.ndarray, alpha: float) -> float:
    """Upper end of the one-sided betting confidence sequence: 1 - betting_lower(1 - x).

    Guarantee: with probability >= 1 - alpha over the draws, p <= returned value, for iid
    X_i in [0, 1] with mean p; anytime-valid like ``betting_lower``. Needs n >= 1.
    """
    arr = check_sample(x, 1)
    return float(betting_upper_rows(arr[None, :], check_alpha(alpha))[0])


class _LowerSequence:
    """Incremental one-sided betting CS on the whole grid: O(J * grid) work per observation."""

    def __init__(self, alpha: float, grid_size: int) -> None:
        self._grid = _grid(grid_size)
        self._caps = _caps(self._grid)
        self._log_inv_alpha = -math.log(alpha)
        self._log_k = np.zeros_like(self._caps)
        self._t = 0
        self._sum = 0.0
        self._sum_dev2 = 0.0
        self._s2 = 0.25
        self.lower = 0.0  # running intersection, not capped at the mean

    def update(self, x: float) -> None:
        t = self._t + 1
        lam = _bet_size(t, self._s2, self._log_inv_alpha)
        self._log_k += np.log1p(np.minimum(lam, self._caps) * (x - self._grid))
        self._t = t
        self._sum += x
        mu = (0.5 + self._sum) / (t + 1.0)
        d = x - mu
        self._sum_dev2 += d * d
        self._s2 = (0.25 + self._sum_dev2) / (t + 1.0)
        log_mix = _log_mean_exp(self._log_k)
        kept = np.flatnonzero(log_mix < self._log_inv_alpha)
        # m = 1 is never rejected (every factor <= 1 there), so `kept` is never empty
        j = int(kept[0])
        self.lower = max(self.lower, float(self._grid[j - 1]) if j > 0 else 0.0)


class BettingSequence:
    """Sequential betting bounds on the mean of iid [0, 1] scores, updated one score at a time.

    Guarantee: with probability >= 1 - alpha over the draws, p >= ``lower`` at every n at once
    (and, separately, p <= ``upper`` at every n at once), for iid X_i in [0, 1] with mean p. So the
    bound read at a data-dependent stopping time is valid. Both at once hold with probability
    >= 1 - 2 alpha. ``lower``/``upper`` are the running intersections capped at the sample mean
    (``cs_lower``/``cs_upper`` uncapped); after the same scores, ``lower`` equals ``betting_lower``
    and ``upper`` equals ``betting_upper``.
    """

    def __init__(self, alpha: float, grid_size: int = BETTING_GRID_SIZE) -> None:
        self.alpha = check_alpha(alpha)
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
    def cs_lower(self) -> float:
        """Running intersection of the lower ends (non-decreasing; 0 before any score)."""
        return self._lo.lower

    @property
    def cs_upper(self) -> float:
        """Running intersection of the upper ends (non-increasing; 1 before any score)."""
        return 1.0 - self._hi.lower

    @property
    def lower(self) -> float:
        """Reported lower bound: min(cs_lower, mean) (0 before any score)."""
        return min(self.cs_lower, self.mean) if self._n else 0.0

    @property
    def upper(self) -> float:
        """Reported upper bound: max(cs_upper, mean) (1 before any score)."""
        return max(self.cs_upper, self.mean) if self._n else 1.0

    @property
    def n(self) -> int:
        return self._n

    @property
    def mean(self) -> float:
        """Sample mean of the scores so far (NaN before any score)."""
        return self._sum / self._n if self._n else float("nan")
