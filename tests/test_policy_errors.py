"""Every problem of a policy in one report, one line each, with a suggestion on a near miss."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.errors import PolicyError, TaskError
from auditor.policy.schema import parse_policy
from auditor.tasks import build_tasks

HEAD = "schema_version: 1\nseed: 1\nperturbation: {sigma: 0.1}\n"
BAD = """\
schema_version: 1
seed: 1
perturbation: {sigma: -0.01, sigmaa: 2}
sampling: {design: batchd, bond: betting}
tasks:
  - {name: caps, source: "builtin:capitals", oracle: {type: contain}}
  - {name: f, source: {format: jsonl, pth: x.jsonl}, oracle: {type: numeric, tolerence: 1}}
  - {name: l, source: {format: lm-eval, tsk: arc_easy}}
"""


def test_all_problems_one_line_each_with_suggestions() -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(BAD, origin="p.yaml")
    lines = str(exc.value).splitlines()
    assert all(line.startswith("p.yaml: field '") for line in lines)
    expected = [
        "field 'perturbation.sigma': sigma must be a positive number, got -0.01",
        "field 'perturbation.sigmaa': unknown field; did you mean 'sigma'?",
        "field 'sampling.design': Input should be 'bernoulli', 'batched' or 'antithetic'; did you mean 'batched'?",
        "field 'sampling.bond': unknown field; did you mean 'bound'?",
        "field 'tasks[0].oracle': unknown type 'contain'",
        "field 'tasks[1].source.path': Field required",
        "field 'tasks[1].source.pth': unknown field; did you mean 'path'?",
        "field 'tasks[1].oracle.tolerence': unknown field; did you mean 'tolerance'?",
        "field 'tasks[2].source.task': Field required",
        "field 'tasks[2].source.tsk': unknown field; did you mean 'task'?",
    ]
    assert len(lines) == len(expected)
    for line, want in zip(lines, expected, strict=True):
        assert want in line, (line, want)
    assert lines[4].endswith("did you mean 'contains'?")


def test_unknown_field_without_near_miss_lists_the_fields() -> None:
    text = (
        HEAD.replace("sigma: 0.1", "sigma: 0.1, zzz: 1")
        + "tasks: [{name: a, source: 'builtin:choice', oracle: {type: choice}}]\n"
    )
    with pytest.raises(
        PolicyError, match=r"'perturbation.zzz': unknown field \(fields here: sigma, space, include, exclude, scale\)"
    ):
        parse_policy(text, origin="p.yaml")


def test_bad_source_shape_reports_one_line() -> None:
    text = HEAD + "tasks: [{name: a, source: 3, oracle: {type: choice}}]\n"
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, origin="p.yaml")
    assert str(exc.value).count("\n") == 0 and "tasks[0].source" in str(exc.value)


def _policy(tmp_path: Path, tasks: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(f"schema_version: 1\nseed: 1\nperturbation: {{sigma: 0.1}}\ntasks:\n{tasks}")
    return path


def test_task_problems_gathered_with_the_builtin_near_miss(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("question,solution\nq,a\n")
    (tmp_path / "d.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    path = _policy(
        tmp_path,
        "  - {name: a, source: 'builtin:capital', oracle: {type: contains}}\n"
        "  - {name: b, source: {format: csv, path: d.csv}, oracle: {type: exact}}\n"
        "  - {name: c, source: {format: jsonl, path: d.jsonl}, oracle: {type: exact}}\n"
        "  - {name: d, source: 'builtin:zzzz', oracle: {type: contains}}\n",
    )
    from auditor.policy.schema import load_policy

    with pytest.raises(TaskError) as exc:
        build_tasks(load_policy(path))
    lines = str(exc.value).splitlines()
    assert len(lines) == 4
    assert lines[0] == (
        f"{path.resolve()}: field 'tasks[0].source': unknown built-in task 'builtin:capital'; "
        "did you mean 'builtin:capitals'? (built-ins: arithmetic, capitals, choice, refusal)"
    )
    assert "d.csv: no column 'prompt' (prompt); columns are: question, solution" in lines[1]
    assert "`fields: {prompt: question}`" in lines[1]
    assert "d.jsonl: line 1: missing field 'prompt' (prompt); the row has: question, answer" in lines[2]
    assert "`fields: {prompt: question}`" in lines[2]
    assert "'builtin:zzzz'" in lines[3] and "did you mean" not in lines[3]


def test_scorer_signature_is_checked_by_validate(tmp_path: Path) -> None:
    (tmp_path / "s.py").write_text("def one_arg(answer):\n    return 1\n\ndef ok(answer, example):\n    return 1\n")
    path = _policy(
        tmp_path, "  - {name: a, source: 'builtin:capitals', oracle: {type: python, scorer: 's.py:one_arg'}}\n"
    )
    from auditor.cli import main

    assert main(["validate", str(path)]) == 2
    path.write_text(path.read_text().replace("one_arg", "ok"))
    assert main(["validate", str(path)]) == 0


def test_validate_smoke_scores_one_example_per_task(tmp_path: Path, tiny_model_dir: Path, capfd) -> None:
    from auditor.cli import main

    (tmp_path / "s.py").write_text("def ok(answer, example):\n    return True\n")
    path = _policy(
        tmp_path,
        "  - {name: a, source: 'builtin:capitals', oracle: {type: python, scorer: 's.py:ok'}, max_new_tokens: 2}\n"
        "  - {name: b, source: 'builtin:choice', oracle: {type: choice}}\n",
    )
    path.write_text(path.read_text().replace("seed: 1", f"seed: 1\nmodel: {tiny_model_dir}"))
    assert main(["validate", str(path), "--smoke"]) == 0
    out, err = capfd.readouterr()
    assert "smoke: a: example 0 scored 1" in out and "smoke: b: example 0 scored" in out
    assert err == ""  # clean: no library warnings or loading bars
