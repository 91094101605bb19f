"""What GO and SAM share: an optimizer that wraps another, and a bit-exact backup of the weights.

Both take the gradient somewhere other than theta (theta + noise, theta + the ascent step), put
theta back by copying a pristine backup (never by subtracting: that drifts in low precision),
then let the wrapped optimizer step from theta with that gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

Backup = str  # "auto" | "device" | "host"


class WrappedOptimizer(torch.optim.Optimizer):
    """A torch Optimizer that shares its param groups and state with `optimizer` and delegates to it.

    Being an `Optimizer` (not a duck type) is what LR schedulers, `GradScaler`, accelerate and the
    transformers `Trainer` check for; sharing `param_groups` means a scheduler that changes the
    learning rate here changes it in the wrapped optimizer too.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"expected a torch.optim.Optimizer to wrap, got {type(optimizer).__name__}")
        super().__init__(optimizer.param_groups, optimizer.defaults)  # hooks and bookkeeping of an Optimizer
        self.base = optimizer  # from here on param_groups and state are the wrapped optimizer's

    # Properties, not copies: the wrapped optimizer's load_state_dict replaces its lists (accelerate calls it).
    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        base = self.__dict__.get("base")
        return base.param_groups if base is not None else self.__dict__["_groups"]

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        base = self.__dict__.get("base")
        if base is not None:
            base.param_groups = value
        else:
            self.__dict__["_groups"] = value

    @property  # type: ignore[override]
    def state(self) -> Any:
        base = self.__dict__.get("base")
        return base.state if base is not None else self.__dict__["_state"]

    @state.setter
    def state(self, value: Any) -> None:
        base = self.__dict__.get("base")
        if base is not None:
            base.state = value
        else:
            self.__dict__["_state"] = value

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        state = self.base.state_dict()
        state["wrapper"] = self._extra_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        self._load_extra_state(state.pop("wrapper", {}))
        self.base.load_state_dict(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r})"


def _backup_on_host(params: Sequence[torch.Tensor], where: Backup) -> bool:
    if where not in ("auto", "device", "host"):
        raise ValueError(f"backup must be 'auto', 'device' or 'host', got {where!r}")
    if where != "auto":
        return where == "host"
    on_cuda = [p for p in params if p.device.type == "cuda"]
    if not on_cuda:
        return False
    need = sum(p.numel() * p.element_size() for p in on_cuda)
    free = min(torch.cuda.mem_get_info(d)[0] for d in {p.device for p in on_cuda})
    return need * 1.25 > free  # keep headroom for activations; else back up on the host


class WeightBackup:
    """One persistent copy of some parameters, on their device or in (pinned) host memory.

    `save` and `restore` are plain copies, so `restore` puts back the saved bits exactly, whatever
    the dtype. Host copies go through pinned memory, ordered on the current stream.
    """

    def __init__(self, params: Sequence[torch.Tensor], where: Backup = "auto") -> None:
        self.params = list(params)
        self.on_host = _backup_on_host(self.params, where)
        pin = self.on_host and torch.cuda.is_available()
        self.copies = [
            torch.empty(p.shape, dtype=p.dtype, device="cpu", pin_memory=pin)
            if self.on_host
            else torch.empty_like(p, memory_format=torch.contiguous_format)
            for p in self.params
        ]

    @torch.no_grad()
    def save(self) -> None:
        for p, c in zip(self.params, self.copies, strict=True):
            c.copy_(p, non_blocking=True)

    @torch.no_grad()
    def restore(self) -> None:
        for p, c in zip(self.params, self.copies, strict=True):
            p.copy_(c, non_blocking=True)
