"""The classical bounds on the mean of iid [0, 1] scores: Clopper-Pearson, Hoeffding, empirical Bernstein.

Every bound is one-sided: a lower bound at level alpha exceeds the true mean with probability at
most alpha, and so does an upper bound fall below it. Each is valid for one pre-set n only (re-using
it after every draw and stopping on it is not covered). Also: Bonferroni and randomised rounding.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta as _beta

from auditor.stats._validate import check_alpha, check_binary, check_counts, check_rows, check_sample

# --------------------------------------------------------------------------- Clopper-Pearson


def clopper_pearson_lower(k: int, n: int, alpha: float) -> float:
    """One-sided exact Clopper-Pearson lower bound for k successes in n Bernoulli(p) trials.

    Guarantee: with probability >= 1 - alpha over the draws, p >= returned value, for iid
    X_i in {0, 1} with mean p (k = sum of the X_i). Not valid for fractional X_i.
    """
    k, n = check_counts(k, n)
    alpha = check_alpha(alpha)
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
    k, n = check_counts(k, n)
    alpha = check_alpha(alpha)
    if k == n:
        return 1.0
    return float(_beta.ppf(1.0 - alpha, k + 1, n - k))


def cp_lower_rows(x: np.ndarray, alpha: float) -> np.ndarray:
    check_binary(x)
    n = x.shape[-1]
    k = np.rint(x.sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = _beta.ppf(alpha, np.maximum(k, 1.0), n - k + 1)
    return np.where(k == 0, 0.0, lo)


def cp_upper_rows(x: np.ndarray, alpha: float) -> np.ndarray:
    check_binary(x)
    n = x.shape[-1]
    k = np.rint(x.sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        hi = _beta.ppf(1.0 - alpha, k + 1, np.maximum(n - k, 1.0))
    return np.where(k == n, 1.0, hi)


# --------------------------------------------------------------------------- Hoeffding


def hoeffding_rows(x: np.ndarray, alpha: float, upper: bool) -> np.ndarray:
    n = x.shape[-1]
    eps = math.sqrt(math.log(1.0 / alpha) / (2.0 * n))
    mean = x.mean(axis=-1)
    return np.clip(mean + eps if upper else mean - eps, 0.0, 1.0)


def hoeffding_lower(x: np.ndarray, alpha: float) -> float:
    """Hoeffding lower bound: mean(x) - sqrt(log(1/alpha) / (2n)), clipped to [0, 1].

    Guarantee: with probability >= 1 - alpha over the draws, p >= returned value, for iid
    X_i in [0, 1] with mean p. Needs n >= 1.
    """
    return float(hoeffding_rows(check_sample(x, 1), check_alpha(alpha), upper=False))


def hoeffding_upper(x: np.ndarray, alpha: float) -> float:
    """Hoeffding upper bound: mean(x) + sqrt(log(1/alpha) / (2n)), clipped to [0, 1].

    Guarantee: with probability >= 1 - alpha over the draws, p <= returned value, for iid
    X_i in [0, 1] with mean p. Needs n >= 1.
    """
    return float(hoeffding_rows(check_sample(x, 1), check_alpha(alpha), upper=True))


# --------------------------------------------------------------------------- empirical Bernstein


def eb_rows(x: np.ndarray, alpha: float, upper: bool) -> np.ndarray:
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
    return float(eb_rows(check_sample(x, 2), check_alpha(alpha), upper=False))


def empirical_bernstein_upper(x: np.ndarray, alpha: float) -> float:
    """Empirical Bernstein upper bound (Maurer & Pontil 2009, Theorem 4), the mirror of the lower one.

    Guarantee: with probability >= 1 - alpha over the draws, p <= returned value, for iid
    X_i in [0, 1] with mean p. Needs n >= 2.
    """
    return float(eb_rows(check_sample(x, 2), check_alpha(alpha), upper=True))


# --------------------------------------------------------------------------- helpers


def bonferroni(alpha: float, m: int) -> float:
    """Per-test level alpha / m, so that m bounds hold jointly with probability >= 1 - alpha."""
    alpha = check_alpha(alpha)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive integer, got {m!r}")
    return alpha / int(m)


def randomised_rounding(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """B_i = 1{U_i < x_i} with U_i iid uniform on [0, 1): 0/1 outcomes with the same mean.

    If the X_i are iid in [0, 1] with mean p, the B_i are iid Bernoulli(p) (E B_i = E X_i), so the
    exact Clopper-Pearson bound applies to them; 0 and 1 are left unchanged. Returns floats.
    """
    arr = check_rows(x, 0)
    return (rng.random(arr.shape) < arr).astype(float)
