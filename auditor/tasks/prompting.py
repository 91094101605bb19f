"""Prompt formatting, cached tokenisation, and the shared-prefix KV cache both evaluators use.

Prompts do not depend on the weights, so their token ids are computed once per tokenizer. Model
outputs do depend on them: the prefix KV cache is recomputed on every `evaluate` call.

Every prompt of a task usually starts with the same tokens (the chat template's system turn, a
fixed instruction). That common prefix is run once per call, at batch size 1, and its KV cache is
copied to every row of a batch; rows then carry [prefix][suffix] with padding placed after the
prefix and explicit position ids, so the result equals running the full prompts (up to float
rounding) at a fraction of the cost.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from auditor.tasks.base import Example

MIN_SHARED_PREFIX = 4  # below this a separate prefix pass costs more than it saves


@dataclass(frozen=True)
class PromptFormat:
    template: str = "{prompt}"
    chat: bool = True
    system: str | None = None

    def text(self, example: Example, tokenizer: Any) -> tuple[str, bool]:
        """The prompt text and whether the tokenizer should add its special tokens (BOS)."""
        body = self.template.replace("{prompt}", example.prompt)  # not str.format: prompts hold braces
        if self.chat and getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": self.system}] if self.system else []
            messages.append({"role": "user", "content": body})
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return text, False  # the template writes its own special tokens
        if self.system:
            body = f"{self.system}\n\n{body}"
        return body, True


@dataclass(frozen=True)
class Encoded:
    """Token ids of every example's prompt and the length of their common prefix."""

    texts: list[str]
    ids: list[list[int]]
    prefix_len: int


def encode_prompts(fmt: PromptFormat, examples: Sequence[Example], tokenizer: Any) -> Encoded:
    texts, ids = [], []
    for ex in examples:
        text, special = fmt.text(ex, tokenizer)
        texts.append(text)
        ids.append(list(tokenizer(text, add_special_tokens=special)["input_ids"]))
    return Encoded(texts, ids, common_prefix_len(ids))


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Longest common prefix, leaving every sequence at least one token of its own."""
    if not seqs:
        return 0
    limit = min(len(s) for s in seqs) - 1
    first = seqs[0]
    n = 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n if n >= MIN_SHARED_PREFIX else 0


def model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def cache_kwarg(model: Any) -> str | None:
    """The name under which this model's forward takes a KV cache, or None when prefix sharing is unsafe."""
    params = inspect.signature(model.forward).parameters
    if "position_ids" not in params:
        return None  # we must place positions explicitly around the padding
    for name in ("cache", "past_key_values"):  # renamed in transformers 5.x
        if name in params:
            return name
    return None


def keep_last_logits(model: Any, n: int | torch.Tensor) -> dict[str, Any]:
    """Ask for logits at a few positions only (the vocabulary projection is costly), where supported."""
    return {"logits_to_keep": n} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def output_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


class PrefixCache:
    """The KV cache of the task's common prompt prefix under the current weights."""

    def __init__(self, model: Any, prefix: Sequence[int], kwarg: str) -> None:
        self.kwarg = kwarg
        self.length = len(prefix)
        ids = torch.tensor([list(prefix)], dtype=torch.long, device=model_device(model))
        out = model(input_ids=ids, use_cache=True, **keep_last_logits(model, 1))
        self._cache = output_cache(out)
        if self._cache is None or not hasattr(self._cache, "reorder_cache"):
            raise TypeError("model returned no reorderable KV cache")

    def rows(self, n: int) -> Any:
        """A fresh cache holding the prefix `n` times (callers extend it in place)."""
        cache = copy.deepcopy(self._cache)
        index = torch.zeros(n, dtype=torch.long)
        cache.reorder_cache(index)
        return cache


def prefix_cache(model: Any, enc: Encoded) -> PrefixCache | None:
    """The prefix KV cache for this call, or None to run full prompts (no shared prefix, or no support)."""
    kwarg = cache_kwarg(model)
    if enc.prefix_len == 0 or kwarg is None:
        return None
    try:
        return PrefixCache(model, enc.ids[0][: enc.prefix_len], kwarg)
    except (TypeError, ValueError):
        return None


def chunks(indices: Sequence[int], size: int) -> list[list[int]]:
    """Fixed batch composition: consecutive runs of `size` in the given order."""
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    idx = [int(i) for i in indices]
    return [idx[k : k + size] for k in range(0, len(idx), size)]


def pad_id(tokenizer: Any, model: Any) -> int:
    for value in (getattr(tokenizer, "pad_token_id", None), *eos_ids(tokenizer, model)):
        if value is not None:
            return int(value)
    return 0  # any id works: padded positions are masked out


def eos_ids(tokenizer: Any, model: Any) -> list[int]:
    """Every end-of-sequence id the tokenizer or the model's generation config declares."""
    found: list[int] = []
    gen = getattr(model, "generation_config", None)
    for value in (getattr(tokenizer, "eos_token_id", None), getattr(gen, "eos_token_id", None)):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is not None and int(v) not in found:
                found.append(int(v))
    return found
