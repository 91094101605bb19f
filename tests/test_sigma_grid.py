"""Fixed-sequence certification over a sigma grid: stops at the first failure, FWER <= alpha, end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from auditor import stats
from auditor.cli import main
from auditor.sigma_grid import SigmaStep, certify_grid, check_grid


def _fake(p_lowers: dict[str, list[float]], threshold: float, calls: list[float]):
    grid = [0.001, 0.002, 0.004, 0.008]

    def audit_at(sigma: float) -> dict[str, SigmaStep]:
        calls.append(sigma)
        j = grid.index(sigma)
        return {t: SigmaStep(sigma, v[j], threshold, v[j] >= threshold) for t, v in p_lowers.items()}

    return grid, audit_at


def test_each_task_stops_at_its_first_failure_and_later_passes_never_count():
    calls: list[float] = []
    grid, audit_at = _fake({"a": [0.9, 0.8, 0.5, 0.9], "b": [0.9, 0.9, 0.9, 0.2]}, 0.6, calls)
    a, b = certify_grid(["a", "b"], grid, audit_at, target=0.5)
    assert (a.sigma_star, a.stopped_at, len(a.steps)) == (0.002, 0.004, 3)  # 0.008 passes again: ignored
    assert (b.sigma_star, b.stopped_at, len(b.steps)) == (0.004, 0.008, 4)
    assert a.radius_at_star == pytest.approx(0.002 * (norm.ppf(0.6) - norm.ppf(0.5)))
    calls.clear()
    grid, audit_at = _fake({"a": [0.9, 0.1, 0.9, 0.9], "b": [0.1, 0.9, 0.9, 0.9]}, 0.6, calls)
    a, b = certify_grid(["a", "b"], grid, audit_at, target=0.5)
    assert calls == [0.001, 0.002]  # every task failed: no further audit is paid for
    assert b.sigma_star is None and b.radius_at_star is None and a.sigma_star == 0.001


@pytest.mark.parametrize("bad", [[], [0.002, 0.001], [0.0, 0.1], [0.1, 0.1]])
def test_grid_must_be_positive_and_ascending(bad):
    with pytest.raises(ValueError, match="ascending"):
        check_grid(bad)


def test_family_wise_error_of_the_fixed_sequence_stays_below_alpha():
    # p_A falls with sigma; threshold 0.7: the nulls H_j (p_A < 0.7) are true from the third sigma on.
    # A run errs when it certifies any sigma whose p_A is below the threshold.
    rng = np.random.default_rng(1)
    grid = [0.001, 0.002, 0.004, 0.008, 0.016]
    p_true = dict(zip(grid, [0.95, 0.85, 0.69, 0.6, 0.3], strict=True))
    alpha, n, runs, c = 0.05, 60, 3000, 0.7
    errors = 0
    for _ in range(runs):

        def audit_at(sigma):
            k = int(rng.binomial(n, p_true[sigma]))
            lo = stats.clopper_pearson_lower(k, n, alpha)
            return {"t": SigmaStep(sigma, lo, c, lo >= c)}

        (edge,) = certify_grid(["t"], grid, audit_at, target=0.5)
        errors += any(p_true[s.sigma] < c for s in edge.steps if s.certified)
    assert errors / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


POLICY = """schema_version: 1
model: {model}
seed: 4
alpha: 0.05
perturbation: {{sigma: 0.01}}
sampling: {{draws: 6, bound: betting}}
tasks:
  - name: always
    source: builtin:arithmetic
    oracle: {{type: python, scorer: "scorer.py:always"}}
    limit: 3
    max_new_tokens: 1
    require: {{min_p_lower: {need}}}
"""


def _policy(tmp_path, model, need):
    (tmp_path / "scorer.py").write_text("def always(answer, example):\n    return 1\n")
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(model=model, need=need))
    return path


def test_sigma_grid_cli_end_to_end(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "grid"
    policy = _policy(tmp_path, tiny_model_dir, 0.3)
    assert main(["sigma-grid", str(policy), "--sigmas", "0.001,0.01", "--out", str(out), "--threads", "1"]) == 0
    doc = json.loads((out / "sigma_grid.json").read_text())
    (task,) = doc["tasks"]
    assert task["sigma_star"] == 0.01 and [s["sigma"] for s in task["steps"]] == [0.001, 0.01]
    bonf = [s["p_lower_bonferroni"] for s in task["steps"]]
    assert all(b < s["p_lower"] for b, s in zip(bonf, task["steps"], strict=True))  # alpha/m is stricter
    assert (out / "sigma-0.001" / "certificate.json").is_file() and (out / "sigma-grid.png").is_file()
    assert "sigma* = 0.01" in capsys.readouterr().out
    # a threshold no run of 6 draws can reach: refused as a design error before any sigma is audited
    strict = _policy(tmp_path, tiny_model_dir, 0.99)
    assert main(["sigma-grid", str(strict), "--sigmas", "0.001,0.01", "--out", str(tmp_path / "g2")]) == 2
    assert not (tmp_path / "g2" / "sigma-0.001").exists()
    assert main(["sigma-grid", str(strict), "--sigmas", "0.01,0.001"]) == 2


def test_choose_sigma_maximises_the_smallest_radius_and_prefers_smaller_on_ties():
    from auditor.sigma_grid import candidate_sigmas, choose_sigma, pilot_seed

    pilot = {0.001: {"a": 0.99, "b": 0.95}, 0.002: {"a": 0.9, "b": 0.9}, 0.004: {"a": 0.99, "b": 0.4}}
    best, radii = choose_sigma(pilot, target=0.5)
    assert best == 0.002 and radii[0.004] == 0.0
    assert radii[0.002] == pytest.approx(0.002 * norm.ppf(0.9))
    assert choose_sigma({0.001: {"a": 0.4}, 0.002: {"a": 0.3}}, 0.5)[0] == 0.001
    assert candidate_sigmas(0.001, 0.016, 5) == pytest.approx([0.001, 0.002, 0.004, 0.008, 0.016])
    assert pilot_seed(4) != 4


def test_sigma_auto_pilot_never_shares_draws_with_the_certificate(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "auto"
    policy = _policy(tmp_path, tiny_model_dir, 0.3)
    args = ["sigma-auto", str(policy), "--range", "0.001,0.01", "--candidates", "2", "--pilot-draws", "3"]
    assert main([*args, "--out", str(out)]) == 0
    doc = json.loads((out / "sigma_auto.json").read_text())
    assert doc["chosen_sigma"] in (0.001, 0.01) and doc["pilot_seed"] != doc["certifying_seed"]
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["perturbation"]["sigma"] == doc["chosen_sigma"] and cert["sampling"]["draws_used"] == 6
    assert main(["sigma-auto", str(policy), "--range", "0.01,0.001"]) == 2
