"""Coverage of every bound by simulation (a reduced run of bench/coverage.py).

A bound that claims level alpha must cover the true mean in at least 1 - alpha of simulated audits,
up to Monte-Carlo error (three standard errors). The sequential check is the anytime-valid claim
of the betting bound: it must hold at every draw of an audit at once. The "floor" design sits at the
edge of validity (all draws are 1 with probability alpha), so a bound that claims more than it may
fails there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ is not an installed package
from auditor import stats  # noqa: E402
from bench import coverage  # noqa: E402
from bench.coverage import DESIGNS, METHODS, simulate_coverage  # noqa: E402

RUNS, N = 2000, 30


@pytest.mark.parametrize("alpha", [0.05, 0.01])
@pytest.mark.parametrize("design", list(DESIGNS))
@pytest.mark.parametrize("method", METHODS)
def test_coverage(method: str, design: str, alpha: float) -> None:
    r = simulate_coverage(
        method, design, alpha, N, RUNS, seed=0, sequential=method in stats.ANYTIME_VALID, width_runs=40
    )
    assert r.coverage >= r.required, f"{method}/{design}/alpha={alpha}: coverage {r.coverage:.4f} < {r.required:.4f}"
    assert 0 < r.median_width < 1
    if method in stats.ANYTIME_VALID:
        # the capital at the true mean never reaches 1/alpha at any t <= n ...
        assert r.sequential >= r.required, f"{method}/{design}: sequential coverage {r.sequential:.4f}"
        # ... which implies the reported bound stays below the mean: run-wise, so also in frequency
        assert r.coverage >= r.sequential


@pytest.mark.parametrize("design", ["floor", "bernoulli", "rare-0"])
def test_star_bets_coverage_at_n_5(design: str) -> None:
    r = simulate_coverage("star-bets", design, 0.05, 5, RUNS, seed=3, width_runs=40)
    assert r.coverage >= r.required, f"{design}: coverage {r.coverage:.4f} < {r.required:.4f}"


def test_star_bets_fast_miscoverage_is_exact() -> None:
    # The bench evaluates the full bound only where the test at the grid point above p rejects;
    # on a small run, that equals evaluating it everywhere.
    p, sample = DESIGNS["floor"].make(12, 0.05)
    rng = np.random.default_rng(11)
    x, u = sample(rng, (400, 12)), 1.0 - rng.random(400)
    full = stats.batch_lower_bound("star-bets", x, 0.05, u) > p
    assert full.any() and np.array_equal(coverage.star_miscovered(x, p, 0.05, u), full)
    full_b = stats.batch_lower_bound("betting", x, 0.05) > p
    assert np.array_equal(coverage.betting_miscovered(x, p, 0.05), full_b)


def test_star_bets_with_a_shopped_u_loses_its_guarantee() -> None:
    # u must be one Uniform(0, 1] draw independent of the scores. Re-rolling it 20 times and keeping
    # the most favourable (seed shopping) breaks the guarantee, and the simulation shows it.
    p, sample = DESIGNS["cliff"].make(30, 0.05)
    x = sample(np.random.default_rng(5), (RUNS, 30))
    rolls = np.random.default_rng(6).random((RUNS, 20))
    miss_honest = coverage.star_miscovered(x, p, 0.05, 1.0 - rolls[:, 0]).mean()
    miss_shopped = coverage.star_miscovered(x, p, 0.05, 1.0 - rolls.max(axis=1)).mean()
    slack = 3 * np.sqrt(0.05 * 0.95 / RUNS)
    assert miss_honest <= 0.05 + slack < miss_shopped


def test_betting_bound_stays_below_mean_at_every_draw() -> None:
    # The same claim checked directly on the reported bound, draw by draw, through BettingSequence.
    alpha, runs, n = 0.05, 300, 60
    p, sample = DESIGNS["cliff"].make(n, alpha)
    x = sample(np.random.default_rng(7), (runs, n))
    always = 0
    for row in x:
        seq, ok = stats.BettingSequence(alpha), True
        for v in row:
            seq.update(float(v))
            ok &= seq.lower <= p
        always += ok
    slack = 3 * np.sqrt(alpha * (1 - alpha) / runs)
    assert always / runs >= 1 - alpha - slack


def test_peeking_is_measured_for_fixed_n_bounds() -> None:
    # Re-applying a fixed-n bound after every draw can only lose coverage.
    r = simulate_coverage("clopper-pearson", "bernoulli", 0.05, N, RUNS, seed=0)
    assert r.sequential <= r.coverage


def test_the_check_catches_an_invalid_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    # The plug-in sample mean is no lower bound: about half the audits land above the mean.
    def mean_rows(x: np.ndarray, alpha: float, u: np.ndarray) -> np.ndarray:
        return x.mean(axis=-1)

    monkeypatch.setitem(stats.BOUNDS, "sample-mean", stats.Bound(mean_rows, mean_rows, 1, False))
    r = simulate_coverage("sample-mean", "basin", 0.05, N, RUNS, seed=0)
    assert r.coverage < r.required and not r.ok
    assert r.sequential < r.required


def test_table_lists_every_row() -> None:
    results = [simulate_coverage(m, "bernoulli", 0.05, 10, 200, seed=1, sequential=False) for m in METHODS]
    results.append(simulate_coverage("betting", "demo", 0.05, 10, 200, seed=1))
    text = coverage.table(results)
    assert text.count("\n") == len(results) + 1
    assert all(m in text for m in METHODS)
    assert "| – |" in text and "✓ |" in text  # no sequential column without one; a check mark with one
