"""Landscape slices on the tiny model: exact at a = 0, stated norms, worst beats random, replayable, restored."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_model
from scipy.stats import beta

from auditor.basin.directions import Slicer, norm, reference_pairs, sft_direction, surrogate_loss, worst_direction
from auditor.basin.landscape import (
    basin_edge,
    direction_seed,
    directions_needed,
    edges_of,
    run_landscape,
    strict_basin,
    task_score,
)
from auditor.errors import AuditorError, PolicyError
from auditor.policy.schema import LandscapeSpec, parse_policy
from auditor.tasks import build_tasks

POLICY = """schema_version: 1
seed: 5
perturbation: {sigma: 0.01}
sampling: {batch_size: 8}
tasks:
  - {name: choice, source: builtin:choice, oracle: {type: choice}}
  - {name: capitals, source: builtin:capitals, oracle: {type: contains}, limit: 4, max_new_tokens: 2}
landscape: {grid: [0.05, 0.3], random_directions: 2, worst_steps: 2, strict_scale: 0.05, strict_directions: 3}
"""


@pytest.fixture
def loaded():
    return parse_policy(POLICY)


def _state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same(model, state):
    return all(torch.equal(p, state[n]) for n, p in model.named_parameters())


def test_slices_pass_exactly_through_theta0_at_zero(loaded, tiny_tokenizer, tmp_path):
    model = make_model(tie=False)
    theta0 = _state(model)
    tasks = build_tasks(loaded)
    clean = {t.name: task_score(t, model, tiny_tokenizer, 8) for t in tasks}
    slicer = Slicer(model, seed=1, include=["*"], exclude=[])
    choice = tasks[0]
    worst = worst_direction(slicer, model, tiny_tokenizer, reference_pairs(choice, tiny_tokenizer), 0.1, 2, 8)
    cand = make_model(tie=False, seed=3)
    cand.save_pretrained(tmp_path / "ft", safe_serialization=True)
    sft = sft_direction(slicer, tmp_path / "ft")
    for delta in (slicer.random(0), worst.delta, sft.delta):
        slicer.apply(delta, 0.0)
        assert _same(model, theta0)  # a = 0 is theta0 itself, bit for bit, whatever the direction
        assert {t.name: task_score(t, model, tiny_tokenizer, 8) for t in tasks} == clean
        slicer.restore()
    assert clean["choice"] > 0  # the slice is anchored at a real, non-trivial score


def test_directions_have_the_stated_norms(loaded, tiny_tokenizer, tmp_path):
    model = make_model(tie=False)
    slicer = Slicer(model, seed=1, include=["model.layers.*"], exclude=["*norm*"])
    unit = math.sqrt(slicer.dimension)
    # random: unnormalised N(0, I); ||delta||^2 ~ chi^2_d, so ||delta|| / sqrt(d) = 1 +- O(1/sqrt(2d))
    for k in range(3):
        assert abs(norm(slicer.random(k)) / unit - 1) < 6 / math.sqrt(2 * slicer.dimension)
    choice = build_tasks(loaded)[0]
    worst = worst_direction(slicer, model, tiny_tokenizer, reference_pairs(choice, tiny_tokenizer), 0.1, 3, 8)
    assert norm(worst.delta) == pytest.approx(unit, rel=1e-5)
    cand = make_model(tie=False)
    with torch.no_grad():
        cand.model.layers[0].mlp.up_proj.weight.add_(0.25)
        cand.model.embed_tokens.weight.add_(1.0)  # changed but not perturbed: reported, not on the slice
    cand.save_pretrained(tmp_path / "ft", safe_serialization=True)
    sft = sft_direction(slicer, tmp_path / "ft")
    assert norm(sft.delta) == pytest.approx(unit, rel=1e-5)
    true_distance = 0.25 * math.sqrt(cand.model.layers[0].mlp.up_proj.weight.numel())
    assert sft.distance == pytest.approx(true_distance, rel=1e-5)
    # theta0 + scale * delta is the fine-tuned model on the perturbed parameters
    slicer.apply(sft.delta, sft.scale)
    assert torch.allclose(model.model.layers[0].mlp.up_proj.weight, cand.model.layers[0].mlp.up_proj.weight, atol=1e-5)
    slicer.restore()


def test_sft_direction_of_a_lora_adapter_matches_peft_merge(tiny_tokenizer, tmp_path):
    peft = pytest.importorskip("peft")
    base = make_model(tie=False)
    theta0 = _state(base)
    pm = peft.get_peft_model(make_model(tie=False), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    pm.save_pretrained(tmp_path / "adapter", safe_serialization=True)
    merged = {n: p.detach() for n, p in pm.merge_and_unload().named_parameters()}
    slicer = Slicer(base, seed=1, include=["*"], exclude=[])
    sft = sft_direction(slicer, tmp_path / "adapter")
    expected = [merged[n] - theta0[n] for n in slicer.names]
    assert sft.distance == pytest.approx(norm(expected), rel=1e-4)
    slicer.apply(sft.delta, sft.scale)
    for n, p in base.named_parameters():
        assert torch.allclose(p, merged[n], atol=1e-5), n
    slicer.restore()
    assert _same(base, theta0)


def test_worst_direction_degrades_the_surrogate_more_than_random_ones(loaded, tiny_tokenizer):
    model = make_model(tie=False)
    choice = build_tasks(loaded)[0]
    pairs = reference_pairs(choice, tiny_tokenizer)
    slicer = Slicer(model, seed=1, include=["*"], exclude=[])
    scale = 0.02
    worst = worst_direction(slicer, model, tiny_tokenizer, pairs, scale, 3, 8)

    def surrogate_at(delta):
        slicer.apply(delta, scale)
        with torch.no_grad():
            value = float(surrogate_loss(model, tiny_tokenizer, pairs, 8))
        slicer.restore()
        return value

    with torch.no_grad():
        clean = float(surrogate_loss(model, tiny_tokenizer, pairs, 8))
    from auditor.basin.directions import rescaled

    randoms = [surrogate_at(rescaled(slicer.random(k), slicer.unit_norm)) for k in range(5)]
    at_worst = surrogate_at(worst.delta)
    assert at_worst == pytest.approx(max(worst.trace), rel=1e-5)
    assert at_worst > clean
    assert at_worst - clean > 3 * max(max(r - clean for r in randoms), 0.0)


def test_a_point_replays_from_seed_direction_and_scale_alone(loaded, tiny_tokenizer):
    tasks = build_tasks(loaded)
    model = make_model(tie=False)
    theta0 = _state(model)
    result = run_landscape(model, tiny_tokenizer, tasks, loaded.policy, families=["random", "worst"])
    assert _same(model, theta0)  # every slice, the PGD and the strict test left theta0 bit-exact
    fresh = make_model(tie=False)
    slicer = Slicer(fresh, direction_seed(loaded.policy.seed), ["*"], [])
    for p in [p for p in result.points if p.family == "random"][::5]:
        slicer.apply(slicer.random(p.direction), p.a)  # no earlier directions, no earlier points
        task = next(t for t in tasks if t.name == p.task)
        assert task_score(task, fresh, tiny_tokenizer, 8) == p.score
        slicer.restore()
    # every slice has both signs of every grid scale, and the edges cover every slice
    scales = sorted({p.a for p in result.points if p.family == "worst" and p.task == "choice"})
    assert scales == [-0.3, -0.05, 0.05, 0.3]
    assert {(e.family, e.direction, e.task) for e in result.edges} == {
        ("random", 0, "choice"),
        ("random", 0, "capitals"),
        ("random", 1, "choice"),
        ("random", 1, "capitals"),
        ("worst", 0, "choice"),
        ("worst", 0, "capitals"),
    }
    assert [s.directions for s in result.strict] == [3, 3]


def test_basin_edge_and_cliff():
    s = {0.01: 0.80, 0.02: 0.78, 0.04: 0.81, 0.08: 0.50, 0.16: 0.9}
    assert basin_edge(0.8, s, tolerance=0.05) == (0.04, 0.08)  # the later recovery does not extend the basin
    assert basin_edge(0.8, s, tolerance=0.0) == (0.01, 0.02)
    assert basin_edge(0.8, {0.01: 0.1}, tolerance=0.05) == (0.0, 0.01)
    assert basin_edge(0.8, {0.01: 0.8}, tolerance=0.0) == (0.01, None)
    from auditor.basin.landscape import Point

    pts = [Point("random", 0, "t", a, v) for a, v in [(-0.02, 0.5), (-0.01, 0.8), (0.01, 0.8), (0.02, 0.8)]]
    (edge,) = edges_of(pts, {"t": 0.8}, 0.05)
    assert (edge.edge_pos, edge.edge_neg, edge.edge, edge.cliff_pos, edge.cliff_neg) == (0.02, 0.01, 0.01, None, -0.02)


def test_strict_basin_clopper_pearson_numbers():
    assert directions_needed(0.9, 0.01) == 44  # the paper's figure
    assert directions_needed(0.9, 0.01 / 3) == 55
    spec = LandscapeSpec()
    all_44 = strict_basin("t", 0.004, 0.5, [0.5] * 44, spec, 0.01)
    assert all_44.unchanged == 44 and all_44.holds
    assert all_44.lower_bound == pytest.approx(0.01 ** (1 / 44)) and all_44.lower_bound > 0.9
    all_43 = strict_basin("t", 0.004, 0.5, [0.5] * 43, spec, 0.01)
    assert not all_43.holds and all_43.lower_bound < 0.9
    some = strict_basin("t", 0.004, 0.5, [0.5] * 40 + [0.45] * 4, spec, 0.01)
    assert some.unchanged == 40
    assert some.lower_bound == pytest.approx(beta.ppf(0.01, 40, 44 - 40 + 1))
    loose = strict_basin("t", 0.004, 0.5, [0.5] * 40 + [0.45] * 4, LandscapeSpec(strict_tolerance=0.05), 0.01)
    assert loose.unchanged == 44
    up = strict_basin("t", 0.004, 0.5, [0.55] * 44, spec, 0.01)
    assert up.unchanged == 0  # a score that moves up is changed too: the paper's strict basin is equality


def test_coverage_of_the_strict_basin_bound():
    # The directions are iid, so "unchanged" is Bernoulli(f): the bound must sit below f in >= 99% of runs.
    rng = np.random.default_rng(0)
    f, n, alpha, runs = 0.93, 44, 0.01, 4000
    k = rng.binomial(n, f, size=runs)
    spec = LandscapeSpec()
    misses = sum(strict_basin("t", 1.0, 1.0, [1.0] * kk + [0.0] * (n - kk), spec, alpha).lower_bound > f for kk in k)
    assert misses / runs <= alpha + 3 * math.sqrt(alpha / runs)


@pytest.mark.parametrize(
    "section, field",
    [
        ("{grid: [0.02, 0.01]}", "landscape"),
        ("{grid: [0.0, 0.01]}", "landscape"),
        ("{grid: []}", "landscape.grid"),
        ("{tolerence: 0.1}", "landscape.tolerence"),
        ("{strict_fraction: 1.0}", "landscape.strict_fraction"),
    ],
)
def test_bad_landscape_section_names_the_field(section, field):
    text = POLICY.split("landscape:")[0] + f"landscape: {section}\n"
    with pytest.raises(PolicyError, match=f"field '{field}"):
        parse_policy(text, origin="p.yaml")


def test_sft_without_candidate_and_embedding_space_are_refused(loaded, tiny_tokenizer):
    tasks = build_tasks(loaded)
    with pytest.raises(AuditorError, match="--candidate"):
        run_landscape(make_model(), tiny_tokenizer, tasks, loaded.policy, families=["sft"])
    emb = parse_policy(POLICY.replace("{sigma: 0.01}", "{sigma: 0.01, space: input-embeddings}"))
    with pytest.raises(AuditorError, match="input-embeddings"):
        run_landscape(make_model(), tiny_tokenizer, tasks, emb.policy, families=["random"])
