"""Gaussian perturbations theta0 + eps_i that any process can regenerate from (seed, i) alone.

Noise for draw i on parameter `name` comes from its own generator seeded by a hash of
(seed, i, name): a draw can be replayed, resumed or computed on another worker without replaying
the draws before it. Noise is added in fp32 and cast once to the parameter dtype; restoring copies
the pristine tensors back, so it is bit-exact whatever the dtype (the paper's code subtracted the
noise in bf16 and drifted).
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from auditor.audit.seeding import derive_seed

log = logging.getLogger(__name__)


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


# Noise scratch per device: tensors are perturbed in groups of at most this many elements (128 MiB of fp32),
# so a 70B model never needs a second full-size fp32 buffer.
CHUNK_ELEMENTS = 1 << 25
# Fraction of a device's free memory left for activations when deciding where the pristine copy lives.
PRISTINE_HEADROOM = 0.2


def pristine_homes(needed: dict[str, int], free: dict[str, float], scratch: int = 0) -> dict[str, str]:
    """Where each device keeps the pristine copy of its perturbed tensors: 'device' or 'host'.

    `needed[dev]` bytes of copies stay on `dev` when they, plus the noise scratch, fit in the free
    memory with PRISTINE_HEADROOM of it to spare for activations; otherwise they go to host memory
    (each draw then copies them back over the bus). CPU tensors are already on the host.
    """
    homes = {}
    for dev, nbytes in needed.items():
        fits = nbytes + scratch <= (1.0 - PRISTINE_HEADROOM) * free.get(dev, 0.0)
        homes[dev] = "device" if dev == "cpu" or fits else "host"
    return homes


def _free_bytes(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    return math.inf


class Perturber:
    """Applies eps_i ~ N(0, sigma^2 I) to the selected weights and restores them exactly.

    `scale='relative'`: tensor k gets std sigma_k = sigma * RMS(theta0_k) instead (same standard-normal
    stream, one scalar per tensor), computed from the pristine weights before any draw.

    Holds a pristine copy of every selected tensor (one extra copy of the perturbed subset), on the
    tensor's own device when memory allows, else on the host (`pristine='auto'`; force with 'device'
    or 'host'). Noise is generated on the device holding each tensor, from a generator seeded by
    (seed, draw, name), scaled in fp32 and applied with multi-tensor (`torch._foreach_*`) in-place
    ops, one group of tensors at a time; bf16/fp16 weights get theta0 + sigma*eps computed in fp32
    and cast once. Restoring is a copy. The arithmetic is the same on every device: on a CPU the
    weights equal `(theta0.float() + (sign*sigma) * eps).to(dtype)` bit for bit.

    `sign=-1` applies -eps_i (antithetic pairs); `cache_noise` keeps the last draw's sigma*eps so
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
        pristine: str = "auto",
        scale: str = "absolute",
    ) -> None:
        self.model = model
        self.sigma = float(sigma)
        self.scale = scale
        self.seed = int(seed)
        self.names = select_parameters(model, include, exclude)
        if not self.names:
            raise ValueError(f"perturbation.include {list(include)} / exclude {list(exclude)} select no parameters")
        params = dict(model.named_parameters())
        self.params = [params[n] for n in self.names]
        offloaded = [n for n, p in zip(self.names, self.params, strict=True) if p.device.type == "meta"]
        if offloaded:
            raise ValueError(
                f"{len(offloaded)} selected parameters (e.g. {offloaded[0]}) are offloaded by the device map and "
                "cannot be perturbed in place; give the model more device or host memory"
            )
        self.dimension = sum(p.numel() for p in self.params)
        self.cache_noise = cache_noise
        self._chunks = self._group()
        self.placement: dict[str, str] = {}
        self.pristine = self._pristine_copies(pristine)
        self.rms = self._relative_rms() if scale != "absolute" else None
        # Per-tensor std: sigma everywhere, or sigma * RMS(theta0_k), fixed here before any draw.
        self.stds = [self.sigma] * len(self.params) if self.rms is None else [self.sigma * r for r in self.rms]
        self._buffers: list[torch.Tensor | None] = [None] * len(self.params)
        self._scratch: dict[str, torch.Tensor] = {}
        self._cached_draw: int | None = None
        self._dirty = False
        self.current: tuple[int, float] | None = None

    @property
    def typical_noise_norm(self) -> float:
        """sigma * sqrt(d) (relative: sqrt(sum_k sigma_k^2 n_k)): the norm of one draw, not a radius."""
        if self.rms is None:
            return self.sigma * math.sqrt(self.dimension)
        return math.sqrt(sum(s * s * p.numel() for s, p in zip(self.stds, self.params, strict=True)))

    @property
    def tensor_rms(self) -> dict[str, float] | None:
        """RMS(theta0_k) per selected tensor name for relative noise (sigma_k = sigma * RMS), else None."""
        return None if self.rms is None else dict(zip(self.names, self.rms, strict=True))

    def _relative_rms(self) -> list[float]:
        if self.scale != "relative":
            raise ValueError(f"scale: expected absolute or relative, got {self.scale!r}")
        rms = [tensor_rms(p) for p in self.pristine]
        zero = [n for n, r in zip(self.names, rms, strict=True) if not (math.isfinite(r) and r > 0)]
        if zero:
            raise ValueError(
                f"scale: relative: {len(zero)} selected tensors (e.g. {zero[0]}) have RMS 0 or non-finite, so "
                "their noise would vanish; exclude them (perturbation.exclude)"
            )
        return rms

    def _group(self) -> list[list[int]]:
        """Indices of the selected tensors in groups of one device and dtype, each at most CHUNK_ELEMENTS."""
        by_kind: dict[tuple[str, torch.dtype], list[int]] = {}
        for j, p in enumerate(self.params):
            by_kind.setdefault((str(p.device), p.dtype), []).append(j)
        chunks: list[list[int]] = []
        for indices in by_kind.values():
            chunk: list[int] = []
            size = 0
            for j in indices:
                n = self.params[j].numel()
                if chunk and size + n > CHUNK_ELEMENTS:
                    chunks.append(chunk)
                    chunk, size = [], 0
                chunk.append(j)
                size += n
            chunks.append(chunk)
        return chunks

    def _pristine_copies(self, where: str) -> list[torch.Tensor]:
        if where not in ("auto", "device", "host"):
            raise ValueError(f"pristine: expected auto, device or host, got {where!r}")
        needed: dict[str, int] = {}
        devices: dict[str, torch.device] = {}
        for p in self.params:
            needed[str(p.device)] = needed.get(str(p.device), 0) + p.numel() * p.element_size()
            devices[str(p.device)] = p.device
        scratch = 4 * max((sum(self.params[j].numel() for j in c) for c in self._chunks), default=0)
        if where == "auto":
            self.placement = pristine_homes(needed, {d: _free_bytes(devices[d]) for d in needed}, scratch)
        else:
            self.placement = {d: ("device" if d == "cpu" else where) for d in needed}
        pin = torch.cuda.is_available()
        copies = []
        for p in self.params:
            if self.placement[str(p.device)] == "host" and p.device.type != "cpu":
                c = torch.empty(p.shape, dtype=p.dtype, device="cpu", pin_memory=pin)
                copies.append(c.copy_(p.detach()))
            else:
                copies.append(p.detach().clone())
        for dev, home in self.placement.items():
            self._log_placement(dev, home, needed[dev], devices[dev])
        return copies

    def _log_placement(self, dev: str, home: str, nbytes: int, device: torch.device) -> None:
        gib = nbytes / 2**30
        if dev == "cpu":
            log.info("pristine copy of the perturbed weights on cpu: %.2f GiB of host memory", gib)
        elif home == "device":
            log.info("pristine copy on %s: %.2f GiB of device memory; restore is a device-to-device copy", dev, gib)
        else:
            seconds = _estimate_h2d_seconds(nbytes, device)
            log.info(
                "pristine copy on the host for %s (%.2f GiB does not fit beside the model): each draw copies it "
                "back after the draw, about %.2f s per draw at the measured host-to-device bandwidth",
                dev,
                gib,
                seconds,
            )

    def noise(self, draw: int, index: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Standard-normal noise (fp32) for `draw` on the `index`-th selected parameter."""
        p = self.params[index]
        gen = torch.Generator(device=p.device)
        gen.manual_seed(derive_seed(self.seed, draw, self.names[index]))
        if out is None:
            out = torch.empty(p.shape, dtype=torch.float32, device=p.device)
        return out.normal_(generator=gen)

    def _chunk_buffers(self, chunk: list[int]) -> list[torch.Tensor]:
        # Fresh multi-MB tensors each draw cost page faults that rival the RNG itself: reuse buffers.
        if self.cache_noise:
            out = []
            for j in chunk:
                buf = self._buffers[j]
                if buf is None:
                    p = self.params[j]
                    buf = self._buffers[j] = torch.empty(p.shape, dtype=torch.float32, device=p.device)
                out.append(buf)
            return out
        device = self.params[chunk[0]].device
        key = str(device)
        if key not in self._scratch:
            size = max(
                sum(self.params[j].numel() for j in c) for c in self._chunks if str(self.params[c[0]].device) == key
            )
            self._scratch[key] = torch.empty(size, dtype=torch.float32, device=device)
        flat = self._scratch[key]
        out, offset = [], 0
        for j in chunk:
            n = self.params[j].numel()
            out.append(flat[offset : offset + n].view(self.params[j].shape))
            offset += n
        return out

    @torch.no_grad()
    def apply(self, draw: int, sign: float = 1.0) -> None:
        """Set the selected weights to theta0 + sign * sigma * eps_draw (always from theta0)."""
        if self._dirty:
            self.restore()
        self._dirty = True
        reuse = self.cache_noise and self._cached_draw == draw
        self._cached_draw = None  # until every buffer holds this draw's noise
        negate = self.cache_noise and sign < 0
        for chunk in self._chunks:
            ps: list[torch.Tensor] = [self.params[j] for j in chunk]
            zs = self._chunk_buffers(chunk)
            if not reuse:
                for j, z in zip(chunk, zs, strict=True):
                    self.noise(draw, j, out=z)
                # the cache holds sigma*eps; negating it for the antithetic half is exact
                factor = 1.0 if self.cache_noise else sign
                if self.rms is None:
                    torch._foreach_mul_(zs, self.sigma if self.cache_noise else sign * self.sigma)
                else:
                    torch._foreach_mul_(zs, [factor * self.stds[j] for j in chunk])
            if ps[0].dtype == torch.float32:
                (torch._foreach_sub_ if negate else torch._foreach_add_)(ps, zs)
                continue
            # other dtypes: the sum in fp32 (the weights are pristine here), one cast; the cache must survive
            if negate:
                zs = list(torch._foreach_neg(zs))
                torch._foreach_add_(zs, ps)
            elif self.cache_noise:
                zs = list(torch._foreach_add(zs, ps))
            else:
                torch._foreach_add_(zs, ps)
            torch._foreach_copy_(ps, zs)
        self._cached_draw = draw if self.cache_noise else None
        self.current = (draw, sign)

    @torch.no_grad()
    def restore(self) -> None:
        """Copy the pristine weights back: bit-exact, no arithmetic."""
        for chunk in self._chunks:
            ps: list[torch.Tensor] = [self.params[j] for j in chunk]
            torch._foreach_copy_(ps, [self.pristine[j] for j in chunk], non_blocking=True)
        self._dirty = False
        self.current = None

    @contextmanager
    def perturbed(self, draw: int, sign: float = 1.0) -> Iterator[None]:
        self.apply(draw, sign)
        try:
            yield
        finally:
            self.restore()


def tensor_rms(t: torch.Tensor) -> float:
    """sqrt(mean(t^2)) accumulated in float64 (the gate recomputes it from the checkpoint bytes)."""
    return math.sqrt(float(t.detach().to(torch.float64).square().sum().item()) / max(t.numel(), 1))


def _estimate_h2d_seconds(nbytes: int, device: torch.device) -> float:
    """Seconds to copy `nbytes` from pinned host memory to `device`, from one timed 64 MiB copy."""
    import time

    n = min(nbytes, 64 << 20)
    src = torch.empty(n, dtype=torch.uint8, pin_memory=True)
    dst = torch.empty(n, dtype=torch.uint8, device=device)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize(device)
    return nbytes / max(n / max(time.perf_counter() - t0, 1e-9), 1.0)


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
