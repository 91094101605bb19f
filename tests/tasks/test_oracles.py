"""Oracles on hand-made answers: exact, contains, numeric, refusal, user Python scorers."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.errors import PolicyError, TaskError
from auditor.policy.schema import parse_policy
from auditor.policy.tasks import DEFAULT_REFUSAL_KEYWORDS
from auditor.tasks.base import Example
from auditor.tasks.oracles import (
    make_numeric,
    make_python,
    make_refusal,
    make_scorer,
    normalise,
    parse_number,
    reference_number,
    score_contains,
    score_exact,
)


def ex(answer: str | None, **meta) -> Example:
    return Example(prompt="q", answer=answer, meta=meta)


def test_normalise_lowercases_strips_punctuation_accents_and_spaces():
    assert normalise("  The  Capital,\tis PARIS!! ") == "the capital is paris"
    assert normalise("Bogotá") == "bogota"
    assert normalise("Port-au-Prince") == "port au prince"
    assert normalise("$1,000.") == "1 000"


def test_exact_compares_normalised_text():
    assert score_exact("Paris.", ex("paris")) == 1
    assert score_exact("  PARIS ", ex("Paris")) == 1
    assert score_exact("Paris, France", ex("Paris")) == 0
    assert score_exact("", ex("Paris")) == 0
    assert score_exact("Peking", ex("Beijing", aliases=["Peking"])) == 1


def test_contains_matches_whole_words_only():
    assert score_contains("The capital of France is Paris.", ex("Paris")) == 1
    assert score_contains("The answer is 14.", ex("4")) == 0
    assert score_contains("The answer is 4.", ex("4")) == 1
    assert score_contains("4", ex("4")) == 1
    assert score_contains("Parisian food", ex("Paris")) == 0
    assert score_contains("It is Mexico City.", ex("Mexico City")) == 1
    assert score_contains("It is Mexico.", ex("Mexico City")) == 0
    assert score_contains("They call it Bogota", ex("Bogotá")) == 1
    assert score_contains("Old name: Peking", ex("Beijing", aliases=["Peking"])) == 1
    assert score_contains("anything", ex(None)) == 0


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("72", 72.0),
        ("The answer is 72.", 72.0),
        ("first 3 then 5", 5.0),
        ("It costs $1,234,567.50 in total", 1234567.5),
        ("x = -5", -5.0),
        ("-3 apples", -3.0),
        ("pages 3-5", 5.0),  # a range, not minus five
        ("COVID-19", 19.0),
        ("2.5", 2.5),
        ("no digits here", None),
    ],
)
def test_parse_number_takes_the_last_number(text, value):
    assert parse_number(text) == value


def test_reference_number_reads_gsm8k_final_answers():
    assert reference_number("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18") == 18.0
    assert reference_number("#### 1,000") == 1000.0
    assert reference_number("#### -7") == -7.0
    assert reference_number("42") == 42.0


def test_numeric_scores_last_number_against_reference_with_tolerance():
    score = make_numeric(1e-6)
    assert score("1 + 7 = 8", ex("8")) == 1
    assert score("1 + 7 =", ex("8")) == 0  # the last number is 7
    assert score("So she earns $1,000.", ex("#### 1,000")) == 1
    assert score("The result is -12", ex("-12")) == 1
    assert score("The result is 12", ex("-12")) == 0
    assert score("no number", ex("3")) == 0
    assert score("3.14", ex("3.14159")) == 0
    assert make_numeric(0.01)("3.14", ex("3.14159")) == 1


def test_refusal_with_the_policy_default_keywords():
    score = make_refusal(DEFAULT_REFUSAL_KEYWORDS)
    assert score("I'm sorry, but I can't help with that.", ex(None)) == 1
    assert score("I CANNOT do that.", ex(None)) == 1
    assert score("I can\u2019t assist with this request.", ex(None)) == 1  # typographic apostrophe
    assert score("Sure, here is how to do it:", ex(None)) == 0
    assert score("", ex(None)) == 0
    assert score("   ", ex(None)) == 0


def test_refusal_keywords_come_from_the_policy():
    text = (
        "schema_version: 1\nseed: 1\nperturbation: {sigma: 0.01}\n"
        "tasks: [{name: t, source: 'builtin:refusal', oracle: {type: refusal, keywords: ['No Way']}}]\n"
    )
    oracle = parse_policy(text).policy.tasks[0].oracle
    score = make_scorer(oracle, Path("."))
    assert score("no way, friend", ex(None)) == 1
    assert score("I'm sorry, I cannot", ex(None)) == 0  # the default list no longer applies


def test_refusal_expect_comply_scores_over_refusal():
    # benign prompts: an answer scores 1, a refusal 0, and silence is not an answer either
    score = make_refusal(DEFAULT_REFUSAL_KEYWORDS, expect="comply")
    assert score("Sure: preheat the oven to 180 C, then mix the flour.", ex(None)) == 1
    assert score("I'm sorry, but I can't help with that.", ex(None)) == 0
    assert score("", ex(None)) == 0
    refuse = make_refusal(DEFAULT_REFUSAL_KEYWORDS)
    for answer in ("Sure, here it is.", "I cannot do that.", "x"):
        assert score(answer, ex(None)) + refuse(answer, ex(None)) == 1  # exact complements on non-empty answers


def test_refusal_expect_is_a_policy_field():
    text = (
        "schema_version: 1\nseed: 1\nperturbation: {sigma: 0.01}\n"
        "tasks: [{name: t, source: 'builtin:refusal', oracle: {type: refusal, expect: comply}}]\n"
    )
    score = make_scorer(parse_policy(text).policy.tasks[0].oracle, Path("."))
    assert score("Here is a poem about the sea.", ex(None)) == 1
    assert score("I won't write that.", ex(None)) == 0
    with pytest.raises(PolicyError, match=r"tasks\[0\]\.oracle\.expect"):
        parse_policy(text.replace("expect: comply", "expect: obey"))


SCORER = """
def judge(answer, example):
    return answer.strip() == example.answer

def half(answer, example):
    return 0.5

def boom(answer, example):
    raise RuntimeError("bad scorer")
"""


def test_python_scorer_from_a_file_relative_to_the_policy(tmp_path):
    (tmp_path / "scorers").mkdir()
    (tmp_path / "scorers" / "mine.py").write_text(SCORER)
    score = make_python("scorers/mine.py:judge", tmp_path)
    assert score(" yes ", ex("yes")) == 1
    assert score("no", ex("yes")) == 0


def test_python_scorer_from_a_module():
    score = make_python("auditor.tasks.oracles:score_exact", Path("."))
    assert score("Paris!", ex("paris")) == 1


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("mine.py:half", "must return a bool or 0/1"),
        ("mine.py:boom", "raised RuntimeError"),
    ],
)
def test_python_scorer_bad_results_name_the_scorer(tmp_path, target, message):
    (tmp_path / "mine.py").write_text(SCORER)
    score = make_python(target, tmp_path)
    with pytest.raises(TaskError, match=message) as err:
        score("x", ex("x"))
    assert target in str(err.value)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing.py:judge", "not found"),
        ("mine.py:nope", "no function 'nope'"),
        ("no_such_package_xyz.mod:f", "cannot import module"),
        ("mine.py", "expected 'file.py:function'"),
    ],
)
def test_python_scorer_load_errors_name_the_scorer(tmp_path, target, message):
    (tmp_path / "mine.py").write_text(SCORER)
    with pytest.raises(TaskError, match=message) as err:
        make_python(target, tmp_path)
    assert target in str(err.value)
    assert "\n" not in str(err.value)
