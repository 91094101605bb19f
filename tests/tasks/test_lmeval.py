"""lm-eval tasks on the tiny model: offline, prompts built once, the live (perturbed) weights scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.errors import TaskError
from auditor.policy.tasks import TaskSpec
from auditor.tasks import build_task
from auditor.tasks.base import Example
from auditor.tasks.choice import ChoiceTask
from auditor.tasks.prompting import PromptFormat

pytest.importorskip("lm_eval")

ROWS = [
    {"question": "Which is a fruit?", "choices": ["apple", "stone", "cloud"], "answer": 0},
    {"question": "What is 3 + 4?", "choices": ["12", "7"], "answer": 1},
    {"question": "Which is the capital of France?", "choices": ["Paris", "Berlin", "Rome", "Cairo"], "answer": 0},
    {"question": "Which animal says moo?", "choices": ["dog", "cow"], "answer": 1},
    {"question": "Which is a colour?", "choices": ["red", "fast"], "answer": 0},
]
CHOICE_YAML = """\
task: tiny_choice
dataset_path: json
output_type: multiple_choice
validation_split: validation
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{answer}}"
doc_to_choice: "{{choices}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""
GEN_YAML = """\
task: tiny_gen
dataset_path: json
output_type: generate_until
validation_split: validation
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{choices[answer]}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 4, do_sample: false}
metric_list:
  - metric: exact_match
"""


@pytest.fixture
def local_tasks(tmp_path: Path) -> Path:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_choice.yaml").write_text(CHOICE_YAML)
    (tmp_path / "tasks" / "tiny_gen.yaml").write_text(GEN_YAML)
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return tmp_path


def _spec(task: str, **source: object) -> TaskSpec:
    return TaskSpec.model_validate(
        {
            "name": task,
            "source": {"format": "lm-eval", "task": task, "include_path": "tasks", **source},
            **({"oracle": {"type": "lm-eval", "metric": "exact_match"}} if task == "tiny_gen" else {}),
        }
    )


def test_choice_task_matches_the_builtin_choice_scorer(local_tasks, tiny_model, tiny_tokenizer) -> None:
    task = build_task(_spec("tiny_choice", data_files={"validation": "data.jsonl"}, limit=4), local_tasks)
    assert len(task.examples) == 4 and task.info["source"] == "lm-eval:tiny_choice"
    assert task.examples[0].prompt == "Question: Which is a fruit?\nAnswer:"
    assert task.examples[1].choices == (" 12", " 7") and task.examples[1].answer == " 7"
    outcomes = task.evaluate(tiny_model, tiny_tokenizer, [0, 1, 2, 3], batch_size=2)
    assert outcomes.dtype == np.uint8 and set(outcomes.tolist()) <= {0, 1}
    # the same documents through the built-in log-likelihood scorer give the same 0/1 per document
    examples = [
        Example(
            prompt=f"Question: {r['question']}\nAnswer:", answer=r["choices"][r["answer"]], choices=tuple(r["choices"])
        )
        for r in ROWS[:4]
    ]
    ours = ChoiceTask("same", examples, PromptFormat(template="{prompt}", chat=False))
    np.testing.assert_array_equal(outcomes, ours.evaluate(tiny_model, tiny_tokenizer, [0, 1, 2, 3], batch_size=2))
    # order and subsets follow the indices given
    np.testing.assert_array_equal(task.evaluate(tiny_model, tiny_tokenizer, [3, 0], 2), outcomes[[3, 0]])


def test_the_harness_sees_the_perturbed_weights_and_caches_nothing(local_tasks, tiny_model, tiny_tokenizer) -> None:
    task = build_task(_spec("tiny_choice", data_files={"validation": "data.jsonl"}), local_tasks)
    lm = task._harness_lm(tiny_model, tiny_tokenizer, 4)  # type: ignore[attr-defined]
    request = task._requests[2]  # type: ignore[attr-defined]
    before = [ll for ll, _ in lm.loglikelihood(request, disable_tqdm=True)]
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    after = [ll for ll, _ in lm.loglikelihood(request, disable_tqdm=True)]
    assert not np.allclose(before, after)  # same request text, new weights: a fresh answer, not a cached one
    assert type(lm).__name__ == "HFLM"  # not wrapped in lm-eval's CachingLM


