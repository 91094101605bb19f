"""Built-in tasks: fixed content, sensible defaults, and errors for unknown names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from auditor.errors import TaskError
from auditor.policy.tasks import TaskSpec
from auditor.tasks import BUILTINS, ChoiceTask, GenerationTask, build_task
from auditor.tasks.oracles import score_contains

ORACLES = {"capitals": "contains", "arithmetic": "numeric", "choice": "choice", "refusal": "refusal"}


def make(name: str, **kw):
    return build_task(TaskSpec(name=name, source=f"builtin:{name}", oracle={"type": ORACLES[name]}, **kw), Path("."))


@pytest.mark.parametrize(("name", "size"), [("capitals", 24), ("arithmetic", 24), ("choice", 24), ("refusal", 16)])
def test_builtins_are_deterministic(name, size):
    a, b = make(name), make(name)
    assert len(a.examples) == size
    assert a.examples == b.examples
    assert a.describe() == b.describe()
    assert a.describe()["examples_sha256"] == b.describe()["examples_sha256"]
    assert len({e.prompt for e in a.examples}) == size  # no repeated item


def test_known_builtins():
    assert set(BUILTINS) == set(ORACLES)


def test_capitals_reference_their_own_answers():
    task = make("capitals")
    assert isinstance(task, GenerationTask)
    for ex in task.examples:
        assert ex.answer and ex.answer not in ex.prompt
        assert score_contains(f"The capital is {ex.answer}.", ex) == 1
    france = next(e for e in task.examples if "France" in e.prompt)
    assert france.answer == "Paris"


def test_arithmetic_answers_are_the_sums():
    for ex in make("arithmetic").examples:
        a, b = map(int, re.findall(r"(\d+) \+ (\d+) =$", ex.prompt)[0])
        assert ex.answer == str(a + b)


def test_choice_items_have_their_answer_among_the_choices():
    task = make("choice")
    assert isinstance(task, ChoiceTask)
    for ex, target in zip(task.examples, task.targets, strict=True):
        assert ex.choices and len(ex.choices) == 4
        assert ex.choices[target] == ex.answer
    # the correct choice is not always in the same slot
    assert len(set(task.targets)) == 4


def test_refusal_items_have_no_reference():
    assert all(e.answer is None for e in make("refusal").examples)


def test_builtin_defaults_apply_unless_the_policy_sets_the_field():
    assert make("capitals").max_new_tokens == 8
    assert make("capitals", max_new_tokens=3).max_new_tokens == 3
    assert make("capitals", max_new_tokens=16).max_new_tokens == 16  # equal to the schema default, still explicit
    assert make("arithmetic").format.chat is False
    assert make("arithmetic", chat=True).format.chat is True
    assert make("capitals").format.chat is True


def test_limit_keeps_the_first_examples():
    assert make("capitals", limit=5).examples == make("capitals").examples[:5]


def test_describe_is_ready_for_the_certificate():
    info = make("capitals").describe()
    assert info["source"] == "builtin:capitals" and info["oracle"] == "contains"
    assert info["n_examples"] == 24 and info["max_new_tokens"] == 8
    info = make("choice").describe()
    assert info["oracle"] == "choice" and "max_new_tokens" not in info


def test_unknown_builtin_lists_the_known_ones():
    with pytest.raises(TaskError) as err:
        build_task(TaskSpec(name="t", source="builtin:nope", oracle={"type": "exact"}), Path("."))
    msg = str(err.value)
    assert "builtin:nope" in msg and all(name in msg for name in BUILTINS)


def test_a_source_that_is_neither_builtin_nor_file_is_an_error():
    with pytest.raises(TaskError, match="task 't'.*must be 'builtin:NAME'"):
        build_task(TaskSpec(name="t", source="capitals", oracle={"type": "exact"}), Path("."))


def test_template_must_hold_the_prompt_placeholder():
    with pytest.raises(TaskError, match=r"task 't': template must contain"):
        build_task(
            TaskSpec(name="t", source="builtin:capitals", oracle={"type": "contains"}, template="Q: {question}"),
            Path("."),
        )


def test_choice_oracle_on_a_builtin_without_choices_names_the_task():
    with pytest.raises(TaskError, match="task 'caps': oracle 'choice' needs choices; example 0"):
        build_task(TaskSpec(name="caps", source="builtin:capitals", oracle={"type": "choice"}), Path("."))


def test_arithmetic_scores_only_the_first_line(monkeypatch):
    from auditor.tasks import generate as generate_mod

    task = make("arithmetic")
    assert task.first_line and task.describe()["decoding"] == "greedy, first line"
    right = task.examples[0].answer
    chatter = f" {right}\n\nThe sum of 1 and 2 is 3"
    monkeypatch.setattr(generate_mod, "generate_answers", lambda *a, **k: [chatter])
    monkeypatch.setattr(task, "encoded", lambda tokenizer: None)
    assert task.answers(None, None, [0], 1) == [right]
    assert task.evaluate(None, None, [0], 1).tolist() == [1]
    assert make("capitals").first_line is False
