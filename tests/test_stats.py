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
@pytest.mark.parametrize("method", ["hoeffding", "empirical-bernstein", "betting", "star-bets"])
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
    for method in ("hoeffding", "empirical-bernstein", "betting", "star-bets"):
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
    assert seq.lower == pytest.approx(stats.betting_lower(x, 0.05), abs=1e-12)
    assert seq.upper == pytest.approx(stats.betting_upper(x, 0.05), abs=1e-12)
    assert seq.n == x.size and seq.mean == pytest.approx(x.mean())
    assert seq.lower <= seq.mean <= seq.upper  # what is reported is capped at the mean ...
    assert all(lo <= hi for lo, hi in zip(lows, highs, strict=True))
    # ... while the confidence sequence itself is a running intersection of the prefix bounds
    assert seq.cs_lower == max(_cs_lower(x[:t]) for t in range(1, x.size + 1))
    assert seq.cs_upper == min(1.0 - _cs_lower(1.0 - x[:t]) for t in range(1, x.size + 1))
    assert seq.lower == pytest.approx(min(seq.cs_lower, x.mean()), abs=1e-12)


def _cs_lower(x: np.ndarray) -> float:
    from auditor.stats.confseq import betting_cs_lower_rows

    return float(betting_cs_lower_rows(x[None, :], 0.05)[0])


def test_betting_report_never_exceeds_the_mean() -> None:
    # The running intersection can end above the final mean (a good start, then a slump); what is
    # reported is capped at the mean, on both sides and in the sequence.
    x = np.concatenate([np.ones(60), np.full(40, 0.2)])
    assert _cs_lower(x) > x.mean()
    assert stats.betting_lower(x, 0.05) == pytest.approx(x.mean())
    seq = stats.BettingSequence(0.05)
    seq.extend(x)
    assert seq.cs_lower > seq.mean and seq.lower == pytest.approx(seq.mean)
    assert stats.betting_upper(1.0 - x, 0.05) == pytest.approx(1.0 - x.mean())


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
    assert set(stats.BOUNDS) == {"clopper-pearson", "hoeffding", "empirical-bernstein", "betting", "star-bets"}
    anytime = set(stats.ANYTIME_VALID)
    assert anytime == {"betting"} and set(stats.RANDOMISED) == {"star-bets"}
    assert stats.sequential_bound("star-bets") == "betting" == stats.sequential_bound("betting")
    assert stats.sequential_bound("hoeffding") is None
    b = np.array([1, 0, 1, 1, 1, 0, 1, 1, 1, 1], dtype=float)
    assert stats.lower_bound("clopper-pearson", b, 0.05) == stats.clopper_pearson_lower(8, 10, 0.05)
    assert stats.upper_bound("clopper-pearson", b, 0.05) == stats.clopper_pearson_upper(8, 10, 0.05)
    x = np.linspace(0.1, 0.9, 11)
    assert stats.lower_bound("hoeffding", x, 0.05) == stats.hoeffding_lower(x, 0.05)
    assert stats.lower_bound("empirical-bernstein", x, 0.05) == stats.empirical_bernstein_lower(x, 0.05)
    assert stats.upper_bound("betting", x, 0.05) == stats.betting_upper(x, 0.05)
    rows = np.random.default_rng(0).random((5, 30))
    for method in ("hoeffding", "empirical-bernstein", "betting", "star-bets"):
        batch = stats.batch_lower_bound(method, rows, 0.05)
        assert list(batch) == [stats.lower_bound(method, r, 0.05) for r in rows]
    u = np.linspace(0.1, 1.0, 5)
    batch = stats.batch_lower_bound("star-bets", rows, 0.05, u)
    assert list(batch) == [stats.star_lower(r, 0.05, float(v)) for r, v in zip(rows, u, strict=True)]


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


# --------------------------------------------------------------------------- STaR-Bets (fixed n)


