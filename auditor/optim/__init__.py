"""Training inside the basin: GO (Gaussian-augmented optimizer) and SAM, each wrapping any torch optimizer.

`GOTrainer` (transformers `Trainer` with GO) is imported lazily: `import auditor.optim` stays light.
"""

from __future__ import annotations

from typing import Any

from auditor.optim.base import WeightBackup, WrappedOptimizer
from auditor.optim.go import GaussianAugmented
from auditor.optim.sam import SAM

__all__ = ["SAM", "GOTrainer", "GaussianAugmented", "WeightBackup", "WrappedOptimizer"]


def __getattr__(name: str) -> Any:
    if name == "GOTrainer":
        from auditor.optim.trainer import GOTrainer

        return GOTrainer
    raise AttributeError(f"module 'auditor.optim' has no attribute {name!r}")
