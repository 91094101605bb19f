"""What a task is: examples, a prompt format, a decoding rule and a 0/1 oracle."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Example:
    """One benchmark item. `answer` is the reference (for choice tasks, the correct choice's text)."""

    prompt: str
    answer: str | None = None
    choices: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    """A 0/1 benchmark the sampler can evaluate under any weights.

    `evaluate` must be deterministic for fixed weights and a fixed `indices` sequence: examples
    are batched in the given order in chunks of `batch_size`, with fixed padding, so a draw that is
    replayed (resume, another process) gets the same outcomes. It never caches model outputs:
    the weights change between calls.
    """

    name: str
    examples: Sequence[Example]

    def evaluate(self, model: Any, tokenizer: Any, indices: Sequence[int], batch_size: int) -> np.ndarray:
        """Return one 0/1 score (uint8) per index, in the order given."""
        ...
