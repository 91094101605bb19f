"""Tasks judged on a greedy-decoded answer: batched generation with left padding and a fixed layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from auditor.tasks.base import Example
from auditor.tasks.oracles import Scorer
from auditor.tasks.prompting import (
    Encoded,
    PromptFormat,
    chunks,
    encode_prompts,
    eos_ids,
    model_device,
    pad_id,
    prefix_cache,
)

# generate() fills every unset (None) field from the model's own generation_config: these neutral
# values are set explicitly so a checkpoint's sampling settings neither leak in nor raise warnings.
_NEUTRAL = {
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_length": 0,
    "num_return_sequences": 1,
}


def greedy_config(model: Any, max_new_tokens: int, pad: int, eos: list[int]) -> Any:
    """A greedy config that owes nothing to the model's (sampling, temperature, penalties)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad,
        eos_token_id=eos or None,
        bos_token_id=getattr(model.config, "bos_token_id", None),
        use_cache=True,
        **_NEUTRAL,
    )


def generate_answers(
    model: Any,
    tokenizer: Any,
    enc: Encoded,
    indices: Sequence[int],
    batch_size: int,
    max_new_tokens: int,
) -> list[str]:
    """Greedy answers for `indices`, batched in that order; only the new tokens are decoded."""
    device = model_device(model)
    pad, eos = pad_id(tokenizer, model), eos_ids(tokenizer, model)
    config = greedy_config(model, max_new_tokens, pad, eos)
    answers: list[str] = []
    with torch.inference_mode():
        shared = prefix_cache(model, enc)
        p = shared.length if shared else 0
        for chunk in chunks(indices, batch_size):
            suffixes = [enc.ids[i][p:] for i in chunk]
            width = max(len(s) for s in suffixes)
            # [prefix][left padding][suffix]: every row ends where generation starts
            ids = [enc.ids[i][:p] + [pad] * (width - len(s)) + s for i, s in zip(chunk, suffixes, strict=True)]
            mask = [[1] * p + [0] * (width - len(s)) + [1] * len(s) for s in suffixes]
            kwargs: dict[str, Any] = {}
            if shared is not None:
                kwargs[shared.kwarg] = shared.rows(len(chunk))
            out = model.generate(
                input_ids=torch.tensor(ids, dtype=torch.long, device=device),
                attention_mask=torch.tensor(mask, dtype=torch.long, device=device),
                generation_config=config,
                **kwargs,
            )
            for row in out[:, p + width :].tolist():
                answers.append(tokenizer.decode(_until_eos(row, eos), skip_special_tokens=True).strip())
    return answers


def _until_eos(tokens: list[int], eos: list[int]) -> list[int]:
    for k, t in enumerate(tokens):
        if t in eos:
            return tokens[:k]
    return tokens


class GenerationTask:
    """Prompt → greedy answer → 0/1 scorer."""

    def __init__(
        self,
        name: str,
        examples: Sequence[Example],
        scorer: Scorer,
        fmt: PromptFormat,
        max_new_tokens: int,
        info: dict[str, Any] | None = None,
        first_line: bool = False,
    ) -> None:
        self.name = name
        self.examples: Sequence[Example] = list(examples)
        self.scorer = scorer
        self.format = fmt
        self.max_new_tokens = max_new_tokens
        self.first_line = first_line  # few-shot line formats: what follows the first line is chatter
        self.info = dict(info or {})
        self._encoded: tuple[Any, Encoded] | None = None

    def encoded(self, tokenizer: Any) -> Encoded:
        """Prompt token ids, computed once per tokenizer (they do not depend on the weights)."""
        if self._encoded is None or self._encoded[0] is not tokenizer:
            self._encoded = (tokenizer, encode_prompts(self.format, self.examples, tokenizer))
        return self._encoded[1]

    def answers(self, model: Any, tokenizer: Any, indices: Sequence[int], batch_size: int) -> list[str]:
        enc = self.encoded(tokenizer)
        answers = generate_answers(model, tokenizer, enc, indices, batch_size, self.max_new_tokens)
        return [a.split("\n", 1)[0].strip() for a in answers] if self.first_line else answers

    def evaluate(self, model: Any, tokenizer: Any, indices: Sequence[int], batch_size: int) -> np.ndarray:
        answers = self.answers(model, tokenizer, indices, batch_size)
        scores = [self.scorer(a, self.examples[i]) for a, i in zip(answers, indices, strict=True)]
        return np.asarray(scores, dtype=np.uint8)

    def describe(self) -> dict[str, Any]:
        return {
            **self.info,
            "n_examples": len(self.examples),
            "max_new_tokens": self.max_new_tokens,
            "decoding": "greedy, first line" if self.first_line else "greedy",
            "chat": self.format.chat,
            "template": self.format.template,
            "system": self.format.system,
        }
