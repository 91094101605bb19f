"""Multiple choice by log-likelihood: no generation, the reference choice must score highest.

For each example the score of a choice is the summed log-probability of its tokens after the
prompt. A batch of `batch_size` examples runs in two passes over a right-padded layout:
  1. the prompt suffixes (after the task's shared prefix), once per example;
  2. the choice continuations, one row per (example, choice), on a copy of that example's cache.
Choices that are a single token need no second pass. Models that cannot take explicit position
ids get the plain layout instead: one right-padded row per (example, choice), full sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from auditor.errors import TaskError
from auditor.tasks.base import Example
from auditor.tasks.prompting import (
    Encoded,
    PrefixCache,
    PromptFormat,
    cache_kwarg,
    chunks,
    encode_prompts,
    keep_last_logits,
    model_device,
    output_cache,
    pad_id,
    prefix_cache,
)


def continuation_text(context: str, choice: str) -> str:
    """' cow' after 'Answer:', 'cow' after a context that already ends in whitespace (chat turn)."""
    return choice if not context or context[-1].isspace() else " " + choice


class ChoiceTask:
    """Prompt + choices → argmax of summed log-likelihood → 1 when it is the reference."""

    def __init__(
        self, name: str, examples: Sequence[Example], fmt: PromptFormat, info: dict[str, Any] | None = None
    ) -> None:
        self.name = name
        self.examples: Sequence[Example] = list(examples)
        self.format = fmt
        self.info = dict(info or {})
        self.targets = [ex.choices.index(ex.answer) for ex in self.examples]  # type: ignore[union-attr]
        self._encoded: tuple[Any, Encoded, list[list[list[int]]]] | None = None

    def encoded(self, tokenizer: Any) -> tuple[Encoded, list[list[list[int]]]]:
        """Prompt ids and each choice's continuation ids, once per tokenizer."""
        if self._encoded is None or self._encoded[0] is not tokenizer:
            enc = encode_prompts(self.format, self.examples, tokenizer)
            conts = []
            for text, ex in zip(enc.texts, self.examples, strict=True):
                row = []
                for choice in ex.choices or ():
                    ids = list(tokenizer(continuation_text(text, choice), add_special_tokens=False)["input_ids"])
                    if not ids:
                        raise TaskError(f"task '{self.name}': choice {choice!r} encodes to no tokens")
                    row.append(ids)
                conts.append(row)
            self._encoded = (tokenizer, enc, conts)
        return self._encoded[1], self._encoded[2]

    def loglikelihoods(self, model: Any, tokenizer: Any, indices: Sequence[int], batch_size: int) -> list[np.ndarray]:
        """Summed log-probability of every choice of every indexed example (float64 arrays)."""
        enc, conts = self.encoded(tokenizer)
        out: list[np.ndarray] = []
        with torch.inference_mode():
            kwarg = cache_kwarg(model)
            if kwarg is None:
                for chunk in chunks(indices, batch_size):
                    out += _plain_scores(model, tokenizer, enc, conts, chunk)
                return out
            shared = prefix_cache(model, enc)
            for chunk in chunks(indices, batch_size):
                out += _cached_scores(model, tokenizer, enc, conts, chunk, shared, kwarg)
        return out

    def evaluate(self, model: Any, tokenizer: Any, indices: Sequence[int], batch_size: int) -> np.ndarray:
        scores = self.loglikelihoods(model, tokenizer, indices, batch_size)
        picks = [int(np.argmax(s)) == self.targets[i] for s, i in zip(scores, indices, strict=True)]
        return np.asarray(picks, dtype=np.uint8)

    def describe(self) -> dict[str, Any]:
        return {
            **self.info,
            "n_examples": len(self.examples),
            "decoding": "log-likelihood of each choice (no generation)",
            "chat": self.format.chat,
            "template": self.format.template,
            "system": self.format.system,
        }


def _right_pad(rows: list[list[int]], pad: int) -> tuple[list[list[int]], list[list[int]]]:
    width = max(len(r) for r in rows)
    return [r + [pad] * (width - len(r)) for r in rows], [[1] * len(r) + [0] * (width - len(r)) for r in rows]


