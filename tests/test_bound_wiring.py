"""The default fixed-n bound inside an audit: star-bets with u from the certificate's seed."""

import numpy as np
import pytest
from test_sample import _policy, _run

from auditor import stats
from auditor.audit.perturb import derive_seed


def test_star_bets_audit_uses_the_seeded_u(tmp_path):
    loaded = _policy(bound="star-bets", draws=20)
    cert, sample = _run(loaded, tmp_path / "a")
    t = cert.tasks[0]
    x = np.asarray(sample.per_task["t"].values)
    alpha = stats.bonferroni(loaded.policy.alpha, 1)
    rng = np.random.default_rng(derive_seed(loaded.policy.seed, "t", "bound"))
    u_lo, u_hi = stats.seeded_u(rng), stats.seeded_u(rng)
    # anyone can recompute the certificate's bounds from the logged draws and the seed
    assert t.p_lower == stats.star_lower(x, alpha, u_lo)
    assert t.p_upper == stats.star_upper(x, alpha, u_hi)
    assert 0 < t.p_lower <= t.p_hat <= t.p_upper <= 1
    assert t.p_lower >= stats.star_lower(x, alpha)  # never below the deterministic bound
    again, _ = _run(loaded, tmp_path / "b")
    assert again.tasks[0].p_lower == pytest.approx(t.p_lower, abs=0)  # same seed, same bound


def test_star_bets_policy_runs_sequentially_with_the_confidence_sequence():
    assert stats.sequential_bound(_policy(bound="star-bets").policy.sampling.bound) == "betting"