def test_generation_task_scores_exact_match(local_tasks, tiny_model, tiny_tokenizer) -> None:
    task = build_task(_spec("tiny_gen", data_files={"validation": "data.jsonl"}), local_tasks)
    first = task.evaluate(tiny_model, tiny_tokenizer, range(5), batch_size=2)
    again = task.evaluate(tiny_model, tiny_tokenizer, range(5), batch_size=2)
    assert first.shape == (5,) and set(first.tolist()) <= {0, 1}
    np.testing.assert_array_equal(first, again)  # greedy and fixed batches: a draw replays exactly


def test_errors_name_the_task_and_the_near_miss(local_tasks, tiny_model, tiny_tokenizer) -> None:
    with pytest.raises(TaskError, match=r"'tiny_choise' is not a task .*did you mean tiny_choice"):
        build_task(_spec("tiny_choise"), local_tasks)
    with pytest.raises(TaskError, match=r"data_files.validation: .*missing.jsonl not found"):
        build_task(_spec("tiny_choice", data_files={"validation": "missing.jsonl"}), local_tasks)
    spec = TaskSpec.model_validate(
        {
            "name": "t",
            "source": {
                "format": "lm-eval",
                "task": "tiny_choice",
                "include_path": "tasks",
                "data_files": {"validation": "data.jsonl"},
            },
            "oracle": {"type": "lm-eval", "metric": "f1"},
        }
    )
    task = build_task(spec, local_tasks)
    with pytest.raises(TaskError, match=r"oracle.metric 'f1' is not one of the task's metrics \(acc, acc_norm\)"):
        task.evaluate(tiny_model, tiny_tokenizer, [0], 1)


def test_lm_eval_oracle_only_with_lm_eval_source() -> None:
    with pytest.raises(ValueError, match="oracle: type lm-eval goes with source"):
        TaskSpec.model_validate({"name": "t", "source": "builtin:capitals", "oracle": {"type": "lm-eval"}})
    with pytest.raises(ValueError, match="template: not used by lm-eval tasks"):
        TaskSpec.model_validate({"name": "t", "source": {"format": "lm-eval", "task": "x"}, "template": "Q: {prompt}"})


@pytest.mark.slow
def test_arc_easy_from_local_files(shared_data, tiny_model, tiny_tokenizer) -> None:
    """The registered arc_easy config, its dataset read from ../shared/data/arc: no hub call."""
    spec = TaskSpec.model_validate(
        {
            "name": "arc",
            "source": {
                "format": "lm-eval",
                "task": "arc_easy",
                "limit": 3,
                "data_files": {"validation": "arc/arc-easy-validation.jsonl"},
            },
        }
    )
    task = build_task(spec, shared_data)
    assert len(task.examples) == 3 and len(task.examples[0].choices or ()) == 4
    assert set(task.evaluate(tiny_model, tiny_tokenizer, [0, 1, 2], 3).tolist()) <= {0, 1}
    # without local files the hub is not reached: a clear error that says what to set (same cached index)
    online = TaskSpec.model_validate({"name": "arc", "source": {"format": "lm-eval", "task": "arc_easy", "limit": 3}})
    with pytest.raises(TaskError, match=r"could not load 'arc_easy' .*point source.data_files at local copies"):
        build_task(online, shared_data)


def test_certify_end_to_end_with_an_lm_eval_task(local_tasks, tiny_model_dir) -> None:
    import json as _json

    from auditor.cli import main

    policy = local_tasks / "policy.yaml"
    policy.write_text(
        f"schema_version: 1\nmodel: {tiny_model_dir}\nseed: 5\nalpha: 0.1\n"
        "perturbation: {sigma: 0.01}\nsampling: {draws: 3, batch_size: 2}\n"
        "tasks:\n"
        "  - name: tiny\n"
        "    source: {format: lm-eval, task: tiny_choice, include_path: tasks, data_files: {validation: data.jsonl}}\n"
    )
    out = local_tasks / "run"
    assert main(["certify", str(policy), "--out", str(out), "--quiet"]) in (0, 1)
    cert = _json.loads((out / "certificate.json").read_text())
    (task,) = cert["tasks"]
    assert task["draws"] == 3 and task["n_examples"] == 5
    assert task["description"]["source"] == "lm-eval:tiny_choice"
    assert len(task["description"]["data_sha256"]["validation"]) == 64
