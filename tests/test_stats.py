"""Confidence bounds in auditor.stats against reference implementations and their defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta
from statsmodels.stats.proportion import proportion_confint

from auditor import stats

CP_CASES = [(k, n) for n in (1, 2, 3, 5, 10, 24, 32, 100, 1000) for k in sorted({0, 1, n // 3, n // 2, n - 1, n})]


@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.001])
@pytest.mark.parametrize(("k", "n"), CP_CASES)
def test_clopper_pearson_matches_statsmodels_and_beta(k: int, n: int, alpha: float) -> None:
    lo, hi = proportion_confint(k, n, alpha=2 * alpha, method="beta")
    assert stats.clopper_pearson_lower(k, n, alpha) == pytest.approx(lo, abs=1e-12)
    assert stats.clopper_pearson_upper(k, n, alpha) == pytest.approx(hi, abs=1e-12)
    if k > 0:
        assert stats.clopper_pearson_lower(k, n, alpha) == beta.ppf(alpha, k, n - k + 1)
    if k < n:
        assert stats.clopper_pearson_upper(k, n, alpha) == beta.ppf(1 - alpha, k + 1, n - k)


def test_clopper_pearson_edges() -> None:
    assert stats.clopper_pearson_lower(0, 7, 0.05) == 0.0
    assert stats.clopper_pearson_upper(7, 7, 0.05) == 1.0
    # k = n: the lower bound solves p^n = alpha
    assert stats.clopper_pearson_lower(7, 7, 0.05) == pytest.approx(0.05 ** (1 / 7), rel=1e-12)
    assert stats.clopper_pearson_upper(0, 7, 0.05) == pytest.approx(1 - 0.05 ** (1 / 7), rel=1e-12)
    # n = 1
    assert stats.clopper_pearson_lower(1, 1, 0.05) == pytest.approx(0.05)
    assert stats.clopper_pearson_upper(0, 1, 0.05) == pytest.approx(0.95)
    assert stats.clopper_pearson_lower(0, 1, 0.05) == 0.0 and stats.clopper_pearson_upper(1, 1, 0.05) == 1.0


@pytest.mark.parametrize(
    ("k", "n", "alpha"),
    [
        (-1, 5, 0.05),
        (6, 5, 0.05),
        (0, 0, 0.05),
        (1, 5, 0.0),
        (1, 5, 1.0),
        (1, 5, -0.1),
        (1.5, 5, 0.05),
        (True, 5, 0.05),
    ],
)
def test_clopper_pearson_rejects_bad_inputs(k: int, n: int, alpha: float) -> None:
    with pytest.raises(ValueError):
        stats.clopper_pearson_lower(k, n, alpha)
    with pytest.raises(ValueError):
        stats.clopper_pearson_upper(k, n, alpha)


@pytest.mark.parametrize(
    "bad",
    [[], [0.5, 1.2], [0.5, -0.1], [0.5, float("nan")], [[0.5, 0.5]]],
    ids=["empty", "above-1", "below-0", "nan", "2-D"],
)
@pytest.mark.parametrize("method", ["hoeffding", "empirical-bernstein", "betting"])
def test_bounded_mean_bounds_reject_bad_samples(method: str, bad: list[float]) -> None:
    with pytest.raises(ValueError):
        stats.lower_bound(method, np.array(bad), 0.05)
    with pytest.raises(ValueError):
        stats.upper_bound(method, np.array(bad), 0.05)


def test_bad_alpha_and_method_raise() -> None:
    x = np.full(10, 0.5)
    for a in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            stats.lower_bound("betting", x, a)
    with pytest.raises(ValueError, match="unknown bound"):
        stats.lower_bound("wilson", x, 0.05)
    with pytest.raises(ValueError, match="at least 2"):
        stats.empirical_bernstein_lower(np.array([0.5]), 0.05)


def test_hoeffding_formula() -> None:
    x = np.array([0.2, 0.9, 0.7, 0.4, 1.0, 0.55])
    eps = math.sqrt(math.log(1 / 0.05) / (2 * 6))
    assert stats.hoeffding_lower(x, 0.05) == pytest.approx(x.mean() - eps, abs=1e-15)
    assert stats.hoeffding_upper(x, 0.05) == pytest.approx(min(1.0, x.mean() + eps), abs=1e-15)
    assert stats.hoeffding_upper(x, 0.3) == pytest.approx(x.mean() + math.sqrt(math.log(1 / 0.3) / 12), abs=1e-15)
    assert stats.hoeffding_lower(np.zeros(3), 0.05) == 0.0  # clipped
    assert stats.hoeffding_upper(np.ones(3), 0.05) == 1.0


def test_empirical_bernstein_formula() -> None:
    x = np.array([0.2, 0.9, 0.7, 0.4, 1.0, 0.55, 0.8, 0.85])
    n, lg = x.size, math.log(2 / 0.01)
    eps = math.sqrt(2 * np.var(x, ddof=1) * lg / n) + 7 * lg / (3 * (n - 1))
    assert stats.empirical_bernstein_lower(x, 0.01) == pytest.approx(max(0.0, x.mean() - eps), abs=1e-15)
    assert stats.empirical_bernstein_upper(x, 0.01) == pytest.approx(min(1.0, x.mean() + eps), abs=1e-15)
    y = np.clip(0.8 + 0.01 * np.random.default_rng(3).standard_normal(2000), 0, 1)
    assert stats.empirical_bernstein_lower(y, 0.05) > stats.hoeffding_lower(y, 0.05)  # adapts to low variance


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_bounds_bracket_the_sample_mean(seed: int, alpha: float) -> None:
    rng = np.random.default_rng(seed)
    x = rng.beta(2 + seed, 2, size=20 + 30 * seed)
    for method in ("hoeffding", "empirical-bernstein", "betting"):
        lo, hi = stats.lower_bound(method, x, alpha), stats.upper_bound(method, x, alpha)
        assert 0.0 <= lo <= x.mean() <= hi <= 1.0, method
    b = (x > 0.5).astype(float)
    assert stats.lower_bound("clopper-pearson", b, alpha) <= b.mean() <= stats.upper_bound("clopper-pearson", b, alpha)


def test_betting_tighter_than_hoeffding_on_low_variance() -> None:
    x = np.clip(0.8 + 0.01 * np.random.default_rng(0).standard_normal(200), 0, 1)
    gap_bet = x.mean() - stats.betting_lower(x, 0.05)
    gap_hoe = x.mean() - stats.hoeffding_lower(x, 0.05)
    assert gap_bet > 0 and 2 * gap_bet <= gap_hoe
    assert 2 * (stats.betting_upper(x, 0.05) - x.mean()) <= stats.hoeffding_upper(x, 0.05) - x.mean()


def test_betting_upper_is_mirrored_lower() -> None:
    x = np.random.default_rng(1).random(57)
    assert stats.betting_upper(x, 0.05) == pytest.approx(1 - stats.betting_lower(1 - x, 0.05), abs=1e-15)


def _draws(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 150))
    kind = seed % 4
    if kind == 0:
        return rng.random(n)
    if kind == 1:
        return (rng.random(n) < 0.7).astype(float)
    if kind == 2:
        return rng.binomial(24, 0.8, n) / 24
    return np.where(rng.random(n) < 0.9, 0.85, 0.1)


@pytest.mark.parametrize("seed", range(40))
def test_betting_sequence_equals_batch_and_is_monotone(seed: int) -> None:
    x = _draws(seed)
    seq = stats.BettingSequence(0.05)
    assert (seq.lower, seq.upper, seq.n) == (0.0, 1.0, 0) and math.isnan(seq.mean)
    lows, highs = [], []
    for v in x:
        seq.update(float(v))
        lows.append(seq.lower)
        highs.append(seq.upper)
    # the sequential computation (whole grid, updated per draw) and the batch one (bisection) agree
    assert seq.lower == stats.betting_lower(x, 0.05)
    assert seq.upper == stats.betting_upper(x, 0.05)
    assert seq.n == x.size and seq.mean == pytest.approx(x.mean())
    assert np.all(np.diff(lows) >= 0) and np.all(np.diff(highs) <= 0)  # running intersection
    assert seq.lower <= seq.mean <= seq.upper
    # and it is the intersection of the prefix bounds
    assert seq.lower == max(stats.betting_lower(x[:t], 0.05) for t in range(1, x.size + 1))


def test_betting_lower_is_conservative_on_the_grid() -> None:
    # The first grid point not rejected is never reported itself: one step below it is.
    x = np.full(100, 0.8)
    lo = stats.betting_lower(x, 0.05)
    log_k = stats.betting_log_capital(x, lo + 1.0 / stats.BETTING_GRID_SIZE, 0.05)
    assert log_k.max() < -math.log(0.05)  # lo + one step is not rejected: lo is below the CS
    assert stats.betting_log_capital(x, lo, 0.05).max() >= -math.log(0.05) or lo == 0.0


def test_betting_sequence_rejects_bad_scores() -> None:
    seq = stats.BettingSequence(0.05)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError):
            seq.update(bad)
    assert seq.n == 0
    with pytest.raises(ValueError):
        stats.BettingSequence(0.0)


def test_dispatcher() -> None:
    assert set(stats.BOUNDS) == {"clopper-pearson", "hoeffding", "empirical-bernstein", "betting"}
    anytime = set(stats.ANYTIME_VALID)
    assert anytime == {"betting"}
    b = np.array([1, 0, 1, 1, 1, 0, 1, 1, 1, 1], dtype=float)
    assert stats.lower_bound("clopper-pearson", b, 0.05) == stats.clopper_pearson_lower(8, 10, 0.05)
    assert stats.upper_bound("clopper-pearson", b, 0.05) == stats.clopper_pearson_upper(8, 10, 0.05)
    x = np.linspace(0.1, 0.9, 11)
    assert stats.lower_bound("hoeffding", x, 0.05) == stats.hoeffding_lower(x, 0.05)
    assert stats.lower_bound("empirical-bernstein", x, 0.05) == stats.empirical_bernstein_lower(x, 0.05)
    assert stats.upper_bound("betting", x, 0.05) == stats.betting_upper(x, 0.05)
    rows = np.random.default_rng(0).random((5, 30))
    for method in ("hoeffding", "empirical-bernstein", "betting"):
        batch = stats.batch_lower_bound(method, rows, 0.05)
        assert list(batch) == [stats.lower_bound(method, r, 0.05) for r in rows]


def test_dispatcher_rejects_clopper_pearson_on_fractional_scores() -> None:
    x = np.array([1.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="0/1"):
        stats.lower_bound("clopper-pearson", x, 0.05)
    with pytest.raises(ValueError, match="0/1"):
        stats.upper_bound("clopper-pearson", x, 0.05)


def test_bonferroni() -> None:
    assert stats.bonferroni(0.05, 5) == pytest.approx(0.01)
    assert stats.bonferroni(0.05, 1) == 0.05
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError):
            stats.bonferroni(0.05, bad)  # type: ignore[arg-type]


def test_randomised_rounding_is_unbiased_and_binary() -> None:
    rng = np.random.default_rng(0)
    x = np.full(200_000, 0.37)
    b = stats.randomised_rounding(x, rng)
    assert set(np.unique(b)) <= {0.0, 1.0}
    assert abs(b.mean() - 0.37) < 4 * math.sqrt(0.37 * 0.63 / x.size)
    e = np.array([0.0, 1.0, 0.0, 1.0])
    assert np.array_equal(stats.randomised_rounding(e, rng), e)  # 0/1 scores are left as they are
    with pytest.raises(ValueError):
        stats.randomised_rounding(np.array([0.5, 1.1]), rng)
