"""GO inside a transformers `Trainer`: wrap whatever optimizer the Trainer builds, perturb each micro-batch.

`training_step` (one micro-batch's forward and backward, gradient accumulation included) runs
inside `perturbed()`; evaluation, logging and checkpoint saving run between steps, at the clean
theta. Data-parallel ranks draw the same noise (seeds never depend on the rank).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import Trainer

from auditor.optim.go import GaussianAugmented


class GOTrainer(Trainer):
    """A `Trainer` whose optimizer (built from `args` or passed in `optimizers=`) is wrapped in GO.

        trainer = GOTrainer(model=model, args=args, train_dataset=ds, go_sigma=0.01, go_seed=0)
        trainer.train()

    go_relative, go_include, go_exclude, go_backup: as in `GaussianAugmented`.
    """

    def __init__(
        self,
        *args: Any,
        go_sigma: float,
        go_seed: int,
        go_relative: bool = False,
        go_include: Sequence[str] = ("*",),
        go_exclude: Sequence[str] = (),
        go_backup: str = "auto",
        **kwargs: Any,
    ) -> None:
        self.go_settings: dict[str, Any] = {
            "sigma": go_sigma,
            "seed": go_seed,
            "relative": go_relative,
            "include": tuple(go_include),
            "exclude": tuple(go_exclude),
            "backup": go_backup,
        }
        self.go: GaussianAugmented | None = None
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        optimizer = super().create_optimizer(model)
        if not isinstance(optimizer, GaussianAugmented):
            target = self.model if model is None else model
            if not isinstance(target, torch.nn.Module):
                raise TypeError("GOTrainer needs a torch model to wrap its optimizer")
            optimizer = GaussianAugmented(target, optimizer, **self.go_settings)
        self.optimizer = self.go = optimizer
        return optimizer

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        if self.go is None:
            raise RuntimeError("GOTrainer: the optimizer was not created through create_optimizer")
        with self.go.perturbed():
            return super().training_step(model, inputs, num_items_in_batch)
