"""sigma as a search: the fixed-sequence grid (stops at the first failure, FWER <= alpha), sigma: auto's
n0/n split, the policy fields, the certificate's record of both, and the gate's checks of that record."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model
from scipy.stats import norm

from auditor import stats
from auditor.audit import sigma_search
from auditor.audit.run import ScorerTask, run_audit
from auditor.certificate.schema import SigmaPilot, SigmaStep
from auditor.cli import main
from auditor.errors import PolicyError
from auditor.gate.trust import Untrusted, check_derived
from auditor.model.checkpoint import memory_identity, sha256_file
from auditor.policy.schema import parse_policy

# --------------------------------------------------------------------------- the procedure


def _step(sigma: float, p_lower: float, threshold: float) -> SigmaStep:
    return SigmaStep(sigma=sigma, p_lower=p_lower, threshold=threshold, certified=p_lower >= threshold, run=".")


def _fake(p_lowers: dict[str, list[float]], threshold: float, calls: list[float]):
    grid = [0.001, 0.002, 0.004, 0.008]

    def audit_at(sigma: float) -> dict[str, SigmaStep]:
        calls.append(sigma)
        j = grid.index(sigma)
        return {t: _step(sigma, v[j], threshold) for t, v in p_lowers.items()}

    return grid, audit_at


def test_each_task_stops_at_its_first_failure_and_later_passes_never_count():
    calls: list[float] = []
    grid, audit_at = _fake({"a": [0.9, 0.8, 0.5, 0.9], "b": [0.9, 0.9, 0.9, 0.2]}, 0.6, calls)
    a, b = sigma_search.certify_grid(["a", "b"], grid, audit_at, target=0.5)
    assert (a.sigma_star, a.stopped_at, len(a.steps)) == (0.002, 0.004, 3)  # 0.008 passes again: ignored
    assert (b.sigma_star, b.stopped_at, len(b.steps)) == (0.004, 0.008, 4)
    assert a.radius_at_star == pytest.approx(0.002 * (norm.ppf(0.6) - norm.ppf(0.5)))
    calls.clear()
    grid, audit_at = _fake({"a": [0.9, 0.1, 0.9, 0.9], "b": [0.1, 0.9, 0.9, 0.9]}, 0.6, calls)
    a, b = sigma_search.certify_grid(["a", "b"], grid, audit_at, target=0.5)
    assert calls == [0.001, 0.002]  # every task failed: no further audit is paid for
    assert b.sigma_star is None and b.radius_at_star is None and a.sigma_star == 0.001


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
            return {"t": _step(sigma, stats.clopper_pearson_lower(k, n, alpha), c)}

        (edge,) = sigma_search.certify_grid(["t"], grid, audit_at, target=0.5)
        errors += any(p_true[s.sigma] < c for s in edge.steps if s.certified)
    assert errors / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_choose_sigma_maximises_the_smallest_radius_and_prefers_smaller_on_ties():
    def cand(sigma, radius):
        return SigmaPilot(sigma=sigma, p_hat={"a": 1.0}, predicted_p_lower={"a": 1.0}, min_radius=radius)

    assert sigma_search.choose_sigma([cand(0.001, 0.002), cand(0.002, 0.003), cand(0.004, 0.0)]) == 0.002
    assert sigma_search.choose_sigma([cand(0.001, 0.0), cand(0.002, 0.0)]) == 0.001
    out_of_reach = cand(0.001, 0.009).model_copy(update={"reachable": False})  # its requirement can't be met
    assert sigma_search.choose_sigma([out_of_reach, cand(0.002, 0.003)]) == 0.002
    assert sigma_search.pilot_seed(4) != 4
    # the prediction is the policy's own bound on resampled pilot draws: it tightens with the certifying draws,
    # stays below the pilot mean, and is the same every time
    units = [1, 1, 0.5, 1, 0.75, 1, 0.5, 1]
    lows = []
    for draws in (10, 100, 1000):
        policy = _loaded("0.01").policy
        policy = policy.model_copy(update={"sampling": policy.sampling.model_copy(update={"draws": draws})})
        lows.append(sigma_search.predicted_lower(units, policy, "t", n_tasks=1))
    assert 0.0 <= lows[0] < lows[1] < lows[2] < float(np.mean(units))
    assert sigma_search.predicted_lower(units, policy, "t", n_tasks=1) == lows[2]


# --------------------------------------------------------------------------- the policy

BASE = """schema_version: 1
seed: 4
alpha: 0.05
perturbation: {{sigma: {sigma}, include: ["*norm*"]}}
sampling: {{design: batched, bound: star-bets, draws: 24}}
tasks:
  - {{name: t, source: python, oracle: {{type: python, scorer: x}}, require: {require}}}