@pytest.mark.parametrize("n", [1, 2, 5, 30, 128, 512])
@pytest.mark.parametrize("alpha", [0.05, 0.01 / 3])
def test_star_bets_on_all_ones_reaches_the_closed_form_floor(n: int, alpha: float) -> None:
    # Each factor is at most 1/m on a score of 1, so no bet can reject m > alpha^(1/n), which is the
    # Clopper-Pearson bound for n successes (scipy's beta.ppf(alpha, n, 1)). STaR-Bets gets close to it.
    floor = beta.ppf(alpha, n, 1)
    assert floor == pytest.approx(alpha ** (1 / n), rel=1e-12)
    lo = stats.star_lower(np.ones(n), alpha)
    assert lo <= floor
    if n >= 5:  # at n = 1, 2 the re-planned bet is below the largest one allowed, so it stops short
        assert lo >= floor - 0.02 * (1 - floor) - 2.0 / stats.STAR_GRID_SIZE
    assert stats.star_upper(np.ones(n), alpha) == 1.0


def test_star_bets_grid_point_above_the_bound_is_not_rejected() -> None:
    rng = np.random.default_rng(5)
    x = rng.binomial(24, 0.9, 40) / 24
    alpha = 0.01
    lo = stats.star_lower(x, alpha)
    step = 1.0 / stats.STAR_GRID_SIZE
    assert stats.star_log_wealth_at(x, lo + step, alpha) < -math.log(alpha)  # first point kept
    below = np.arange(1, round(lo / step) + 1) * step  # every grid point below it was rejected
    from auditor.stats.fixed_n import star_log_wealth

    assert np.all(star_log_wealth(x[None, :], below, alpha) >= -math.log(alpha))


def test_star_bets_randomisation_only_helps_and_is_checked() -> None:
    x = np.random.default_rng(2).binomial(24, 0.95, 30) / 24
    bounds = [stats.star_lower(x, 0.01, u) for u in (1.0, 0.7, 0.3, 0.05)]
    assert bounds == sorted(bounds) and bounds[-1] > bounds[0]  # threshold u/alpha falls with u
    assert all(b <= x.mean() for b in bounds)
    for bad in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="u must"):
            stats.star_lower(x, 0.01, bad)
    u = stats.seeded_u(np.random.default_rng(123))
    assert 0.0 < u <= 1.0 and u == stats.seeded_u(np.random.default_rng(123))  # reproducible from a seed


def test_star_bets_upper_is_mirrored_lower() -> None:
    x = np.random.default_rng(4).random(33)
    assert stats.star_upper(x, 0.05, 0.4) == pytest.approx(1 - stats.star_lower(1 - x, 0.05, 0.4), abs=1e-15)


def test_star_bets_on_the_demo_capitals_draws() -> None:
    # The 30 per-draw capitals scores (correct of 24) of the first example certificate, alpha 0.01 split
    # over 3 tasks: the old default (betting, truncation 1/2) gave 0.689 here.
    correct = [23, 23, 22, 24, 24, 24, 23, 24, 24, 23, 23, 23, 23, 24, 23, 24, 24, 22, 24, 24, 22, 24, 24, 24, 24]
    correct += [22, 24, 24, 24, 24]
    x = np.array(correct) / 24
    assert stats.lower_bound("star-bets", x, 0.01 / 3) >= 0.78
    assert stats.lower_bound("betting", x, 0.01 / 3) >= 0.75


def test_star_bets_on_a_coarse_grid_is_within_a_step_of_the_fine_one() -> None:
    # `auditor plan` simulates thousands of audits on a 256-point grid: it may only lose about one step
    from auditor.stats.fixed_n import star_lower_rows

    x = np.random.default_rng(7).beta(8, 1, size=(40, 60))
    fine, coarse = star_lower_rows(x, 0.01), star_lower_rows(x, 0.01, grid_size=256)
    assert np.all(np.abs(fine - coarse) <= 2 / 256) and np.all(coarse <= x.mean(axis=1))
