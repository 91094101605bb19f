"""Streaming reads of safetensors checkpoints and the exact float64 norm of their difference.

Tensors are located from validated safetensors headers and read in bounded chunks straight from the
file offsets (much faster than materialising tensors), so two multi-GB checkpoints are compared
without holding either in memory.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditor.errors import CheckpointError
from auditor.model.checkpoint import check_safetensors, weight_files

CHUNK_BYTES = 16 << 20
_BLOCK = 1 << 17  # float64 elements per arithmetic block (1 MiB: stays in cache)
ITEMSIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
FLOATS = ("F64", "F32", "F16", "BF16")
_NP = {"F64": np.float64, "F32": np.float32, "F16": np.float16}
MODEL_DTYPES = {"float64": "F64", "float32": "F32", "bfloat16": "BF16", "float16": "F16"}
_EXACT_UP = {("BF16", "F32"), ("BF16", "F64"), ("F16", "F32"), ("F16", "F64"), ("F32", "F64")}
# Config keys that change tensor shapes or the parameter layout: a different architecture altogether.


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes live: file, absolute offset, size, dtype, shape."""

    name: str
    path: Path
    offset: int
    nbytes: int
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def safetensors_refs(path: Path) -> dict[str, TensorRef]:
    """Parse and validate one safetensors header (no tensor data is read, nothing is unpickled)."""
    try:
        from safetensors import safe_open

        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n)) if 0 < n <= 100 << 20 else None
        if not isinstance(header, dict):
            raise ValueError("bad header length")
        with safe_open(str(path), framework="numpy"):  # the reference parser must accept it too
            pass
    except Exception as exc:  # safetensors raises its own error type
        raise CheckpointError(f"{path}: not a valid safetensors file ({str(exc).splitlines()[0]})") from exc
    refs = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, (start, end) = info["dtype"], info["data_offsets"]
            shape = tuple(int(s) for s in info["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: tensor {name}: malformed header entry") from exc
        if dtype not in ITEMSIZE:
            raise CheckpointError(f"{path}: tensor {name}: unsupported dtype {dtype}")
        if end - start != math.prod(shape) * ITEMSIZE[dtype]:
            raise CheckpointError(f"{path}: tensor {name}: byte size does not match {list(shape)} {dtype}")
        refs[name] = TensorRef(name, path, 8 + n + int(start), int(end - start), dtype, shape)
    check_safetensors(path)  # truncation: the data must reach the last offset
    return refs


def model_index(root: Path) -> dict[str, TensorRef]:
    """All tensors of a Hugging Face directory (single file or sharded index), by name."""
    out: dict[str, TensorRef] = {}
    for f in weight_files(root):
        for name, ref in safetensors_refs(f).items():
            if name in out:
                raise CheckpointError(f"{root}: tensor {name} is in both {out[name].path.name} and {f.name}")
            out[name] = ref
    index = root / "model.safetensors.index.json"
    if not (root / "model.safetensors").is_file() and index.is_file():  # the index is what is loaded
        for name, shard in json.loads(index.read_text())["weight_map"].items():
            if name not in out or out[name].path.name != shard:
                raise CheckpointError(f"{index}: lists tensor {name} in {shard}, which does not hold it")
    return out


@dataclass
class _Job:
    name: str
    a: TensorRef
    b: TensorRef
    r0: int
    r1: int
    start: int
    n: int


def _jobs(pairs: list[tuple[str, TensorRef, TensorRef]], chunk: int) -> list[_Job]:
    # Whole rows per chunk, so a low-rank term can be added row block by row block.
    jobs = []
    for name, a, b in pairs:
        rows = a.shape[0] if a.shape else 1
        rb = a.nbytes // rows if rows else 0
        step = max(1, chunk // max(rb, 1))
        for r0 in range(0, rows if rb else 0, step):
            r1 = min(rows, r0 + step)
            jobs.append(_Job(name, a, b, r0, r1, r0 * rb, (r1 - r0) * rb))
    return jobs


def _stream(jobs: list[_Job]) -> Iterator[tuple[_Job, memoryview, memoryview]]:
    """Yield each job's two byte ranges; the next pair is read on a thread while this one is used."""
    size = max([j.n for j in jobs], default=0)
    bufs = [(bytearray(size), bytearray(size)) for _ in range(2)]
    files: dict[Path, Any] = {}

    def read(ref: TensorRef, start: int, n: int, buf: bytearray) -> memoryview:
        f = files.get(ref.path) or files.setdefault(ref.path, open(ref.path, "rb", buffering=0))  # noqa: SIM115
        f.seek(ref.offset + start)
        view, got = memoryview(buf)[:n], 0
        while got < n:
            k = f.readinto(view[got:])
            if not k:
                raise CheckpointError(f"{ref.path}: truncated while reading tensor {ref.name}")
            got += k
        return view

    def load(i: int) -> tuple[memoryview, memoryview]:
        j, (ba, bb) = jobs[i], bufs[i % 2]
        return read(j.a, j.start, j.n, ba), read(j.b, j.start, j.n, bb)

    try:
        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(load, 0) if jobs else None
            for i, job in enumerate(jobs):
                va, vb = fut.result()  # type: ignore[union-attr]
                if i + 1 < len(jobs):
                    fut = pool.submit(load, i + 1)
                yield job, va, vb
    finally:
        for f in files.values():
            f.close()


def _round_to(x: np.ndarray, target: str) -> np.ndarray:
    # Round to the dtype the audit ran in (round-to-nearest-even, as torch's casts do).
    if target == "F16":
        return x.astype(np.float16)
    x = x.astype(np.float32, copy=False)
    if target == "BF16":
        u = x.view(np.uint32)
        return ((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) & np.uint32(0xFFFF0000)).view(np.float32)
    return x


def as_floats(view: memoryview | bytes, dtype: str, target: str | None = None) -> np.ndarray:
    """Raw little-endian bytes as a numpy float array (bf16 widened exactly to fp32), optionally rounded."""
    if dtype == "BF16":
        x = (np.frombuffer(view, np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif dtype in _NP:
        x = np.frombuffer(view, _NP[dtype])
    else:
        raise CheckpointError(f"dtype {dtype} is not a floating-point dtype")
    if target and target != dtype and (dtype, target) not in _EXACT_UP:
        x = _round_to(x, target)
    return x


def _equal(a: memoryview, b: memoryview) -> bool:
    w = np.uint64 if len(a) % 8 == 0 else np.uint8
    return bool(np.array_equal(np.frombuffer(a, w), np.frombuffer(b, w)))


def _squared_diff(x: np.ndarray, y: np.ndarray, extra: np.ndarray | None, scratch: np.ndarray) -> float:
    # Exact float64 differences (a difference of two floats fits in float64), in cache-sized blocks;
    # einsum rather than BLAS dot, whose threads stall on a busy machine.
    total = 0.0
    for i in range(0, len(x), _BLOCK):
        d = scratch[: min(_BLOCK, len(x) - i)]
        np.subtract(y[i : i + _BLOCK], x[i : i + _BLOCK], out=d, dtype=np.float64)
        if extra is not None:
            d += extra[i : i + _BLOCK]
        total += float(np.einsum("i,i->", d, d))
    return total


@dataclass
class DeltaStats:
    """||Delta||^2 per perturbed parameter, and the tensors changed outside the perturbed set."""

    squared: dict[str, float] = field(default_factory=dict)
    changed_outside: list[str] = field(default_factory=list)
    bytes_read: int = 0
    seconds: float = 0.0

    @property
    def norm(self) -> float:
        return math.sqrt(math.fsum(self.squared.values()))


def stream_delta(
    pairs: list[tuple[str, TensorRef, TensorRef]],
    perturbed: set[str],
    model_dtype: str | None = None,
    lowrank: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    chunk: int = CHUNK_BYTES,
    stats: DeltaStats | None = None,
) -> DeltaStats:
    """Stream (name, base, candidate) pairs: float64 ||c - b||^2 for perturbed names, bit equality else.

    `lowrank[name] = (L, R)` adds L @ R (row blocks) to that tensor's difference (an adapter on top of
    a replaced tensor). Memory: two pairs of `chunk`-byte buffers plus one float64 chunk.
    """
    stats = stats or DeltaStats()
    t0 = time.perf_counter()
    lowrank = lowrank or {}
    target = MODEL_DTYPES.get(model_dtype or "")
    scratch = np.empty(_BLOCK, np.float64)
    for job, va, vb in _stream(_jobs(pairs, chunk)):
        stats.bytes_read += 2 * job.n
        if job.name not in perturbed:
            if job.name not in stats.changed_outside and not _equal(va, vb):
                if job.b.dtype in FLOATS and not np.isfinite(as_floats(vb, job.b.dtype)).all():
                    raise CheckpointError(f"candidate tensor {job.name} is not finite (NaN or inf)")
                stats.changed_outside.append(job.name)
            continue
        x, y = as_floats(va, job.a.dtype, target), as_floats(vb, job.b.dtype, target)
        extra = None
        if job.name in lowrank:
            left, right = lowrank[job.name]
            extra = (left[job.r0 : job.r1] @ right).reshape(-1)
        s = _squared_diff(x, y, extra, scratch)
        if not math.isfinite(s):
            side = "base" if np.isfinite(y).all() else "candidate"
            raise CheckpointError(f"{side} tensor {job.name} is not finite (NaN or inf)")
        stats.squared[job.name] = stats.squared.get(job.name, 0.0) + s
    stats.seconds += time.perf_counter() - t0
    return stats


def tensor_rms_from_ref(ref: TensorRef, model_dtype: str | None = None, chunk: int = CHUNK_BYTES) -> float:
    """sqrt(mean(x^2)) of one stored tensor in float64, read in bounded chunks, as the audit's dtype sees it."""
    target = MODEL_DTYPES.get(model_dtype or "")
    if ref.dtype not in FLOATS:
        raise CheckpointError(f"{ref.path}: tensor {ref.name} has non-float dtype {ref.dtype}")
    step = max(chunk - chunk % ITEMSIZE[ref.dtype], ITEMSIZE[ref.dtype])
    total = 0.0
    with open(ref.path, "rb") as f:
        f.seek(ref.offset)
        for start in range(0, ref.nbytes, step):
            want = min(step, ref.nbytes - start)
            data = f.read(want)
            if len(data) != want:
                raise CheckpointError(f"{ref.path}: truncated while reading tensor {ref.name}")
            x = as_floats(data, ref.dtype, target).astype(np.float64)
            total += float(np.einsum("i,i->", x, x))
    return math.sqrt(total / max(ref.numel, 1))