"""


def _loaded(sigma: str, require: str = "{min_p_lower: 0.55}"):
    return parse_policy(BASE.format(sigma=sigma, require=require), origin="p.yaml")


def test_policy_sigma_takes_a_number_a_grid_or_auto():
    assert _loaded("0.01").policy.perturbation.fixed_sigma == 0.01
    grid = _loaded("[0.01, 0.05, 0.1]").policy.perturbation
    assert grid.grid == [0.01, 0.05, 0.1] and grid.auto is None and grid.search_sigmas() == [0.01, 0.05, 0.1]
    auto = _loaded("{auto: [0.001, 0.016], pilot_draws: 4}").policy.perturbation
    assert auto.auto.candidates == 5 and auto.search_sigmas() == pytest.approx([0.001, 0.002, 0.004, 0.008, 0.016])
    with pytest.raises(ValueError, match=r"at\(sigma\)"):
        grid.fixed_sigma  # noqa: B018 - an audit must be handed one sigma
    assert grid.at(0.05).fixed_sigma == 0.05


@pytest.mark.parametrize(
    ("sigma", "message"),
    [
        ("[0.02, 0.01]", "strictly ascending"),
        ("[0.01, 0.01]", "strictly ascending"),
        ("[0.0, 0.1]", "strictly ascending"),
        ("[0.01]", "at least two numbers"),
        ("-0.1", "positive number"),
        ("{auto: [0.02, 0.01]}", "0 < lo < hi"),
        ("{auto: [0.01, 0.02], candidates: 1}", "candidates"),
        ("{auto: [0.01, 0.02], pilot: 3}", "pilot"),
        ("fast", "expected a number"),
    ],
)
def test_bad_sigma_fields_are_one_line_naming_the_field(sigma, message):
    with pytest.raises(PolicyError, match=message) as info:
        _loaded(sigma)
    assert str(info.value).startswith("p.yaml: field 'perturbation.sigma")


def test_a_grid_needs_a_requirement_on_every_task():
    with pytest.raises(PolicyError, match="a sigma grid certifies each task against its requirement"):
        _loaded("[0.01, 0.02]", require="{}")
    _loaded("{auto: [0.01, 0.02]}", require="{}")  # auto maximises the radius at the target: no requirement needed


def test_validate_reads_a_grid_policy_and_refuses_an_unreachable_one(tmp_path, capsys):
    text = """schema_version: 1
seed: 4
perturbation: {{sigma: [0.002, 0.004, 0.008]}}
sampling: {{draws: 6}}
tasks:
  - {{name: capitals, source: "builtin:capitals", oracle: {{type: contains}}, require: {{min_p_lower: {need}}}}}
