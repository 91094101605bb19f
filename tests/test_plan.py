"""`auditor plan`: pilot on its own seed, cost model, resampled slack, candidates within a budget."""

import json
import re

import numpy as np
import pytest
from test_cli import write_policy
from test_sample import _policy

from auditor.audit import plan as planner
from auditor.cli import main


def pilot(p=6, n=24, rate=0.9, seed=0):
    rng = np.random.default_rng(seed)
    outs = (rng.random((p, n)) < rate).astype(float)
    return planner.Pilot(
        setup_seconds=10.0,
        noise_seconds=1.0,
        eval_seconds={"t": 2.0},
        small_seconds={"t": (6, 0.8)},
        outcomes={"t": outs},
        n_examples={"t": n},
    )


def test_cost_model_is_linear_through_the_two_pilot_points():
    pl = pilot()
    assert planner.eval_seconds(pl, "t", 24) == pytest.approx(2.0)
    assert planner.eval_seconds(pl, "t", 6) == pytest.approx(0.8)
    assert planner.eval_seconds(pl, "t", 15) == pytest.approx(1.4)
    replays = planner.MAX_REPLAYED_DRAWS
    assert planner.predicted_seconds(pl, 10, None) == pytest.approx(10 + (10 + replays) * 3.0)
    assert planner.predicted_seconds(pl, 10, 6) < planner.predicted_seconds(pl, 10, None)


def test_simulated_units_resample_pilot_draws_and_examples():
    outs = np.array([[1, 1, 1, 1], [0, 0, 0, 0]], dtype=float)
    full = planner.simulate_units(outs, None, 50, 3, seed=1)
    assert full.shape == (3, 50) and set(np.unique(full)) <= {0.0, 1.0}
    sub = planner.simulate_units(np.array([[1, 0, 1, 0]] * 2, dtype=float), 2, 400, 2, seed=1)
    assert set(np.unique(sub)) <= {0.0, 0.5, 1.0} and 0.4 < sub.mean() < 0.6


def test_more_draws_predict_less_slack_and_budget_filters():
    loaded = _policy(need=0.5)
    pl = pilot()
    small, big = planner.predict(pl, loaded, 30, None), planner.predict(pl, loaded, 300, None)
    assert big.slack["t"] < small.slack["t"] and big.decided["t"] == "pass"
    cands = planner.candidates(pl, loaded, seconds_budget=120.0)
    assert any(c.fits for c in cands) and any(not c.fits for c in cands)
    best = planner.best(cands)
    assert best is not None and best.fits and best.seconds <= 120.0
    assert all(best.worst_slack <= c.worst_slack + 1e-3 for c in cands if c.fits)
    assert planner.best(planner.candidates(pl, loaded, seconds_budget=1.0)) is None


def test_pilot_round_trips_through_json():
    pl = pilot()
    back = planner.pilot_from_json(json.loads(json.dumps(planner.pilot_to_json(pl))))
    assert back.small_seconds == pl.small_seconds and np.array_equal(back.outcomes["t"], pl.outcomes["t"])


def test_pilot_uses_its_own_seed(monkeypatch):
    seen = []

    class Fake:
        names: list[str] = []

        def apply(self, draw, sign):
            pass

        def restore(self):
            pass

    def fake_perturber(model, policy):
        seen.append(policy.seed)
        return Fake()

    class Task:
        name = "t"
        examples = list(range(8))

        def evaluate(self, model, tok, idx, bs):
            return np.ones(len(list(idx)), dtype=np.uint8)

    monkeypatch.setattr(planner, "make_perturber", fake_perturber)
    loaded = _policy()
    pl = planner.run_pilot(None, None, [Task()], loaded, 3, 0.0)
    assert seen and seen[0] != loaded.policy.seed
    assert pl.outcomes["t"].shape == (3, 8) and pl.small_seconds["t"][0] == 2


def test_plan_cli_runs_a_pilot_and_writes_no_run(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    policy = write_policy(tmp_path, str(tiny_model_dir), need=0.0, draws=4)
    saved = tmp_path / "pilot.json"
    assert main(["plan", str(policy), "--pilot-draws", "2", "--minutes", "60", "--pilot-file", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "suggested: sampling: {draws:" in out and "capitals" in out and "pilot, in s" in out
    assert saved.exists() and not (tmp_path / "reports").exists()
    # the saved pilot is reused: no model needed the second time
    assert main(["plan", str(policy), "--pilot-file", str(saved), "--minutes", "0.001"]) == 1
    assert "no candidate fits" in capsys.readouterr().out


def test_plan_sizes_one_audit_of_a_sigma_grid(tmp_path, tiny_model_dir, capsys):
    policy = write_policy(tmp_path, str(tiny_model_dir), need=0.0, draws=4)
    text = policy.read_text()
    grid = re.sub(r"sigma: [0-9.e-]+", "sigma: [0.001, 0.01, 0.1]", text, count=1)
    policy.write_text(grid + "    require: {min_p_lower: 0.0}\n")  # a grid needs a requirement on every task
    assert main(["plan", str(policy), "--pilot-draws", "2", "--minutes", "60"]) == 0
    captured = capsys.readouterr()
    assert "planning one audit at sigma = 0.001: a sigma search runs up to 3 of them" in captured.err
    assert "suggested: sampling: {draws:" in captured.out
