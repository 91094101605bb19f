from pathlib import Path

import pytest

from auditor.errors import PolicyError
from auditor.policy.schema import DEFAULT_POLICY, load_policy, parse_policy

MINIMAL = """
schema_version: 1
seed: 1
perturbation: {sigma: 0.01}
tasks:
  - {name: caps, source: "builtin:capitals", oracle: {type: contains}}
"""


def test_default_policy_is_valid():
    loaded = load_policy()
    assert loaded.path == DEFAULT_POLICY.resolve()
    assert len(loaded.sha256) == 64
    assert loaded.policy.sampling.design == "batched"


def test_minimal_policy_gets_defaults():
    p = parse_policy(MINIMAL).policy
    assert p.alpha == 0.01 and p.sampling.bound == "star-bets" and p.perturbation.include == ["*"]
    assert p.tasks[0].require.min_p_lower is None


@pytest.mark.parametrize(
    "edit, field",
    [
        (("sigma: 0.01", "sigma: -1"), "perturbation.sigma"),
        (("sigma: 0.01", "sigma: 0.01, sigmaa: 2"), "perturbation.sigmaa"),
        (("seed: 1", "seed: one"), "seed"),
        (("type: contains", "type: telepathy"), "tasks[0].oracle"),
        (("schema_version: 1", "schema_version: 9"), "schema_version"),
    ],
)
def test_bad_fields_are_named_in_one_line(edit, field):
    with pytest.raises(PolicyError) as exc:
        parse_policy(MINIMAL.replace(*edit), origin="p.yaml")
    msg = str(exc.value)
    assert msg.startswith("p.yaml: field ") and field in msg and "\n" not in msg


def test_clopper_pearson_is_refused_for_batched_designs():
    text = MINIMAL + "sampling: {design: batched, bound: clopper-pearson}\n"
    with pytest.raises(PolicyError, match="clopper-pearson is exact only for 0/1"):
        parse_policy(text)
    parse_policy(MINIMAL + "sampling: {design: bernoulli, bound: clopper-pearson}\n")
    parse_policy(MINIMAL + "sampling: {design: batched, bound: clopper-pearson, randomised_rounding: true}\n")


def test_sequential_needs_an_anytime_valid_bound():
    with pytest.raises(PolicyError, match="anytime-valid"):
        parse_policy(MINIMAL + "sampling: {bound: hoeffding, max_draws: 100}\n")
    with pytest.raises(PolicyError, match="anytime-valid"):
        parse_policy(MINIMAL + "sampling: {bound: star-bets, max_draws: 100}\n")
    # a sequential policy that names no bound gets the confidence sequence, not the fixed-n default
    assert parse_policy(MINIMAL + "sampling: {max_draws: 100}\n").policy.sampling.bound == "betting"


def test_duplicate_task_names_and_yaml_errors(tmp_path: Path):
    dup = MINIMAL + '  - {name: caps, source: "builtin:capitals", oracle: {type: exact}}\n'
    with pytest.raises(PolicyError, match="duplicate task names"):
        parse_policy(dup)
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: [1\n")
    with pytest.raises(PolicyError, match=r"bad.yaml: line \d+ not valid YAML"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="policy file not found"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(PolicyError, match="mapping"):
        load_policy(tmp_path / "list.yaml")