"""
    path = tmp_path / "grid.yaml"
    path.write_text(text.format(need=0.3))
    assert main(["validate", str(path)]) == 0
    assert "sigma=[0.002, 0.004, 0.008]" in capsys.readouterr().out
    path.write_text(text.format(need=0.99))  # 6 draws can never bound p above 0.99
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "grid.yaml: field 'sampling.draws': at sigma 0.002: task 'capitals' needs p_lower >= 0.9900" in err


# --------------------------------------------------------------------------- a real grid and auto audit


def _norm_task() -> ScorerTask:
    # RMSNorm weights start at ones (sum 32): an example passes while the noise moves that sum less than its
    # tolerance, so the score falls as sigma grows
    tolerances = [0.05 + 0.95 * i / 11 for i in range(12)]
    return ScorerTask(
        "t", tolerances, lambda model, x: int(abs(float(model.model.norm.weight.detach().sum()) - 32) < x)
    )


def _search(loaded, run_dir: Path):
    model = make_model()

    def audit(at, here):
        return run_audit(model, None, [_norm_task()], at, memory_identity(model), here / "draws.jsonl")

    run = sigma_search.run_grid if loaded.policy.perturbation.grid else sigma_search.run_auto
    return run([_norm_task()], loaded, run_dir, audit)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("grid")
    cert, _ = _search(_loaded("[0.01, 0.05, 0.1, 0.2]"), run_dir)
    return cert, run_dir


def test_grid_certifies_in_order_stops_at_the_first_failure_and_records_it(grid_run):
    cert, run_dir = grid_run
    search = cert.sigma_search
    (edge,) = search.edges
    assert [s.sigma for s in edge.steps] == [0.01, 0.05, 0.1]  # 0.1 failed: 0.2 was never audited
    assert [s.certified for s in edge.steps] == [True, True, False]
    assert (edge.sigma_star, edge.stopped_at) == (0.05, 0.1)
    assert edge.radius_at_star == pytest.approx(0.05 * (norm.ppf(0.55) - norm.ppf(0.5)))  # from the threshold
    # the certificate itself is sigma_1's audit, and its first step is that very audit
    assert cert.perturbation.sigma == 0.01 and edge.steps[0].p_lower == cert.tasks[0].p_lower
    assert (run_dir / "draws.jsonl").is_file() and not (run_dir / "sigma-0.2").exists()
    for step in edge.steps[1:]:
        step_cert = run_dir / step.run / "certificate.json"
        assert sha256_file(step_cert) == step.certificate_sha256
        assert json.loads(step_cert.read_text())["perturbation"]["sigma"] == step.sigma
    # simultaneous family: alpha/m per sigma is stricter than the fixed-sequence level
    assert all(s.p_lower_bonferroni < s.p_lower for s in edge.steps)
    assert any("Fixed-sequence" in c for c in search.claims) and any("2 alpha" in c for c in search.claims)
    check_derived(cert, run_dir / "certificate.json")  # every search number re-derives


def test_grid_steps_share_the_seed_so_the_curve_uses_common_directions(grid_run):
    # same seed at every sigma: draw d is the same direction z, scaled; the norm sum moves by sigma * sum(z), so
    # each draw's score can only fall as sigma grows (independent streams would break this draw by draw)
    _, run_dir = grid_run

    def values(d):
        lines = (run_dir / d / "draws.jsonl").read_text().splitlines()[1:]
        return [json.loads(line)["results"]["t"]["value"] for line in lines]

    v1, v2, v3 = values("."), values("sigma-0.05"), values("sigma-0.1")
    assert all(a >= b >= c for a, b, c in zip(v1, v2, v3, strict=True)) and sum(v1) > sum(v3)


def test_render_shows_the_basin_edge_and_its_plot(grid_run):
    from auditor.certificate.render import render_html

    html = render_html(grid_run[0], signed=False)
    assert "Certified basin edge" in html and "data:image/svg+xml" in html and "union bound" in html


def _forge(cert, **edge_update):
    search = cert.sigma_search
    edge = search.edges[0].model_copy(update=edge_update)
    return cert.model_copy(update={"sigma_search": search.model_copy(update={"edges": [edge]})})


def test_the_gate_refuses_a_forged_search_and_a_step_presented_alone(grid_run):
    from auditor.certificate.schema import read_certificate

    cert, run_dir = grid_run
    where = run_dir / "certificate.json"
    edge = cert.sigma_search.edges[0]
    forged = [
        _forge(cert, sigma_star=0.1),  # a sigma* past the failure
        _forge(cert, radius_at_star=edge.radius_at_star * 10),
        _forge(cert, steps=[*edge.steps[:2], edge.steps[2].model_copy(update={"certified": True})], stopped_at=None),
        _forge(cert, steps=edge.steps[:2], stopped_at=None),  # hides the failure: a never-failing task runs the grid
        _forge(cert, steps=[edge.steps[0].model_copy(update={"threshold": 0.1}), *edge.steps[1:]]),
        cert.model_copy(
            update={"sigma_search": cert.sigma_search.model_copy(update={"claims": ["every radius holds at alpha"]})}
        ),
        # a Bonferroni bound above the step's own bound (its radius made to match): the same draws can't give it
        _forge(
            cert,
            steps=[
                *edge.steps[:1],
                edge.steps[1].model_copy(
                    update={"p_lower_bonferroni": 0.99, "radius_bonferroni": 0.05 * float(norm.ppf(0.99))}
                ),
                *edge.steps[2:],
            ],
        ),
    ]
    for bad in forged:
        with pytest.raises(Untrusted, match="sigma_search"):
            check_derived(bad, where)
    # a policy text whose sigma no policy could hold is refused, not a crash
    for text in (
        "perturbation: {sigma: []}\n",
        "perturbation: {sigma: [0.01, x]}\n",
        "perturbation: {sigma: {auto: 1}}\n",
    ):
        record = cert.policy.model_copy(update={"text": text, "sha256": hashlib.sha256(text.encode()).hexdigest()})
        with pytest.raises(Untrusted):
            check_derived(cert.model_copy(update={"policy": record}), where)
    # sigma*'s own audit, shown alone, reads like a certificate of a sigma fixed in advance: refused
    step = read_certificate(run_dir / "sigma-0.05" / "certificate.json")
    with pytest.raises(Untrusted, match="one step .* of that search"):
        check_derived(step, run_dir / "sigma-0.05" / "certificate.json")
    # and a search record grafted onto a single-sigma certificate is refused too
    text = step.policy.text.replace("[0.01, 0.05, 0.1, 0.2]", "0.05")
    record = step.policy.model_copy(update={"text": text, "sha256": hashlib.sha256(text.encode()).hexdigest()})
    single = step.model_copy(update={"sigma_search": cert.sigma_search, "policy": record})
    check_derived(single.model_copy(update={"sigma_search": None}), where)  # without the graft: a valid certificate
    with pytest.raises(Untrusted, match="field 'sigma_search'"):
        check_derived(single, where)


def test_the_gate_uses_the_grids_simultaneous_family_and_names_the_sigma(grid_run):
    from auditor.gate.radius import judge, task_claims
    from auditor.model.tensor_stream import DeltaStats

    cert, _ = grid_run
    (edge,) = cert.sigma_search.edges
    assert task_claims(cert)["t"] == [(s.p_lower_bonferroni, s.sigma) for s in edge.steps]
    best = max(edge.steps, key=lambda s: s.radius_bonferroni)
    own = cert.tasks[0].radius
    assert best.sigma > cert.perturbation.sigma and best.radius_bonferroni > own  # a larger sigma certifies further
    delta = DeltaStats(squared={"model.norm.weight": ((own + best.radius_bonferroni) / 2) ** 2})
    (row,), verdict, reasons, _ = judge(cert, delta, [])
    assert verdict == "pass" and row.sigma == best.sigma and f"at sigma {best.sigma:g}" in reasons[0]
    assert row.radius == pytest.approx(best.radius_bonferroni)
    # without the search, only sigma_1's own bound: the same change is not certified
    (row,), verdict, _, _ = judge(cert.model_copy(update={"sigma_search": None}), delta, [])
    assert verdict == "not certified" and row.sigma == cert.perturbation.sigma and row.radius == pytest.approx(own)


def test_auto_pilots_on_its_own_seed_and_certifies_the_choice_with_fresh_draws(tmp_path):
    loaded = _loaded("{auto: [0.01, 0.2], candidates: 3, pilot_draws: 6}")
    cert, _ = _search(loaded, tmp_path)
    search = cert.sigma_search
    assert search.mode == "auto" and search.pilot_seed != cert.seed and search.pilot_draws == 6
    assert cert.perturbation.sigma == search.chosen == sigma_search.choose_sigma(search.pilot)
    assert cert.sampling.draws_used == 24  # the policy's own draws, none of the pilot's
    assert sorted(p.name for p in (tmp_path / "pilot").iterdir()) == [
        "00-sigma-0.01",
        "01-sigma-0.04472",
        "02-sigma-0.2",
    ]
    pilot_log = (tmp_path / "pilot" / "00-sigma-0.01" / "draws.jsonl").read_text().splitlines()
    assert len(pilot_log) == 1 + 6
    check_derived(cert, tmp_path / "certificate.json")
    other = next(c.sigma for c in search.pilot if c.sigma != search.chosen)
    moved = cert.model_copy(update={"sigma_search": search.model_copy(update={"chosen": other})})
    with pytest.raises(Untrusted, match="sigma_search.chosen"):
        check_derived(moved, tmp_path / "certificate.json")
    # every candidate is reachable here (min_p_lower 0.55 with 24 draws): a record saying otherwise is refused
    pilot = [c.model_copy(update={"reachable": c.sigma == search.chosen}) for c in search.pilot]
    hidden = cert.model_copy(update={"sigma_search": search.model_copy(update={"pilot": pilot})})
    with pytest.raises(Untrusted, match=r"sigma_search.pilot\[\d\].reachable"):
        check_derived(hidden, tmp_path / "certificate.json")
    # a recorded policy no candidate of which is reachable could never have run: refused, not a crash
    text = cert.policy.text.replace("{min_p_lower: 0.55}", "{min_radius: 10.0}")
    record = cert.policy.model_copy(update={"text": text, "sha256": hashlib.sha256(text.encode()).hexdigest()})
    pilot = [c.model_copy(update={"reachable": False}) for c in search.pilot]
    dead = cert.model_copy(update={"policy": record, "sigma_search": search.model_copy(update={"pilot": pilot})})
    with pytest.raises(Untrusted, match="no reachable candidate"):
        check_derived(dead, tmp_path / "certificate.json")


def test_auto_never_chooses_a_sigma_whose_requirement_is_out_of_reach(tmp_path):
    # min_radius 0.004 at q = 0.5 needs p_lower >= Phi(0.004 / sigma): 0.84 at sigma 0.004, 0.9999997 at 0.0008;
    # 24 draws reach the former, never the latter
    loaded = _loaded("{auto: [0.0008, 0.004], candidates: 2, pilot_draws: 4}", require="{min_radius: 0.004}")
    cert, _ = _search(loaded, tmp_path)
    assert [c.reachable for c in cert.sigma_search.pilot] == [False, True]
    assert cert.perturbation.sigma == 0.004
    check_derived(cert, tmp_path / "certificate.json")


# --------------------------------------------------------------------------- through `auditor certify`

CLI_POLICY = """schema_version: 1
model: {model}
seed: 4
alpha: 0.05
perturbation: {{sigma: {sigma}}}
sampling: {{draws: 16, bound: betting}}
tasks:
  - name: always
    source: builtin:arithmetic
    oracle: {{type: python, scorer: "scorer.py:always"}}
    limit: 3
    max_new_tokens: 1
    require: {{min_p_lower: 0.3}}