def _cached_scores(
    model: Any,
    tokenizer: Any,
    enc: Encoded,
    conts: list[list[list[int]]],
    chunk: list[int],
    shared: PrefixCache | None,
    kwarg: str,
) -> list[np.ndarray]:
    device = model_device(model)
    pad = pad_id(tokenizer, model)
    p = shared.length if shared is not None else 0
    suffixes = [enc.ids[i][p:] for i in chunk]
    lengths = torch.tensor([len(s) for s in suffixes], device=device)
    ids, smask = _right_pad(suffixes, pad)
    width = len(ids[0])
    mask = torch.cat([torch.ones(len(chunk), p, dtype=torch.long), torch.tensor(smask)], dim=1).to(device)
    positions = (p + torch.arange(width, device=device)).expand(len(chunk), width)
    kwargs: dict[str, Any] = {kwarg: shared.rows(len(chunk))} if shared is not None else {}
    # pass 1: logits only where a prompt ends (they predict each choice's first token)
    keep = torch.unique(lengths - 1)
    keep_kw = keep_last_logits(model, keep)
    res = model(
        input_ids=torch.tensor(ids, device=device),
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        **kwargs,
        **keep_kw,
    )
    logits = res.logits if keep_kw else res.logits[:, keep]
    rows = torch.searchsorted(keep, lengths - 1)
    first = logits[torch.arange(len(chunk), device=device), rows].float().log_softmax(-1)
    # one row per (example, choice)
    owner = [b for b, i in enumerate(chunk) for _ in conts[i]]
    cont_rows = [c for i in chunk for c in conts[i]]
    owner_t = torch.tensor(owner, device=device)
    totals = first[owner_t, torch.tensor([c[0] for c in cont_rows], device=device)].double()
    multi = [r for r, c in enumerate(cont_rows) if len(c) > 1]
    if multi:
        # pass 2, multi-token choices only: the rest of each continuation on a copy of its owner's cache
        sel = torch.tensor(multi, device=device)
        rows2 = [cont_rows[r] for r in multi]
        longest = max(len(c) for c in rows2)
        cache = output_cache(res)
        cache.reorder_cache(owner_t[sel])
        cids, cmask = _right_pad(rows2, pad)
        full_mask = torch.cat([mask[owner_t[sel]], torch.tensor(cmask, device=device)], dim=1)
        cpos = (p + lengths[owner_t[sel]]).unsqueeze(1) + torch.arange(longest, device=device)
        res2 = model(
            input_ids=torch.tensor(cids, device=device),
            attention_mask=full_mask,
            position_ids=cpos,
            use_cache=True,
            **{kwarg: cache},
            **keep_last_logits(model, longest),
        )
        logp = res2.logits[:, -longest:-1].float().log_softmax(-1)  # position j predicts token j + 1
        nxt = torch.tensor([c[1:] + [pad] * (longest - len(c)) for c in rows2], device=device)
        tok_lp = logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1).double()
        valid = torch.tensor(cmask, device=device)[:, 1:].bool()
        totals[sel] += (tok_lp * valid).sum(-1)
    return _split(totals.cpu().numpy(), [len(conts[i]) for i in chunk])


def _plain_scores(
    model: Any, tokenizer: Any, enc: Encoded, conts: list[list[list[int]]], chunk: list[int]
) -> list[np.ndarray]:
    device = model_device(model)
    pad = pad_id(tokenizer, model)
    pairs = [(enc.ids[i], c) for i in chunk for c in conts[i]]
    ids, mask = _right_pad([p + c for p, c in pairs], pad)
    logits = (
        model(input_ids=torch.tensor(ids, device=device), attention_mask=torch.tensor(mask, device=device))
        .logits.float()
        .log_softmax(-1)
    )
    totals = []
    for r, (prompt, cont) in enumerate(pairs):
        pos = torch.arange(len(prompt) - 1, len(prompt) + len(cont) - 1, device=device)
        totals.append(float(logits[r, pos, torch.tensor(cont, device=device)].double().sum()))
    return _split(np.asarray(totals), [len(conts[i]) for i in chunk])


def _split(values: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    out, k = [], 0
    for n in sizes:
        out.append(values[k : k + n].astype(np.float64))
        k += n
    return out
