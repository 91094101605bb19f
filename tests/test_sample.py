"""The Monte-Carlo loop and the certificate it leads to, on the tiny model with scorer tasks."""

import json

import pytest
import torch
from conftest import make_model

from auditor.audit.drawlog import DrawLog
from auditor.audit.run import ScorerTask, certify_model, run_audit
from auditor.audit.sample import SamplingPlan, draw_indices
from auditor.model.checkpoint import memory_identity
from auditor.policy.schema import parse_policy


def _norm_sum(model) -> float:
    return float(model.model.norm.weight.detach().sum())


def threshold_task(name="t", n=12, spread=0.6):
    # 1 when the (perturbed) final-norm weights sum above the example's threshold: noise moves it
    base = 32.0  # LlamaRMSNorm initialises to ones; hidden size 32
    examples = [base - spread + 2 * spread * i / (n - 1) for i in range(n)]
    return ScorerTask(name, examples, lambda model, x: int(_norm_sum(model) > x))


POLICY = """
schema_version: 1
seed: 4
alpha: 0.05
perturbation: {{sigma: 0.05, include: ["model.norm.weight"]}}
sampling: {{design: {design}, bound: {bound}, draws: {draws}{extra}}}
tasks:
  - {{name: t, source: python, oracle: {{type: python, scorer: x}}, require: {{min_p_lower: {need}}}}}
"""


def _policy(design="batched", bound="betting", draws=16, need=0.05, extra=""):
    return parse_policy(POLICY.format(design=design, bound=bound, draws=draws, need=need, extra=extra))


def _run(loaded, tmp_path, tasks=None, **kw):
    model = make_model()
    tasks = tasks or [threshold_task()]
    return run_audit(model, None, tasks, loaded, memory_identity(model), tmp_path / "draws.jsonl", **kw)


def _strip_times(cert):
    d = cert.model_dump()
    for k in ("started", "finished", "run_id"):
        d.pop(k)
    return d


def test_batched_audit_bounds_and_records(tmp_path):
    cert, sample = _run(_policy(), tmp_path)
    t = cert.tasks[0]
    values = sample.per_task["t"].values
    assert len(values) == 16 and t.evaluations == 16 * 12
    assert 0 < t.p_lower <= t.p_hat <= t.p_upper <= 1
    assert t.clean_score == pytest.approx(0.5)  # half the thresholds lie below 32
    assert len(set(values)) > 1, "noise should move the per-draw score"
    assert cert.perturbation.parameters == ["model.norm.weight"] and cert.perturbation.dimension == 32
    assert cert.sampling.draws_used == 16 and not cert.sampling.sequential
    assert t.verdict == "pass" and cert.verdict == "pass"
    assert t.curve.strong[0] == pytest.approx(t.p_lower)


def test_failing_requirement_fails(tmp_path):
    cert, _ = _run(_policy(need=0.65), tmp_path)  # reachable (a perfect run certifies 0.708), not met
    assert cert.verdict == "fail" and cert.tasks[0].verdict == "fail"
    assert "< required 0.6500" in cert.tasks[0].reasons[0]


def test_bernoulli_draws_one_example_each(tmp_path):
    cert, sample = _run(_policy(design="bernoulli", bound="clopper-pearson", draws=40), tmp_path)
    assert set(sample.per_task["t"].values) <= {0.0, 1.0}
    assert cert.tasks[0].evaluations == 40
    plan = SamplingPlan(design="bernoulli", draws=40, seed=4, batch_size=8)
    picks = {draw_indices(threshold_task(), plan, d)[0] for d in range(40)}
    assert len(picks) > 5  # uniform over the 12 examples, not stuck on one


def test_antithetic_pairs_cost_two_evaluations(tmp_path):
    cert, sample = _run(_policy(design="antithetic", draws=8), tmp_path)
    assert cert.tasks[0].evaluations == 8 * 2 * 12
    log = [json.loads(x) for x in (tmp_path / "draws.jsonl").read_text().splitlines()[1:]]
    assert all(len(r["results"]["t"]["correct"]) == 2 for r in log)


def test_sequential_stops_once_decided(tmp_path):
    always = ScorerTask("t", [0, 1, 2, 3], lambda model, x: 1)
    cert, sample = _run(_policy(draws=200, need=0.5, extra=", max_draws: 200"), tmp_path, tasks=[always])
    assert cert.sampling.sequential and sample.draws_used < 40
    assert cert.verdict == "pass" and cert.tasks[0].p_lower >= 0.5


def test_sequential_budget_spent_is_inconclusive(tmp_path):
    cert, _ = _run(_policy(draws=10, need=0.5, extra=", max_draws: 10"), tmp_path)
    assert cert.tasks[0].verdict == "inconclusive" and cert.verdict == "inconclusive"


def test_resume_after_interrupt_gives_the_same_certificate(tmp_path):
    loaded = _policy(draws=12)
    full, _ = _run(loaded, tmp_path / "a")

    def interrupt(draw, _means):
        if draw == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(loaded, tmp_path / "b", on_draw=interrupt)
    lines = (tmp_path / "b" / "draws.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 5  # header + draws 0..4, each flushed
    resumed, sample = _run(loaded, tmp_path / "b", resume=True)
    assert sample.resumed_draws == 5
    assert _strip_times(resumed) == _strip_times(full)


def test_resume_refuses_a_different_run(tmp_path):
    from auditor.errors import AuditorError

    _run(_policy(draws=3), tmp_path)
    with pytest.raises(AuditorError, match="cannot resume, the run differs in: policy_sha256"):
        _run(_policy(draws=4), tmp_path, resume=True)
    with pytest.raises(AuditorError, match="already exists"):
        _run(_policy(draws=3), tmp_path)


def test_torn_last_line_is_redone(tmp_path):
    path = tmp_path / "log.jsonl"
    log = DrawLog(path, {"a": 1}, resume=False)
    log.append(0, {"t": {"value": 1.0}})
    log.close()
    with open(path, "a") as f:
        f.write('{"draw": 1, "res')
    assert set(DrawLog(path, {"a": 1}, resume=True).done) == {0}


def test_python_api_certifies_an_in_memory_module():
    model = make_model()
    before = {n: p.clone() for n, p in model.named_parameters()}
    cert = certify_model(
        model,
        [threshold_task()],
        sigma=0.05,
        seed=1,
        draws=30,
        alpha=0.05,
        include=["model.norm.weight"],
        min_p_lower=0.05,
    )
    assert cert.verdict == "pass" and cert.model.source == "memory"
    assert "model.norm.weight" in cert.policy.text
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), f"{n} not restored after the audit"


def test_scorer_must_return_zero_or_one():
    bad = ScorerTask("bad", [1], lambda model, x: 0.5)
    with pytest.raises(ValueError, match="expected 0 or 1"):
        bad.evaluate(make_model(), None, [0], 1)
