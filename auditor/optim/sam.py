"""SAM (sharpness-aware minimisation, Foret et al. 2021), the worst-case baseline GO is compared with.

Each step takes the gradient g at theta, moves to theta + e with e = rho * g / ||g|| (adaptive
SAM, Kwon et al. 2021: e = rho * T^2 g / ||T g||, T = |theta| element-wise), takes the gradient
there, copies theta back and steps the wrapped optimizer with that second gradient. Two forward
and backward passes per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from auditor.optim.base import Backup, WeightBackup, WrappedOptimizer


class SAM(WrappedOptimizer):
    """Wraps any torch optimizer; rho is the ascent radius (0.05 is the usual start).

        sam = SAM(torch.optim.AdamW(model.parameters(), lr=1e-3), rho=0.05)
        loss = model(**batch).loss; loss.backward()         # gradient at theta
        with sam.ascended():                                # weights at theta + e, grads cleared
            model(**batch).loss.backward()                  # gradient at theta + e
        sam.step(); sam.zero_grad()

    or `sam.step(closure)` with a closure that runs forward + backward and returns the loss.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        rho: float = 0.05,
        *,
        adaptive: bool = False,
        eps: float = 1e-12,
        backup: Backup = "auto",
    ) -> None:
        super().__init__(optimizer)
        if not rho >= 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        self.rho = float(rho)
        self.adaptive = bool(adaptive)
        self.eps = float(eps)
        self.params = [p for group in self.param_groups for p in group["params"]]
        self.backup = WeightBackup(self.params, backup)
        self._active = False
        self._ascended = False

    @property
    def is_perturbed(self) -> bool:
        return self._active

    @torch.no_grad()
    def ascent(self) -> list[torch.Tensor | None]:
        """The step e for each parameter from its current gradient (None where it has no gradient)."""
        with_grad = [p for p in self.params if p.grad is not None]
        if not with_grad:
            raise RuntimeError("SAM: no gradients to ascend along: run backward at theta first")
        weighted = [(p.abs() * p.grad if self.adaptive else p.grad).float() for p in with_grad]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(w) for w in weighted]))
        scale = self.rho / (norm + self.eps)
        out: list[torch.Tensor | None] = []
        for p in self.params:
            if p.grad is None:
                out.append(None)
            else:
                g = p.grad.float()
                out.append((p.float().pow(2) * g if self.adaptive else g) * scale)
        return out

    @contextmanager
    def ascended(self) -> Iterator[None]:
        """Weights at theta + e (e from the gradients present on entry), gradients cleared; theta after."""
        if self._active:
            raise RuntimeError("SAM: ascended() is already active")
        steps = self.ascent()
        self.backup.save()
        with torch.no_grad():
            for p, e in zip(self.params, steps, strict=True):
                if e is not None:
                    p.copy_((p.float() + e).to(p.dtype))
        self.base.zero_grad(set_to_none=True)
        self._active = True
        try:
            yield
        finally:
            self.backup.restore()
            self._active = False
            self._ascended = True

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Step from theta with the gradient at theta + e; a `closure` (forward + backward) runs both passes."""
        loss = None
        if closure is not None:
            self.base.zero_grad(set_to_none=True)
            with torch.enable_grad():
                loss = closure()
            with self.ascended(), torch.enable_grad():
                closure()
        if self._active:
            raise RuntimeError("SAM: step() inside ascended(): the step must start from the clean theta")
        if not self._ascended:
            raise RuntimeError("SAM: step() without a backward inside ascended() since the last step")
        self.base.step()
        self._ascended = False
        return loss

    def _extra_state(self) -> dict[str, Any]:
        return {"rho": self.rho, "adaptive": self.adaptive}