"""


def _cli_policy(tmp_path, model, sigma):
    (tmp_path / "scorer.py").write_text("def always(answer, example):\n    return 1\n")
    path = tmp_path / "policy.yaml"
    path.write_text(CLI_POLICY.format(model=model, sigma=sigma))
    return path


def test_certify_runs_a_grid_policy_signs_its_certificate_and_resumes(tmp_path, tiny_model_dir, capsys):
    from auditor.attest.signing import keygen
    from auditor.certificate.schema import read_certificate

    keys = keygen(tmp_path / "keys")
    policy, out = _cli_policy(tmp_path, tiny_model_dir, "[0.001, 0.01]"), tmp_path / "run"
    args = ["certify", str(policy), "--out", str(out), "--threads", "1", "--no-progress"]
    assert main([*args, "--key", str(keys["private_key"])]) == 0
    printed = capsys.readouterr().out
    assert "certified basin edge" in printed and "always: σ* = 0.01" in printed
    cert = read_certificate(out / "certificate.json")
    assert cert.sigma_search.edges[0].sigma_star == 0.01 and cert.perturbation.sigma == 0.001
    assert (out / "certificate.pdf").is_file() and (out / "sigma-0.01" / "certificate.json").is_file()
    assert not (out / "sigma-0.01" / "certificate.dsse.json").exists()  # only the search's certificate is signed
    assert main(["verify", str(out), "--key", str(keys["public_key"])]) == 0
    assert "sigma grid: 1 step certificate(s) match their signed digests; 2 step draw log(s) give" in (
        capsys.readouterr().out
    )
    # a step's log that does not give the signed search's numbers: one draw's outcome flipped
    log = out / "sigma-0.01" / "draws.jsonl"
    kept_log = log.read_text()
    lines = kept_log.splitlines(keepends=True)
    lines[1] = lines[1].replace('"value": 1.0', '"value": 0.0')
    log.write_text("".join(lines))
    assert main(["verify", str(out), "--key", str(keys["public_key"])]) == 1
    assert "sigma grid sigma-0.01: always p_lower" in capsys.readouterr().err
    log.write_text(kept_log)
    step = out / "sigma-0.01" / "certificate.json"
    kept = step.read_bytes()
    step.write_bytes(kept.replace(b'"p_hat":1.0', b'"p_hat":0.9'))  # a step edited after signing
    assert main(["verify", str(out), "--key", str(keys["public_key"])]) == 1
    assert "sigma-0.01/certificate.json: sha256 differs" in capsys.readouterr().err
    step.write_bytes(kept)
    # the gate takes the search's certificate, and refuses sigma*'s step offered in its place
    assert main(["gate", str(out), "--candidate", str(tiny_model_dir), "--trusted-key", str(keys["public_key"])]) == 0
    capsys.readouterr()
    assert main(["gate", str(out / "sigma-0.01"), "--candidate", str(tiny_model_dir), "--allow-unsigned"]) == 1
    assert "this is one step (or pilot) of that search" in capsys.readouterr().err
    # resumed: every step's log is complete, so nothing is drawn again and the search is the same
    assert main([*args, "--resume"]) == 0
    assert "32 draws (32 resumed)" in capsys.readouterr().out  # two sigmas of 16 draws, all from the logs
    again = read_certificate(out / "certificate.json").sigma_search
    # the same numbers (a republished step has new timestamps, hence a new digest)
    steps = [[(s.sigma, s.p_lower, s.certified) for s in e.edges[0].steps] for e in (again, cert.sigma_search)]
    assert steps[0] == steps[1] and [s[0] for s in steps[0]] == [0.001, 0.01]


def test_certify_runs_sigma_auto(tmp_path, tiny_model_dir, capsys):
    from auditor.certificate.schema import read_certificate

    policy = _cli_policy(tmp_path, tiny_model_dir, "{auto: [0.001, 0.01], candidates: 2, pilot_draws: 3}")
    out = tmp_path / "auto"
    assert main(["certify", str(policy), "--out", str(out), "--threads", "1", "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    assert "σ chosen by the pilot (3 draws each, own seed)" in captured.err
    summary = json.loads(captured.out)
    assert summary["sigma_search"]["mode"] == "auto" and summary["sigma"] == summary["sigma_search"]["chosen"]
    cert = read_certificate(out / "certificate.json")
    assert cert.perturbation.sigma == cert.sigma_search.chosen and cert.sampling.draws_used == 16
    assert len((out / "pilot" / "00-sigma-0.001" / "draws.jsonl").read_text().splitlines()) == 1 + 3


def test_a_sigma_search_under_a_launcher_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    from auditor.audit import distributed, job

    monkeypatch.setattr(distributed, "from_environment", lambda: object())  # as if under torchrun
    loaded = parse_policy(CLI_POLICY.format(model="no-such-model", sigma="[0.001, 0.01]"), origin="p.yaml")
    (tmp_path / "scorer.py").write_text("def always(answer, example):\n    return 1\n")
    loaded = loaded.model_copy(update={"path": tmp_path / "p.yaml"})
    with pytest.raises(PolicyError, match="field 'perturbation.sigma': a sigma grid or auto search runs in one"):
        job.certify(loaded, out_dir=tmp_path / "run")


@pytest.mark.parametrize("run", ["sigma-grid", "sigma-auto"])
def test_the_committed_basin_edge_reports_verify_and_are_trusted(run, capsys):
    """The signed real-model searches in reports/landscape stay valid for this code: verify and the gate's checks."""
    from auditor.certificate.schema import read_certificate

    root = Path(__file__).resolve().parents[1] / "reports"
    folder = root / "landscape" / run
    if not (folder / "certificate.intoto.jsonl").exists():
        pytest.skip("report not present")
    assert main(["verify", str(folder), "--key", str(root / "example" / "signing-key.pub")]) == 0
    out = capsys.readouterr().out
    assert "draws.jsonl: 90 draws give" in out
    if run == "sigma-grid":
        assert "3 step certificate(s) match their signed digests; 4 step draw log(s)" in out
    check_derived(read_certificate(folder / "certificate.json"), folder / "certificate.json")
