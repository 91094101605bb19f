"""Gaussian perturbations theta0 + eps_i that any process can regenerate from (seed, i) alone.

Noise for draw i on parameter `name` comes from its own generator seeded by a hash of
(seed, i, name): a draw can be replayed, resumed or computed on another worker without replaying
the draws before it. Noise is added in fp32 and cast once to the parameter dtype; restoring copies
the pristine tensors back, so it is bit-exact whatever the dtype (the paper's code subtracted the
noise in bf16 and drifted).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of values (stable across processes and platforms)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def select_parameters(model: torch.nn.Module, include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """Names of the parameters matched by `include` and not by `exclude`, in a fixed order.

    `named_parameters()` lists a tied tensor once, so tied weights get one noise, as the maths needs.
    """
    names = []
    for name, _ in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, g) for g in include) and not any(
            fnmatch.fnmatchcase(name, g) for g in exclude
        ):
            names.append(name)
    return sorted(names)


class Perturber:
    """Applies eps_i ~ N(0, sigma^2 I) to the selected weights and restores them exactly.

    Holds a pristine copy of every selected tensor (one extra copy of the perturbed subset).
    `sign=-1` applies -eps_i (antithetic pairs); `cache_noise` keeps the last draw's noise so
    the second half of a pair does not pay for the RNG again.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        sigma: float,
        seed: int,
        include: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        cache_noise: bool = False,
    ) -> None:
        self.model = model
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.names = select_parameters(model, include, exclude)
        if not self.names:
            raise ValueError(f"perturbation.include {list(include)} / exclude {list(exclude)} select no parameters")
        params = dict(model.named_parameters())
        self.params = [params[n] for n in self.names]
        self.pristine = [p.detach().clone() for p in self.params]
        self.dimension = sum(p.numel() for p in self.params)
        self.cache_noise = cache_noise
        self._buffers: list[torch.Tensor | None] = [None] * len(self.params)
        self._scratch: dict[str, torch.Tensor] = {}
        self._cached_draw: int | None = None
        self.current: tuple[int, float] | None = None

    @property
    def typical_noise_norm(self) -> float:
        """sigma * sqrt(d): the norm of one draw (not a certified radius)."""
        return self.sigma * math.sqrt(self.dimension)

    def noise(self, draw: int, index: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Standard-normal noise (fp32) for `draw` on the `index`-th selected parameter."""
        p = self.params[index]
        gen = torch.Generator(device=p.device)
        gen.manual_seed(derive_seed(self.seed, draw, self.names[index]))
        if out is None:
            out = torch.empty(p.shape, dtype=torch.float32, device=p.device)
        return out.normal_(generator=gen)

    def _buffer(self, index: int) -> torch.Tensor:
        # Fresh multi-MB tensors each draw cost page faults that rival the RNG itself: reuse buffers.
        p = self.params[index]
        if self.cache_noise:
            buf = self._buffers[index]
            if buf is None:
                buf = self._buffers[index] = torch.empty(p.shape, dtype=torch.float32, device=p.device)
            return buf
        key = str(p.device)
        if key not in self._scratch:
            size = max(q.numel() for q in self.params if q.device == p.device)
            self._scratch[key] = torch.empty(size, dtype=torch.float32, device=p.device)
        return self._scratch[key][: p.numel()].view(p.shape)

    def _draw_noise(self, draw: int) -> Iterator[torch.Tensor]:
        reuse = self.cache_noise and self._cached_draw == draw
        for j in range(len(self.params)):
            yield self._buffer(j) if reuse else self.noise(draw, j, out=self._buffer(j))
        self._cached_draw = draw if self.cache_noise else None

    @torch.no_grad()
    def apply(self, draw: int, sign: float = 1.0) -> None:
        """Set the selected weights to theta0 + sign * sigma * eps_draw (always from theta0)."""
        scale = sign * self.sigma
        for p, p0, z in zip(self.params, self.pristine, self._draw_noise(draw), strict=True):
            if p.dtype == torch.float32:
                # (scale * z) + p0 in place: no temporary, and the same rounding as theta0 + sigma*eps
                p.data.copy_(z).mul_(scale).add_(p0)
            else:
                p.data.copy_((p0.float() + scale * z).to(p.dtype))
        self.current = (draw, sign)

    @torch.no_grad()
    def restore(self) -> None:
        """Copy the pristine weights back: bit-exact, no arithmetic."""
        for p, p0 in zip(self.params, self.pristine, strict=True):
            p.data.copy_(p0)
        self.current = None

    @contextmanager
    def perturbed(self, draw: int, sign: float = 1.0) -> Iterator[None]:
        self.apply(draw, sign)
        try:
            yield
        finally:
            self.restore()


class EmbeddingNoise:
    """Smooths the input instead of the weights: iid N(0, sigma^2) on every position's input embedding.

    A forward hook on the input-embedding layer adds the noise. For draw i the noise stream comes
    from a generator seeded by (seed, i), consumed in call order, so a fixed evaluation order
    replays exactly. With this smoothing, substituting tokens moves the input by ||delta x||_2 and
    the randomized-smoothing bound is exact for the smoothed model (no weight-space heuristic).
    """

    def __init__(self, model: Any, sigma: float, seed: int) -> None:
        self.model = model
        self.sigma = float(sigma)
        self.seed = int(seed)
        self.layer = model.get_input_embeddings()
        self.names = [n for n, p in model.named_parameters() if p is self.layer.weight]
        self.dimension = int(self.layer.weight.shape[1])
        self._gen: torch.Generator | None = None
        self._handle: Any = None
        self.current: tuple[int, float] | None = None

    @property
    def typical_noise_norm(self) -> float:
        return self.sigma * math.sqrt(self.dimension)

    def _hook(self, _module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        assert self._gen is not None
        z = torch.randn(output.shape, generator=self._gen, dtype=torch.float32, device=output.device)
        return (output.float() + self._sign * self.sigma * z).to(output.dtype)

    def apply(self, draw: int, sign: float = 1.0) -> None:
        self.restore()
        self._gen = torch.Generator(device=self.layer.weight.device)
        self._gen.manual_seed(derive_seed(self.seed, draw, "input-embeddings"))
        self._sign = sign
        self._handle = self.layer.register_forward_hook(self._hook)
        self.current = (draw, sign)

    def restore(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self.current = None

    @contextmanager
    def perturbed(self, draw: int, sign: float = 1.0) -> Iterator[None]:
        self.apply(draw, sign)
        try:
            yield
        finally:
            self.restore()
