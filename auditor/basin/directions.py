"""Directions delta in the space of the perturbed parameters, and moving the model to theta0 + a * delta.

Three families, each scaled to norm sqrt(d) (d = number of perturbed coordinates), so that the point
at scale a is as far from theta0 as one Gaussian draw with sigma = a:
  - random (most-case): delta ~ N(0, I), regenerated from (seed, index) by auditor.audit.perturb's seeding;
  - sft: the direction of a fine-tune, (theta_ft - theta0) / ||theta_ft - theta0|| * sqrt(d);
  - worst: projected gradient ascent on a differentiable surrogate of one task (cross-entropy of its
    reference answers), projected back to norm sqrt(d) after each step.
Every move starts from the pristine copy of theta0 and restore copies it back: bit-exact, no drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from auditor.audit.perturb import Perturber
from auditor.errors import CheckpointError
from auditor.tasks.choice import ChoiceTask, continuation_text
from auditor.tasks.generate import GenerationTask
from auditor.tasks.prompting import model_device, pad_id

WORST_STEP = 0.5  # PGD step, as a fraction of the direction's norm sqrt(d)

Direction = list[torch.Tensor]  # fp32, one tensor per perturbed parameter, in Slicer.names order


class Slicer:
    """Moves the selected parameters to theta0 + a * delta (fp32 arithmetic, cast once) and back."""

    def __init__(self, model: torch.nn.Module, seed: int, include: Sequence[str], exclude: Sequence[str]) -> None:
        # The Perturber holds the pristine copy and the counter-based noise: random direction k is
        # exactly the noise of its draw k, so a point is reproducible from (seed, k, a) alone.
        self._perturber = Perturber(model, 1.0, seed, include, exclude)
        self.seed = int(seed)
        self.names = self._perturber.names
        self.params = self._perturber.params
        self.dimension = self._perturber.dimension

    @property
    def unit_norm(self) -> float:
        """sqrt(d): the norm every direction is scaled to."""
        return math.sqrt(self.dimension)

    def random(self, index: int) -> Direction:
        """delta_index ~ N(0, I) over the perturbed parameters (unnormalised, as in the paper)."""
        return [self._perturber.noise(index, j) for j in range(len(self.params))]

    @torch.no_grad()
    def apply(self, direction: Direction, a: float) -> None:
        """Set the selected weights to theta0 + a * direction, always from the pristine theta0."""
        for p, p0, d in zip(self.params, self._perturber.pristine, direction, strict=True):
            if p.dtype == torch.float32:
                p.data.copy_(d).mul_(a).add_(p0)  # the same rounding as Perturber.apply
            else:
                p.data.copy_((p0.float() + a * d).to(p.dtype))

    def restore(self) -> None:
        """Copy the pristine theta0 back (bit-exact)."""
        self._perturber.restore()

    def pristine(self) -> list[torch.Tensor]:
        return self._perturber.pristine


def norm(direction: Direction) -> float:
    return math.sqrt(sum(float(d.double().pow(2).sum()) for d in direction))


def rescaled(direction: Direction, target: float) -> Direction:
    """The direction scaled to L2 norm `target` (in place)."""
    n = norm(direction)
    if n == 0 or not math.isfinite(n):
        raise ValueError(f"cannot rescale a direction of norm {n}")
    for d in direction:
        d.mul_(target / n)
    return direction


# --------------------------------------------------------------------------- sft


@dataclass
class SftDirection:
    """theta_ft - theta0 on the perturbed parameters, its norm, and what the slice cannot show."""

    delta: Direction
    distance: float  # ||theta_ft - theta0|| over the perturbed parameters
    changed_outside: list[str] = field(default_factory=list)  # changed, but not perturbed: not on the slice

    @property
    def scale(self) -> float:
        """The slice point a at which theta0 + a * delta is the fine-tuned model itself."""
        return self.distance / math.sqrt(sum(d.numel() for d in self.delta))


def _read(ref: Any) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(ref.path), framework="pt") as f:
        return f.get_tensor(ref.name).float()


def sft_direction(slicer: Slicer, candidate: Path) -> SftDirection:
    """The fine-tune direction of a full checkpoint or a PEFT LoRA adapter folder (safetensors only)."""
    from auditor.gate.radius import refuse_pickles
    from auditor.model.tensor_stream import model_index

    candidate = Path(candidate)
    if not candidate.is_dir():
        raise CheckpointError(f"{candidate}: candidate directory not found")
    refuse_pickles(candidate)
    pristine = dict(zip(slicer.names, slicer.pristine(), strict=True))
    delta = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in pristine.items()}
    outside: list[str] = []
    if (candidate / "adapter_config.json").is_file():
        from auditor.gate.lora import read_adapter

        adapter = read_adapter(candidate)
        for name, ref in adapter.full.items():  # full replacement tensors (modules_to_save, ...)
            if name in pristine:
                delta[name] = _checked(candidate, name, _read(ref), pristine[name])
            else:
                outside.append(name)
        for name, lr in adapter.lowrank.items():  # s * B @ A, added to the replacement when both exist
            if name not in pristine:
                outside.append(name)
                continue
            low = torch.from_numpy(lr.left @ lr.right).float().to(delta[name].device)
            if low.numel() != delta[name].numel():
                raise CheckpointError(f"{candidate}: adapter for {name} does not match the base shape")
            delta[name] += low.reshape(delta[name].shape)
    else:
        index = model_index(candidate)
        missing = sorted(set(pristine) - set(index))
        if missing:
            raise CheckpointError(f"{candidate}: no tensor {missing[0]} (the base has it and it is perturbed)")
        for name, ref in index.items():
            if name in pristine:
                delta[name] = _checked(candidate, name, _read(ref), pristine[name])
    direction = [delta[n] for n in slicer.names]
    distance = norm(direction)
    if distance == 0:
        raise CheckpointError(f"{candidate}: equals the base on every perturbed parameter: no sft direction")
    return SftDirection(rescaled(direction, slicer.unit_norm), distance, sorted(outside))


def _checked(where: Path, name: str, new: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    if tuple(new.shape) != tuple(base.shape):
        raise CheckpointError(f"{where}: tensor {name} is {list(new.shape)}, the base has {list(base.shape)}")
    out = new.to(base.device) - base.float()
    if not torch.isfinite(out).all():
        raise CheckpointError(f"{where}: tensor {name} is not finite")
    return out


# --------------------------------------------------------------------------- worst


def reference_pairs(task: Any, tokenizer: Any) -> list[tuple[list[int], list[int]]] | None:
    """(prompt ids, reference answer ids) per example, or None when the task has no reference answers."""
    if isinstance(task, ChoiceTask):
        enc, conts = task.encoded(tokenizer)
        return [(enc.ids[i], conts[i][t]) for i, t in enumerate(task.targets)]
    if isinstance(task, GenerationTask) and all(ex.answer for ex in task.examples):
        enc = task.encoded(tokenizer)
        pairs = []
        for text, ids, ex in zip(enc.texts, enc.ids, task.examples, strict=True):
            target = list(tokenizer(continuation_text(text, str(ex.answer)), add_special_tokens=False)["input_ids"])
            pairs.append((ids, target))
        return pairs
    return None


def surrogate_loss(
    model: Any, tokenizer: Any, pairs: list[tuple[list[int], list[int]]], batch_size: int
) -> torch.Tensor:
    """Mean over examples of the summed cross-entropy of the reference answer after its prompt.

    Differentiable (call it under torch.enable_grad to ascend it). Right padding, masked.
    """
    device = model_device(model)
    pad = pad_id(tokenizer, model)
    total = torch.zeros((), device=device)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        rows = [p + t for p, t in chunk]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        labels = torch.full_like(ids, -100)
        for b, (p, t) in enumerate(chunk):
            labels[b, len(p) : len(p) + len(t)] = ids[b, len(p) : len(p) + len(t)]
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        ce = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
        )
        total = total + ce
    return total / len(pairs)


@dataclass
class WorstDirection:
    delta: Direction
    scale: float  # the a at which it was optimised
    trace: list[float]  # surrogate at theta0 + scale * delta_t after each step


def _gradient(slicer: Slicer, model: Any, tokenizer: Any, pairs: list[Any], batch_size: int) -> tuple[Direction, float]:
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in slicer.params:
        p.requires_grad_(True)
        p.grad = None
    try:
        with torch.enable_grad():
            loss = surrogate_loss(model, tokenizer, pairs, batch_size)
            loss.backward()
        grads = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().clone() for p in slicer.params
        ]
    finally:
        for p in slicer.params:
            p.grad = None
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
    return grads, float(loss.detach())


def worst_direction(
    slicer: Slicer, model: Any, tokenizer: Any, pairs: list[Any], scale: float, steps: int, batch_size: int
) -> WorstDirection:
    """Projected gradient ascent of the surrogate at theta0 + scale * delta over ||delta|| = sqrt(d).

    delta_0 is the gradient at theta0 (the steepest first-order direction); each of the `steps - 1`
    further steps moves delta by WORST_STEP * sqrt(d) along the normalised gradient at
    theta0 + scale * delta and projects back to norm sqrt(d). The iterate with the highest surrogate
    is kept (a step can overshoot on a curved landscape). Deterministic: no random numbers.
    """
    unit = slicer.unit_norm
    try:
        grad, _ = _gradient(slicer, model, tokenizer, pairs, batch_size)
        delta = rescaled(grad, unit)
        trace: list[float] = []
        best: tuple[float, Direction] | None = None
        for step in range(steps):
            slicer.apply(delta, scale)
            if step == steps - 1:  # the last iterate needs its value only
                with torch.no_grad():
                    loss = float(surrogate_loss(model, tokenizer, pairs, batch_size))
            else:
                grad, loss = _gradient(slicer, model, tokenizer, pairs, batch_size)
            trace.append(loss)
            if best is None or loss > best[0]:
                best = (loss, [d.clone() for d in delta] if step < steps - 1 else delta)
            if step == steps - 1:
                break
            g = norm(grad)
            if g == 0 or not math.isfinite(g):
                break
            for d, gr in zip(delta, grad, strict=True):
                d.add_(gr, alpha=WORST_STEP * unit / g)
            rescaled(delta, unit)
    finally:
        slicer.restore()
    assert best is not None
    return WorstDirection(best[1], scale, trace)
