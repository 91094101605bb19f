"""The verdict rules and the consistency defects they fix: measured tasks, the reported interval,
stopping on the certified units, designs too small to ever pass, slack vs loss under noise."""

import json

import numpy as np
import pytest
from test_sample import _policy, _run

from auditor import stats
from auditor.audit import verdicts
from auditor.audit.run import ScorerTask, check_design
from auditor.audit.sample import SamplingPlan, draw_unit
from auditor.errors import PolicyError
from auditor.policy.schema import MIN_DRAWS, parse_policy

MEASURED_POLICY = """
schema_version: 1
seed: 4
alpha: 0.05
perturbation: {sigma: 0.05, include: ["model.norm.weight"]}
sampling: {design: batched, bound: betting, draws: 12, max_draws: 12}
tasks:
  - {name: t, source: python, oracle: {type: python, scorer: x}}
"""


def test_a_task_without_requirement_is_measured_and_never_passes_alone():
    j = verdicts.judge_task(
        p_lower=0.0, radius=0.0, min_p_lower=None, min_radius=None, target=0.5, decision=None, draws=1
    )
    assert j.verdict == "measured" and "measured only" in j.reasons[0]
    assert verdicts.judge_overall([("a", "measured"), ("b", "measured")])[0] == "measured"
    assert verdicts.judge_overall([("a", "measured"), ("b", "pass")])[0] == "pass"
    assert verdicts.judge_overall([("a", "measured"), ("b", "fail")])[0] == "fail"
    verdict, reasons = verdicts.judge_overall([("a", "measured"), ("b", "inconclusive")])
    assert verdict == "inconclusive" and any("measured only" in r for r in reasons)


def test_sequential_audit_of_measured_tasks_runs_its_budget(tmp_path):
    # before: stopped after one draw with p_lower 0 and verdict pass
    cert, sample = _run(parse_policy(MEASURED_POLICY), tmp_path)
    assert sample.draws_used == 12 and cert.sampling.draws_used == 12
    assert cert.tasks[0].verdict == "measured" and cert.verdict == "measured"
    assert cert.tasks[0].p_lower > 0


def test_measured_tasks_ride_along_when_others_decide(tmp_path):
    always = ScorerTask("t", [0, 1, 2, 3], lambda model, x: 1)
    other = ScorerTask("m", [0, 1], lambda model, x: 1)
    text = _policy(draws=200, need=0.5, extra=", max_draws: 200").text.replace(
        "require: {min_p_lower: 0.5}}",
        "require: {min_p_lower: 0.5}}\n  - {name: m, source: python, oracle: {type: python, scorer: x}}",
    )
    cert, sample = _run(parse_policy(text), tmp_path, tasks=[always, other])
    assert sample.draws_used < 60 and sample.decided == {"t": "pass", "m": "measured"}
    assert cert.verdict == "pass" and [t.verdict for t in cert.tasks] == ["pass", "measured"]


def test_may_stop_needs_a_decided_requirement():
    assert not verdicts.may_stop({"a": "measured"})
    assert not verdicts.may_stop({"a": "pass", "b": "undecided"})
    assert verdicts.may_stop({"a": "pass", "b": "measured", "c": "fail"})


@pytest.mark.parametrize("seed", range(4))
def test_rounded_sequential_decides_on_the_units_it_certifies(tmp_path, seed):
    # before: the sampler decided on raw per-draw means, the certificate bounded rounded units
    text = _policy(draws=80, need=0.3, extra=", max_draws: 80, randomised_rounding: true").text
    loaded = parse_policy(text.replace("seed: 4", f"seed: {seed}"))
    cert, sample = _run(loaded, tmp_path)
    t, draws = cert.tasks[0], sample.per_task["t"]
    plan = SamplingPlan(design="batched", draws=80, seed=seed, batch_size=16, randomised_rounding=True)
    assert draws.units == [draw_unit(v, plan, "t", d) for d, v in enumerate(draws.values)]
    assert set(draws.units) <= {0.0, 1.0} and t.p_hat == pytest.approx(np.mean(draws.units))
    seq = stats.BettingSequence(stats.bonferroni(0.05, 1))
    seq.extend(draws.units)
    assert t.p_lower == pytest.approx(min(seq.lower, seq.mean))
    assert sample.decided["t"] in ("pass", "fail", "undecided")
    expected = {"pass": "pass", "fail": "fail", "undecided": "inconclusive"}[sample.decided["t"]]
    assert t.verdict == expected


def test_reported_lower_bound_never_exceeds_p_hat():
    # the running intersection remembers an early high bound while the mean falls below it
    x = np.r_[np.ones(40), np.zeros(40)]
    assert stats.betting_lower(x, 0.05) <= x.mean()  # the bound itself is capped at the mean
    lo, hi = verdicts.reported_interval(0.7, stats.betting_upper(x, 0.05), float(x.mean()))  # an uncapped one
    assert lo == x.mean() and lo <= hi
    assert verdicts.reported_interval(0.2, 0.25, 0.3) == (0.2, 0.3)


def test_certificate_interval_contains_p_hat(tmp_path):
    cert, _ = _run(_policy(draws=20, need=0.05), tmp_path)
    t = cert.tasks[0]
    assert t.p_lower <= t.p_hat <= t.p_upper


def test_too_few_draws_for_the_bound_are_refused_at_validation():
    with pytest.raises(PolicyError, match="field 'sampling'.*empirical-bernstein needs draws >= 2"):
        _policy(bound="empirical-bernstein", draws=1)
    for name, spec in stats.BOUNDS.items():
        assert MIN_DRAWS[name] == spec.min_n


def test_a_design_that_can_never_pass_is_refused_before_any_work(tmp_path):
    loaded = _policy(draws=4, need=0.5)
    with pytest.raises(PolicyError, match="4 draws with bound betting .* certify at most 0.42"):
        check_design(loaded)
    check_design(_policy(draws=16, need=0.5))  # a perfect 16-draw run reaches 0.80


def test_cli_validate_refuses_an_unreachable_requirement(tmp_path, capsys):
    from auditor.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(_policy(draws=3, need=0.9).text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(path) in err and "sampling.draws" in err


def test_gap_is_split_into_slack_and_loss_under_noise(tmp_path):
    cert, _ = _run(_policy(draws=12, need=0.05), tmp_path)
    t = cert.tasks[0]
    assert t.statistical_slack == pytest.approx(t.p_hat - t.p_lower) and t.statistical_slack >= 0
    assert t.loss_under_noise == pytest.approx(t.clean_score - t.p_hat)
    assert "basin_gap" not in json.loads(cert.canonical_json())["tasks"][0]


def test_verify_does_not_read_a_measured_certificate_as_a_pass():
    from factories import make_certificate

    from auditor.verify.certificates import Verification

    cert = make_certificate()
    measured = cert.model_copy(update={"verdict": "measured"})
    text = Verification(True, certificate=measured).summary()
    assert "MEASURED" in text and "does not pass" in text
    assert "does not pass" not in Verification(True, certificate=cert).summary()


def test_threshold_of_a_radius_requirement():
    from scipy.stats import norm

    text = _policy(need=0.05).text.replace("{min_p_lower: 0.05}", "{min_p_lower: 0.05, min_radius: 0.02}")
    need = verdicts.pass_threshold(parse_policy(text).policy, "t")
    assert need == pytest.approx(norm.cdf(norm.ppf(0.5) + 0.02 / 0.05))  # the radius binds, not 0.05
