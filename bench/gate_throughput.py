"""Gate throughput: is ||theta_ft - theta0|| as fast as just reading the two checkpoints?

Creates two fp32 safetensors checkpoints (base: random; candidate: base + a small change) in a temp
dir, then times, in the same run:
  raw read        sequential 8 MiB reads of both files
  safe_open       safetensors safe_open + get_tensor (+ clone, so the lazy mapping is really read)
  gate read path  the gate's own reader (row-chunked reads, one pair ahead on a thread), no arithmetic
  gate ||Delta||  the gate's stream: float64 ||c - b||^2 over every tensor
  full gate       the `auditor gate` work: sha256 of both trees + header checks + ||Delta|| + verdict
and the LoRA gate for a synthesised rank-16 adapter on 4096x4096 q/v projections in 32 layers.
The whole page cache cannot be dropped here, so every row is timed twice: warm (both files read once
first) and cold (these two files evicted with posix_fadvise before each run); medians of --repeats.

    python bench/gate_throughput.py [--size-gb 2] [--repeats 3] [--no-cold] [--write]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
COLS = 4096
READ = "gate read path (no arithmetic)"
DELTA = "gate ||Delta|| (float64)"


def make_checkpoints(root: Path, size_gb: float, n_tensors: int) -> tuple[Path, Path, list[str], float]:
    """Base (random fp32) and candidate (base + N(0, 1e-4^2) on every tensor); returns the true ||Delta||."""
    import torch
    from safetensors.torch import save_file

    rows = max(1, int(size_gb * 2**30 / 4 / COLS / n_tensors))
    names = [f"model.layers.{i}.mlp.weight" for i in range(n_tensors)]
    gen = torch.Generator().manual_seed(0)
    tensors = {n: torch.randn(rows, COLS, generator=gen) * 0.02 for n in names}
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "tie_word_embeddings": False}
    base, cand = root / "base", root / "candidate"
    for d in (base, cand):
        d.mkdir()
        (d / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(base / "model.safetensors"))
    sq = 0.0
    for n in names:
        delta = torch.randn(rows, COLS, generator=gen) * 1e-4
        sq += float((delta.double() ** 2).sum())  # approximately the true ||Delta||^2 (fp32 rounding aside)
        tensors[n] += delta
    save_file(tensors, str(cand / "model.safetensors"))
    return base, cand, names, math.sqrt(sq)


def certificate(base: Path, names: list[str], dimension: int):
    """A minimal certificate over every tensor of `base` (sigma 0.01, p_lower 0.9, target 0.5)."""
    from scipy.stats import norm

    from auditor.certificate.schema import (
        BoundCurve,
        Certificate,
        PerturbationRecord,
        PolicyRecord,
        SamplingRecord,
        TaskResult,
        ToolRecord,
    )
    from auditor.model.checkpoint import model_identity
    from auditor.version import __version__

    sigma, p, q = 0.01, 0.9, 0.5
    radius = sigma * (norm.ppf(p) - norm.ppf(q))
    task = TaskResult(
        name="bench",
        description={},
        n_examples=1,
        clean_score=p,
        draws=1,
        evaluations=1,
        p_hat=p,
        p_lower=p,
        p_upper=1.0,
        statistical_slack=0.0,
        loss_under_noise=0.0,
        target=q,
        radius=radius,
        radius_weak=radius,
        radius_over_sigma=radius / sigma,
        curve=BoundCurve(delta_norm=[0.0], strong=[p], weak=[p]),
        min_p_lower=None,
        min_radius=None,
        verdict="pass",
        reasons=[],
    )
    return Certificate(
        run_id="bench",
        tool=ToolRecord(name="auditor", version=__version__, versions={}),
        started="",
        finished="",
        model=model_identity("bench", base, "float32", dimension),
        seed=0,
        policy=PolicyRecord(path=None, sha256="0" * 64, text="schema_version: 1\n"),
        perturbation=PerturbationRecord(
            space="weights",
            sigma=sigma,
            include=["*"],
            exclude=[],
            parameters=names,
            parameters_digest="",
            dimension=dimension,
            typical_noise_norm=sigma * math.sqrt(dimension),
        ),
        sampling=SamplingRecord(
            design="batched",
            bound="betting",
            exact=True,
            anytime_valid=True,
            sequential=False,
            draws_planned=1,
            draws_used=1,
            batch_size=1,
            subset=None,
            randomised_rounding=False,
            alpha=0.01,
            alpha_per_task=0.01,
            correction="none",
        ),
        tasks=[task],
        verdict="pass",
        reasons=[],
    )


def raw_read(paths: list[Path]) -> int:
    buf = memoryview(bytearray(8 << 20))
    total = 0
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total


def safe_open_read(paths: list[Path]) -> None:
    from safetensors import safe_open

    for p in paths:
        with safe_open(str(p), framework="pt") as f:
            for k in f.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                f.get_tensor(k).clone()  # get_tensor maps the file lazily: clone makes it a real read


def evict(paths: list[Path]) -> None:
    """Drop these files' pages from the page cache (posix_fadvise: no root needed) for a cold read."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn, repeats: int, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_adapter(root: Path, rank: int = 16, layers: int = 32, dim: int = 4096) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {}
    for i in range(layers):
        for proj in ("q_proj", "v_proj"):
            key = f"base_model.model.model.layers.{i}.self_attn.{proj}"
            tensors[f"{key}.lora_A.weight"] = rng.standard_normal((rank, dim), np.float32) * 0.01
            tensors[f"{key}.lora_B.weight"] = rng.standard_normal((dim, rank), np.float32) * 0.01
    adapter = root / "adapter"
    adapter.mkdir()
    save_file(tensors, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj", "v_proj"]})
    )
    return adapter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=2.0, help="Size of each checkpoint (GiB).")
    ap.add_argument("--tensors", type=int, default=16, help="Tensors per checkpoint.")
    ap.add_argument("--repeats", type=int, default=3, help="Timed repeats (median reported).")
    ap.add_argument("--dir", type=Path, help="Scratch directory (default: a temp dir).")
    ap.add_argument("--no-cold", action="store_true", help="Skip the cold (evicted page cache) runs.")
    ap.add_argument("--write", action="store_true", help="Write reports/gate_throughput.md.")
    args = ap.parse_args()

    from auditor.gate.lora import lora_delta, read_adapter
    from auditor.gate.radius import gate_checkpoint
    from auditor.model.tensor_stream import _jobs, _stream, model_index, stream_delta

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        t0 = time.perf_counter()
        base, cand, names, true_norm = make_checkpoints(Path(tmp), args.size_gb, args.tensors)
        files = [base / "model.safetensors", cand / "model.safetensors"]
        nbytes = sum(f.stat().st_size for f in files)
        print(f"created 2 x {nbytes / 2 / 1e9:.2f} GB in {time.perf_counter() - t0:.1f}s; warming the cache")
        raw_read(files)  # warm: both files in the page cache before any timing
        bidx, cidx = model_index(base), model_index(cand)
        pairs = [(n, bidx[n], cidx[n]) for n in names]
        dimension = sum(r.numel for r in bidx.values())
        cert = certificate(base, names, dimension)

        def read_path() -> None:
            for _ in _stream(_jobs(pairs, 16 << 20)):
                pass

        runs = {
            "raw read (8 MiB sequential reads)": lambda: raw_read(files),
            "safe_open + get_tensor + clone": lambda: safe_open_read(files),
            "gate read path (no arithmetic)": read_path,
            DELTA: lambda: stream_delta(pairs, set(names)),
            "full gate (sha256 of both + ||Delta|| + verdict)": lambda: gate_checkpoint(cert, cand, base),
        }
        norm = stream_delta(pairs, set(names)).norm
        gate = gate_checkpoint(cert, cand, base)
        warm = {name: timed(fn, args.repeats) for name, fn in runs.items()}
        cold = {}
        if not args.no_cold:
            cold = {name: timed(fn, args.repeats, lambda: evict(files)) for name, fn in runs.items()}

        adapter = make_adapter(Path(tmp))
        ad = read_adapter(adapter)
        lora_s = timed(lambda: lora_delta(read_adapter(adapter), {n for n in ad.lowrank}, None, "float32"), 5)
        lr = next(iter(ad.lowrank.values()))
        dense_one = timed(lambda: float(np.linalg.norm(lr.left @ lr.right)), 3)
        adapter_mb = (adapter / "adapter_model.safetensors").stat().st_size / 1e6

    gb = nbytes / 1e9
    lines = [
        f"# Gate throughput: 2 x {gb / 2:.2f} GB fp32 checkpoints ({args.tensors} tensors each)",
        "",
        f"Machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end of the run "
        "(the machine is shared). Warm: both files read once before timing, every row from the page cache, "
        f"median of {args.repeats}. Cold: both files evicted from this machine's page cache (posix_fadvise "
        f"DONTNEED) before each run, median of {args.repeats}; the virtual disk's host may still cache them.",
        "",
        "| measurement | warm s | warm GB/s | warm vs read path | cold s | cold GB/s | cold vs read path |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in warm:
        row = f"| {name} | {warm[name]:.2f} | {gb / warm[name]:.2f} | {warm[READ] / warm[name]:.2f}x |"
        if cold:
            row += f" {cold[name]:.2f} | {gb / cold[name]:.2f} | {cold[READ] / cold[name]:.2f}x |"
        else:
            row += " | | |"
        lines.append(row)
    lines += [
        "",
        f"GB/s counts the bytes of both checkpoints. ||Delta|| from the gate: {norm:.6f} (generated: "
        f"{true_norm:.6f}); verdict {gate.verdict}. Target: gate ||Delta|| >= 0.8x the read path; measured "
        f"{warm[READ] / warm[DELTA]:.2f}x warm" + (f", {cold[READ] / cold[DELTA]:.2f}x cold." if cold else "."),
        "",
        "| LoRA gate (rank 16, q/v 4096x4096, 32 layers, fp32) | value |",
        "|---|---:|",
        f"| adapter size | {adapter_mb:.1f} MB |",
        f"| Gram-matrix gate: read adapter + ||Delta|| | {lora_s * 1e3:.1f} ms |",
        f"| dense ||B A||_F of one module, for scale | {dense_one * 1e3:.1f} ms "
        f"(x{len(ad.lowrank)} modules = {dense_one * len(ad.lowrank):.2f} s) |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        out = ROOT / "reports" / "gate_throughput.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
