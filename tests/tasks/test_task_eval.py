"""Evaluation on the tiny random model: determinism, batching layouts, choice scoring, scorers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.policy.tasks import DataSource, TaskSpec
from auditor.tasks import ChoiceTask, GenerationTask, build_task
from auditor.tasks import choice as choice_mod
from auditor.tasks import generate as generate_mod
from auditor.tasks.base import Example
from auditor.tasks.oracles import score_contains
from auditor.tasks.prompting import PromptFormat


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Single-threaded: on a shared two-core machine, OpenMP threads waiting on each other turn
    millisecond forwards into seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def lively_model(tiny_model):
    """The tiny model with larger weights, so different prompts get different greedy answers."""
    model = tiny_model
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10)
    return model


def generation_task(n: int = 10, chat: bool = True, max_new_tokens: int = 6) -> GenerationTask:
    # different lengths, so batches need padding; a shared start, so the prefix cache is used
    examples = [Example(prompt=f"What is the capital of {'France ' * (i % 4)}{i}?", answer="Paris") for i in range(n)]
    return GenerationTask("gen", examples, score_contains, PromptFormat(chat=chat), max_new_tokens)


def reference_answer(model, tokenizer, ids: list[int], max_new_tokens: int) -> list[int]:
    """Unbatched, unpadded greedy decoding without a cache: the slow ground truth."""
    seq = list(ids)
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, -1]
        nxt = int(logits.argmax())
        if nxt == tokenizer.eos_token_id:
            break
        seq.append(nxt)
    return seq[len(ids) :]


def test_generation_is_deterministic_for_a_fixed_layout(lively_model, tiny_tokenizer):
    task = generation_task()
    idx = [3, 1, 4, 1, 5, 9, 2, 6]
    first = task.answers(lively_model, tiny_tokenizer, idx, 3)
    assert task.answers(lively_model, tiny_tokenizer, idx, 3) == first
    assert len(set(first)) > 2, "the test model should not answer every prompt alike"
    scores = task.evaluate(lively_model, tiny_tokenizer, idx, 3)
    assert scores.dtype == np.uint8 and scores.shape == (len(idx),)
    assert np.array_equal(scores, task.evaluate(lively_model, tiny_tokenizer, idx, 3))


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("shared_prefix", [True, False])
def test_batched_generation_matches_unbatched_greedy(lively_model, tiny_tokenizer, monkeypatch, chat, shared_prefix):
    task = generation_task(chat=chat)
    if not shared_prefix:
        monkeypatch.setattr(generate_mod, "prefix_cache", lambda model, enc: None)
    else:
        assert task.encoded(tiny_tokenizer).prefix_len > 0
    idx = list(range(len(task.examples)))
    got = task.answers(lively_model, tiny_tokenizer, idx, 4)
    enc = task.encoded(tiny_tokenizer)
    for i in idx:
        want = reference_answer(lively_model, tiny_tokenizer, enc.ids[i], task.max_new_tokens)
        assert got[i] == tiny_tokenizer.decode(want, skip_special_tokens=True).strip()


def test_order_of_indices_is_kept(lively_model, tiny_tokenizer):
    task = generation_task()
    idx = list(range(len(task.examples)))
    forward = task.answers(lively_model, tiny_tokenizer, idx, 1)
    assert task.answers(lively_model, tiny_tokenizer, idx[::-1], 1) == forward[::-1]
    assert task.evaluate(lively_model, tiny_tokenizer, [], 4).shape == (0,)


def test_tokenizer_padding_side_does_not_matter(lively_model, tiny_tokenizer):
    task = generation_task()
    idx = list(range(len(task.examples)))
    side = tiny_tokenizer.padding_side
    try:
        tiny_tokenizer.padding_side = "right"
        right = task.answers(lively_model, tiny_tokenizer, idx, 4)
        tiny_tokenizer.padding_side = "left"
        left = task.answers(lively_model, tiny_tokenizer, idx, 4)
    finally:
        tiny_tokenizer.padding_side = side
    assert right == left


def test_model_sampling_settings_do_not_leak_into_greedy_decoding(lively_model, tiny_tokenizer, caplog):
    task = generation_task()
    idx = list(range(len(task.examples)))
    greedy = task.answers(lively_model, tiny_tokenizer, idx, 4)
    cfg = lively_model.generation_config
    cfg.do_sample, cfg.temperature, cfg.top_p, cfg.repetition_penalty = True, 0.7, 0.9, 1.5
    with caplog.at_level(logging.WARNING):
        torch.manual_seed(123)
        assert task.answers(lively_model, tiny_tokenizer, idx, 4) == greedy
    assert not [r for r in caplog.records if "generation" in r.getMessage().lower()]


def test_prompt_format_uses_the_chat_template_and_system(tiny_tokenizer):
    ex = Example(prompt="hi {x}")
    text, special = PromptFormat(template="Q: {prompt}", chat=True, system="be brief").text(ex, tiny_tokenizer)
    assert text == "<|system|>be brief\n<|user|>Q: hi {x}\n<|assistant|>" and special is False
    text, special = PromptFormat(template="Q: {prompt}\nA:", chat=False).text(ex, tiny_tokenizer)
    assert text == "Q: hi {x}\nA:" and special is True


# ---------------------------------------------------------------- choice


CHOICE_EXAMPLES = [
    Example(prompt="Which is a fruit?", answer="apple", choices=("stone", "apple", "the lazy dog", "fox")),
    Example(prompt="What is 3 + 4?", answer="7", choices=("7", "21", "12")),
    Example(prompt="Question: the capital of France", answer="Paris", choices=("Paris", "brown fox")),
    Example(prompt="Pick", answer="b", choices=("a", "b")),
    Example(prompt="I'm sorry, I cannot help with", answer="that request", choices=("that request", "quick")),
]


def reference_loglik(model, tokenizer, fmt: PromptFormat, ex: Example) -> list[float]:
    """Each choice scored on its own full, unpadded sequence."""
    text, special = fmt.text(ex, tokenizer)
    ctx = tokenizer(text, add_special_tokens=special)["input_ids"]
    out = []
    for choice in ex.choices or ():
        cont = tokenizer(choice if text[-1].isspace() else " " + choice, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = model(torch.tensor([ctx + cont])).logits[0].log_softmax(-1)
        out.append(sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont)))
    return out


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("batch_size", [1, 2, 5])
@pytest.mark.parametrize("path", ["cached", "plain"])
def test_choice_matches_a_per_example_reference(tiny_model, tiny_tokenizer, monkeypatch, chat, batch_size, path):
    if path == "plain":  # a model that cannot take explicit positions gets full right-padded rows
        monkeypatch.setattr(choice_mod, "cache_kwarg", lambda model: None)
    fmt = PromptFormat(chat=chat)
    task = ChoiceTask("c", CHOICE_EXAMPLES, fmt)
    idx = [4, 0, 2, 1, 3]
    got = task.loglikelihoods(tiny_model, tiny_tokenizer, idx, batch_size)
    for i, scores in zip(idx, got, strict=True):
        want = reference_loglik(tiny_model, tiny_tokenizer, fmt, CHOICE_EXAMPLES[i])
        np.testing.assert_allclose(scores, want, rtol=0, atol=2e-4)
    picks = task.evaluate(tiny_model, tiny_tokenizer, idx, batch_size)
    expected = [
        int(np.argmax(reference_loglik(tiny_model, tiny_tokenizer, fmt, CHOICE_EXAMPLES[i])) == task.targets[i])
        for i in idx
    ]
    assert picks.tolist() == expected


def test_choice_with_single_token_choices_only(tiny_model, tiny_tokenizer):
    examples = [Example(prompt=f"What is {k} + 1?", answer=str(k + 1), choices=tuple("0123456789")) for k in range(5)]
    fmt = PromptFormat(chat=False)
    task = ChoiceTask("digits", examples, fmt)
    got = task.loglikelihoods(tiny_model, tiny_tokenizer, range(5), 2)
    for ex, scores in zip(examples, got, strict=True):
        np.testing.assert_allclose(scores, reference_loglik(tiny_model, tiny_tokenizer, fmt, ex), atol=2e-4)


def test_choice_is_deterministic_and_builtin_works(tiny_model, tiny_tokenizer):
    task = build_task(TaskSpec(name="c", source="builtin:choice", oracle={"type": "choice"}), Path("."))
    idx = list(range(len(task.examples)))
    a = task.evaluate(tiny_model, tiny_tokenizer, idx, 7)
    assert a.dtype == np.uint8 and np.array_equal(a, task.evaluate(tiny_model, tiny_tokenizer, idx, 7))


# ---------------------------------------------------------------- user scorer

SCORER = """
from pathlib import Path

def judge(answer, example):
    with open(Path(__file__).with_suffix(".calls"), "a") as fh:
        fh.write(example.prompt + "\\n")
    return isinstance(answer, str)
"""


def test_python_scorer_file_is_loaded_and_called(tmp_path, lively_model, tiny_tokenizer):
    (tmp_path / "judge.py").write_text(SCORER)
    (tmp_path / "d.jsonl").write_text('{"prompt": "one"}\n{"prompt": "two"}\n{"prompt": "three"}\n')
    spec = TaskSpec(
        name="custom",
        source=DataSource(format="jsonl", path="d.jsonl"),
        oracle={"type": "python", "scorer": "judge.py:judge"},
        max_new_tokens=3,
    )
    task = build_task(spec, tmp_path)
    assert task.describe()["scorer"] == "judge.py:judge"
    scores = task.evaluate(lively_model, tiny_tokenizer, [2, 0], 2)
    assert scores.tolist() == [1, 1]
    assert (tmp_path / "judge.calls").read_text().split() == ["three", "one"]
