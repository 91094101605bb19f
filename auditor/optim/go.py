"""GO, the Gaussian-augmented optimizer: every gradient is taken at theta + eps, every step starts from theta.

It minimises E_eps L(theta + eps) (DESIGN.md section 2), the training-time counterpart of the
smoothed score the auditor certifies. One step with k accumulation micro-batches:

    for each micro-batch m:  back up theta; theta += sigma * eps(seed, step, m, tensor)
                             forward + backward (the gradient lands at theta + eps)
                             copy theta back from the backup (bit-exact)
    base optimizer step from theta with the accumulated gradient

Noise is fresh for every micro-batch and comes from a generator seeded by (seed, step,
micro-batch, parameter name) alone: it can be regenerated for any step, and every data-parallel
rank draws the same noise for the same replica (nothing depends on the rank). Outside
`perturbed()` the weights are always clean, so evaluating or saving a checkpoint sees theta.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from auditor.audit.perturb import derive_seed, select_parameters
from auditor.optim.base import Backup, WeightBackup, WrappedOptimizer


def select_trainable(
    model: torch.nn.Module, include: Sequence[str], exclude: Sequence[str], trainable_only: bool
) -> list[str]:
    """Parameter names matched by the globs exactly as a policy's `perturbation` matches them (fixed order)."""
    params = dict(model.named_parameters())
    return [n for n in select_parameters(model, include, exclude) if params[n].requires_grad or not trainable_only]


class GaussianAugmented(WrappedOptimizer):
    """Wraps any torch optimizer; forward and backward inside `perturbed()`, then `step()`.

    sigma: noise std. Absolute (per coordinate, the auditor's convention) or, with `relative=True`,
    a fraction of each tensor's RMS taken at the clean theta of the current step
    (sigma_k = sigma * RMS(theta_k); all-zero tensors such as fresh biases then get no noise).
    include / exclude: globs over `model.named_parameters()` names; `trainable_only` skips frozen
    weights. backup: where the copy of theta lives, "device", "host" (pinned; for when device
    memory is short) or "auto" (host only when the device lacks room for it).

        go = GaussianAugmented(model, torch.optim.AdamW(model.parameters(), lr=1e-3), sigma=0.01, seed=0)
        for batch in loader:
            for micro in split(batch):
                with go.perturbed():
                    (model(**micro).loss / len(micro)).backward()
            go.step()
            go.zero_grad()

    `step()` refuses to run when no `perturbed()` pass happened since the last step (a forgotten
    context would silently train with the plain optimizer). Backward must run inside the context:
    autograd keeps references to the weights it used, and those are restored on exit.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        sigma: float,
        seed: int,
        *,
        relative: bool = False,
        include: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        trainable_only: bool = True,
        backup: Backup = "auto",
    ) -> None:
        super().__init__(optimizer)
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.relative = bool(relative)
        self.names = select_trainable(model, include, exclude, trainable_only)
        if not self.names:
            raise ValueError(f"GO: include {list(include)} / exclude {list(exclude)} select no trainable parameters")
        params = dict(model.named_parameters())
        self.params = [params[n] for n in self.names]
        self.backup = WeightBackup(self.params, backup)
        self.steps = 0  # base-optimizer steps taken: part of every noise seed
        self._micro = 0  # perturbed passes since the last step
        self._active = False
        self._scratch: dict[torch.device, torch.Tensor] = {}

    @property
    def is_perturbed(self) -> bool:
        """True only inside `perturbed()`: the model then holds theta + eps, not theta."""
        return self._active

    def noise(self, step: int, micro_batch: int, name: str) -> torch.Tensor:
        """The standard-normal eps (fp32) for one tensor, regenerated from (seed, step, micro-batch, name)."""
        p = self.params[self.names.index(name)]
        return self._noise(step, micro_batch, name, p, torch.empty(p.shape, dtype=torch.float32, device=p.device))

    def _noise(self, step: int, micro: int, name: str, p: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator(device=p.device)
        gen.manual_seed(derive_seed(self.seed, "go", step, micro, name))
        return out.normal_(generator=gen)

    def _buffer(self, p: torch.Tensor) -> torch.Tensor:
        # one fp32 scratch per device, reused: a fresh allocation per tensor and micro-batch costs more than the RNG
        buf = self._scratch.get(p.device)
        if buf is None or buf.numel() < p.numel():
            size = max(q.numel() for q in self.params if q.device == p.device)
            buf = self._scratch[p.device] = torch.empty(size, dtype=torch.float32, device=p.device)
        return buf[: p.numel()].view(p.shape)

    def scale(self, p: torch.Tensor) -> torch.Tensor | float:
        """The noise std for tensor p at its current (clean) value."""
        if not self.relative:
            return self.sigma
        return self.sigma * p.detach().float().pow(2).mean().sqrt()  # a device tensor: no host sync

    @torch.no_grad()
    def _apply(self, micro: int) -> None:
        self.backup.save()
        if self.sigma == 0:
            return
        for name, p in zip(self.names, self.params, strict=True):
            z = self._noise(self.steps, micro, name, p, self._buffer(p)).mul_(self.scale(p))
            if p.dtype == torch.float32:
                p.add_(z)
            else:  # add in fp32, round once to the parameter's dtype
                p.copy_((p.float() + z).to(p.dtype))

    @contextmanager
    def perturbed(self, micro_batch: int | None = None) -> Iterator[None]:
        """Weights at theta + eps for this step's next micro-batch (or `micro_batch`) inside; theta after."""
        if self._active:
            raise RuntimeError("GO: perturbed() is already active (nested use would stack noise)")
        micro = self._micro if micro_batch is None else int(micro_batch)
        self._micro = max(self._micro, micro + 1)
        self._apply(micro)
        self._active = True
        try:
            yield
        finally:
            self.backup.restore()
            self._active = False

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Step the wrapped optimizer from theta. A `closure` (forward + backward) is run perturbed first."""
        loss = None
        if closure is not None:
            with torch.enable_grad(), self.perturbed():
                loss = closure()
        if self._active:
            raise RuntimeError("GO: step() inside perturbed(): the step must start from the clean theta")
        if self._micro == 0:
            raise RuntimeError("GO: step() without a forward/backward inside perturbed() since the last step")
        self.base.step()
        self.steps += 1
        self._micro = 0
        return loss

    def _extra_state(self) -> dict[str, Any]:
        return {"go_steps": self.steps, "sigma": self.sigma, "seed": self.seed, "relative": self.relative}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.steps = int(state.get("go_steps", self.steps))
