"""Does GO widen the basin? A CPU-sized version of the paper's ablation, measured with the auditor itself.

Per seed, three copies of one tiny GPT-2 (same init, same data order) are pre-trained from scratch
on two-digit addition with AdamW, SAM (around AdamW) and GO (around AdamW), the same number of
steps; then each is fine-tuned with plain AdamW on subtraction (the shifted task). Per optimizer:

- clean score S(theta) on held-out additions (exact match of the 3 answer tokens, greedy);
- p_lower at a fixed sigma: `auditor.certify_model` with a ScorerTask, batched design, betting bound;
- the certified basin edge sigma*: the sigma grid certified in ascending order at level alpha, stopping
  at the first p_lower below the threshold (fixed-sequence testing: family-wise error <= alpha, no split);
- landscape slices: S(theta + a * delta) for random delta ~ N(0, I) (unnormalised) over a range of a;
- forgetting: addition score before minus after the subtraction fine-tune;
- wall time of pre-training, GO and SAM over AdamW in the same run.

Means over seeds with 95% t-intervals; differences to AdamW are paired by seed.
Answers are written reversed (least significant digit first), so the carry flows left to right.

Run: python bench/go_basin.py [--seeds 5] [--steps 1000] [--quick] [--out reports/go]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOCAB = "0123456789+-="
TOK = {c: i for i, c in enumerate(VOCAB)}
PROMPT_LEN, ANSWER_LEN = 6, 3  # "ab+cd=" then 3 reversed answer digits
OPTIMIZERS = ("adamw", "sam", "go")


def encode(a: int, b: int, op: str) -> list[int]:
    c = a + b if op == "+" else a - b
    return [TOK[ch] for ch in f"{a:02d}{op}{b:02d}=" + f"{c:03d}"[::-1]]


def problems(op: str) -> list[tuple[int, int]]:
    pairs = [(a, b) for a in range(100) for b in range(100)]
    return [(a, b) for a, b in pairs if op == "+" or a >= b]


@dataclass
class Split:
    train: np.ndarray  # (n, 9) token ids
    test: np.ndarray


def make_split(op: str, n_test: int, seed: int) -> Split:
    """Held-out test problems drawn from (seed, op); the rest is the training pool."""
    from auditor.audit.perturb import derive_seed

    rows = np.array([encode(a, b, op) for a, b in problems(op)], dtype=np.int64)
    order = np.random.default_rng(derive_seed(seed, op, "split")).permutation(len(rows))
    return Split(train=rows[order[n_test:]], test=rows[order[:n_test]])


def make_model(args: argparse.Namespace, seed: int) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(VOCAB),
        n_positions=PROMPT_LEN + ANSWER_LEN,
        n_embd=args.width,
        n_layer=args.layers,
        n_head=args.heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def answer_logits(model: Any, rows: Any) -> Any:
    """Logits that predict the answer tokens (positions 5..7 predict tokens 6..8)."""
    return model(input_ids=rows).logits[:, PROMPT_LEN - 1 : -1]


def loss_fn(model: Any, rows: Any) -> Any:
    import torch

    logits = answer_logits(model, rows)
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, PROMPT_LEN:].reshape(-1))


def correct(model: Any, rows: Any) -> np.ndarray:
    """1 where greedy decoding gives the whole answer: teacher-forced argmax right at every answer position."""
    import torch

    with torch.no_grad():
        pred = answer_logits(model, rows).argmax(-1)
    return (pred == rows[:, PROMPT_LEN:]).all(-1).to(torch.uint8).numpy()


def scorer_task(name: str, rows: Any) -> Any:
    """A ScorerTask (one 0/1 per example) that scores a whole batch in one forward pass."""
    from auditor import ScorerTask

    class BatchedScorer(ScorerTask):
        def evaluate(self, model: Any, tokenizer: Any, indices: Sequence[int], batch_size: int) -> np.ndarray:
            return correct(model, rows[list(indices)])

    return BatchedScorer(name, list(range(len(rows))), lambda model, i: int(correct(model, rows[i : i + 1])[0]))


def train(
    model: Any,
    data: np.ndarray,
    args: argparse.Namespace,
    kind: str,
    steps: int,
    seed: int,
    lr: float,
    on_step: Callable[[int], None] | None = None,
) -> float:
    """Train in place; returns CPU seconds (one thread). Batches depend on the seed alone: same for every optimizer."""
    import torch

    from auditor.audit.perturb import derive_seed
    from auditor.optim import SAM, GaussianAugmented

    model.train()
    base = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=args.weight_decay)
    opt: torch.optim.Optimizer = base
    if kind == "sam":
        opt = SAM(base, rho=args.sam_rho)
    elif kind == "go":
        opt = GaussianAugmented(model, base, sigma=args.go_sigma, seed=seed, relative=args.go_relative)
    warmup = max(1, steps // 20)  # linear warm-up, then cosine decay to 0: the last weights are a settled model
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    )
    rng = np.random.default_rng(derive_seed(seed, "batches", len(data)))
    rows_all = torch.from_numpy(data)
    t0 = time.process_time()  # this process's CPU time: on a shared machine, wall time mostly measures the others
    for step in range(steps):
        rows = rows_all[torch.from_numpy(rng.integers(0, len(data), args.batch))]
        if isinstance(opt, SAM):
            opt.step(lambda rows=rows: _backward(model, rows))
        elif isinstance(opt, GaussianAugmented):
            with opt.perturbed():
                _backward(model, rows)
            opt.step()
        else:
            _backward(model, rows)
            opt.step()
        opt.zero_grad()
        sched.step()
        if on_step is not None:
            on_step(step + 1)
    model.eval()
    return time.process_time() - t0


def _backward(model: Any, rows: Any) -> Any:
    loss = loss_fn(model, rows)
    loss.backward()
    return loss.detach()


def certify(model: Any, task: Any, sigma: float, seed: int, args: argparse.Namespace) -> float:
    from auditor import certify_model

    cert = certify_model(
        model, [task], sigma=sigma, seed=seed, alpha=args.alpha, draws=args.draws, design="batched", bound="betting"
    )
    return float(cert.tasks[0].p_lower)


def basin_edge(model: Any, task: Any, grid: Sequence[float], seed: int, args: argparse.Namespace) -> tuple[float, list]:
    """sigma* by fixed-sequence testing, and p_lower at every grid point (the curve, for display only)."""
    curve = [certify(model, task, s, seed, args) for s in grid]
    edge = 0.0
    for s, p in zip(grid, curve, strict=True):
        if p < args.threshold:
            break
        edge = s
    return edge, curve


def slices(model: Any, rows: Any, scales: Sequence[float], seed: int, n_dirs: int) -> np.ndarray:
    """S(theta + a * delta_j), delta_j ~ N(0, I) fixed by (seed, j); rows: directions, columns: scales."""
    from auditor.audit.perturb import Perturber

    out = np.zeros((n_dirs, len(scales)))
    for k, a in enumerate(scales):
        pert = Perturber(model, abs(a), seed)
        for j in range(n_dirs):
            with pert.perturbed(j, 1.0 if a >= 0 else -1.0):
                out[j, k] = correct(model, rows).mean()
    return out


@dataclass
class Run:
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    slices: dict[str, list[list[float]]] = field(default_factory=dict)
    forgetting: dict[str, list[list[float]]] = field(default_factory=dict)  # [ft step, addition, subtraction]


def run_seed(seed: int, args: argparse.Namespace, grid: list[float], scales: list[float]) -> Run:
    import copy

    import torch

    add, sub = make_split("+", args.eval_n, seed), make_split("-", args.eval_n, seed)
    add_test, sub_test = torch.from_numpy(add.test), torch.from_numpy(sub.test)
    task = scorer_task("addition", add_test)
    run = Run()
    probe_steps = {args.ft_probe, args.ft_steps, *(int(args.ft_steps * f) for f in (0.01, 0.025, 0.05, 0.1, 0.25, 0.5))}
    for kind in OPTIMIZERS:
        model = make_model(args, seed)
        run.seconds[kind] = train(model, add.train, args, kind, args.steps, seed, args.lr)
        clean = float(correct(model, add_test).mean())
        p_fixed = certify(model, task, args.sigma, seed, args)
        edge, curve = basin_edge(model, task, grid, seed, args)
        run.slices[kind] = slices(model, add_test, scales, seed, args.slice_dirs).tolist()
        tuned = copy.deepcopy(model)
        probes: dict[int, tuple[float, float]] = {0: (clean, float(correct(tuned, sub_test).mean()))}

        def probe(step: int, tuned: Any = tuned, probes: dict = probes) -> None:
            if step in probe_steps:
                probes[step] = (float(correct(tuned, add_test).mean()), float(correct(tuned, sub_test).mean()))

        train(tuned, sub.train, args, "adamw", args.ft_steps, seed + 10_000, args.ft_lr, probe)
        after = float(correct(tuned, add_test).mean())
        run.forgetting[kind] = [[k, *v] for k, v in sorted(probes.items())]
        run.metrics[kind] = {
            "clean": clean,
            "p_lower": p_fixed,
            "sigma_star": edge,
            "add_at_probe": probes[args.ft_probe][0],
            "sub_at_probe": probes[args.ft_probe][1],
            "add_after_ft": after,
            "forgetting": clean - after,
            "sub_after_ft": float(correct(tuned, sub_test).mean()),
        }
        run.curves[kind] = curve
        print(f"seed {seed} {kind:5s} {run.seconds[kind]:6.1f}s " + json.dumps(run.metrics[kind]), flush=True)
    return run


def t_interval(x: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the two-sided t-interval (n - 1 dof); nan half-width for one value."""
    from scipy import stats as sps

    a = np.asarray(x, dtype=float)
    if len(a) < 2:
        return float(a.mean()), float("nan")
    half = sps.t.ppf(0.5 + level / 2, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a))
    return float(a.mean()), float(half)


def fmt(x: Sequence[float], digits: int = 3) -> str:
    m, h = t_interval(x)
    return f"{m:.{digits}f}" if math.isnan(h) else f"{m:.{digits}f} ± {h:.{digits}f}"


METRICS = [
    ("clean", "clean S(θ) addition"),
    ("p_lower", "p_lower at σ_fix"),
    ("sigma_star", "certified edge σ*"),
    ("add_at_probe", "addition after probe FT steps"),
    ("sub_at_probe", "subtraction after probe FT steps"),
    ("add_after_ft", "addition after FT"),
    ("forgetting", "forgetting (before − after)"),
    ("sub_after_ft", "subtraction after FT"),
]


def report(runs: list[Run], args: argparse.Namespace, grid: list[float], cpu_s: float, wall_s: float) -> str:
    seeds = list(range(args.seed0, args.seed0 + args.seeds))
    lines = [
        "# GO vs SAM vs AdamW: basin width and forgetting, certified by the auditor",
        "",
        f"Generated by `{' '.join(['python bench/go_basin.py', *args.argv])}`. Tiny GPT-2 "
        f"({args.layers} layers, width {args.width}, {count_params(args):,} parameters) pre-trained from scratch on "
        f"two-digit addition for {args.steps} steps (batch {args.batch}, AdamW lr {args.lr}, warm-up then cosine "
        "decay), then fine-tuned with "
        f"AdamW (lr {args.ft_lr}) on subtraction for {args.ft_steps} steps. Seeds {seeds}: each seed fixes the "
        f"init, the data order and the held-out sets, shared by the three optimizers. GO: σ = {args.go_sigma}"
        f"{' × per-tensor RMS' if args.go_relative else ' (absolute)'}; SAM: ρ = {args.sam_rho}. "
        f"Scores on {args.eval_n} held-out problems (exact match of the whole answer).",
        "",
        f"Certification: `certify_model`, batched design, betting bound, {args.draws} draws, α = {args.alpha} per "
        f"certificate. p_lower at σ_fix = {args.sigma}. σ* = the largest σ of the grid "
        f"{[round(s, 4) for s in grid]} reached by certifying in ascending order with p_lower ≥ {args.threshold}, "
        f"stopping at the first failure (fixed-sequence testing: family-wise error ≤ α).",
        "",
        f"Mean ± 95% t-interval over {len(runs)} seeds.",
        "",
        "| metric | " + " | ".join(OPTIMIZERS) + " |",
        "|---|" + "---|" * len(OPTIMIZERS),
    ]
    metrics = [(k, label.replace("probe", str(args.ft_probe))) for k, label in METRICS]
    for key, label in metrics:
        lines.append(f"| {label} | " + " | ".join(fmt([r.metrics[k][key] for r in runs]) for k in OPTIMIZERS) + " |")
    lines.append(
        "| pre-training CPU s | " + " | ".join(fmt([r.seconds[k] for r in runs], 1) for k in OPTIMIZERS) + " |"
    )
    lines += ["", "Paired differences to AdamW (same seed), mean ± 95% t-interval:", ""]
    lines += ["| metric | sam − adamw | go − adamw |", "|---|---|---|"]
    verdicts = []
    for key, label in metrics:
        cells = []
        for k in ("sam", "go"):
            d = [r.metrics[k][key] - r.metrics["adamw"][key] for r in runs]
            cells.append(fmt(d))
            m, h = t_interval(d)
            if k == "go" and key in ("sigma_star", "p_lower", "forgetting", "add_at_probe") and not math.isnan(h):
                sign = "excludes 0" if abs(m) > h else "includes 0"
                verdicts.append(f"- GO − AdamW, {label}: {m:+.4f} ± {h:.4f} ({sign}).")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    steps = [int(row[0]) for row in runs[0].forgetting["adamw"]]
    lines += ["", "Addition score along the subtraction fine-tune (the forgetting curve), mean ± 95% t-interval:", ""]
    lines += ["| FT step | " + " | ".join(OPTIMIZERS) + " | go − adamw (paired) |", "|---|" + "---|" * 4]
    for i, step in enumerate(steps):
        cells = [fmt([r.forgetting[k][i][1] for r in runs]) for k in OPTIMIZERS]
        cells.append(fmt([r.forgetting["go"][i][1] - r.forgetting["adamw"][i][1] for r in runs]))
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    ratio = {k: [r.seconds[k] / r.seconds["adamw"] for r in runs] for k in ("sam", "go")}
    lines += [
        "",
        f"Overhead of pre-training over AdamW (same run, per-seed ratios of process CPU time): SAM × "
        f"{fmt(ratio['sam'], 2)}, GO × {fmt(ratio['go'], 2)}. Measured on a shared 2-core CPU with torch threads = 1 "
        "and other jobs running (CPU time, not wall time, for that reason): indicative; GO's extra work is one "
        "backup copy, one RNG draw and one restore per micro-batch, "
        "SAM's a second forward and backward.",
        "",
        "Outcome (intervals over seeds; an interval that includes 0 means no effect was shown at this size):",
        "",
        *verdicts,
        "",
        f"Whole bench: {cpu_s / 60:.1f} CPU minutes, {wall_s / 60:.1f} wall minutes.",
        "",
        "![p_lower vs sigma](basin.png) ![landscape slices](slices.png) ![forgetting](forgetting.png)",
        "",
    ]
    return "\n".join(lines)


def count_params(args: argparse.Namespace) -> int:
    return sum(p.numel() for p in make_model(args, 0).parameters())


def figures(runs: list[Run], grid: list[float], scales: list[float], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"adamw": "tab:gray", "sam": "tab:blue", "go": "tab:red"}
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for k in OPTIMIZERS:
        curves = np.array([r.curves[k] for r in runs])
        ax.plot(grid, curves.mean(0), "o-", ms=3, color=colors[k], label=k)
        ax.fill_between(grid, curves.min(0), curves.max(0), color=colors[k], alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("σ (absolute, all parameters)")
    ax.set_ylabel("p_lower (addition)")
    ax.set_title("certified smoothed score: mean, band = min..max over seeds", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "basin.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for k in OPTIMIZERS:
        s = np.array([np.mean(r.slices[k], axis=0) for r in runs])
        ax.plot(scales, s.mean(0), "-", color=colors[k], label=k)
        ax.fill_between(scales, s.min(0), s.max(0), color=colors[k], alpha=0.15)
    ax.set_xlabel("a   (θ + a·δ,  δ ~ N(0, I))")
    ax.set_ylabel("score (addition)")
    ax.set_title("random-direction slices: mean over directions and seeds", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "slices.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for k in OPTIMIZERS:
        f = np.array([r.forgetting[k] for r in runs])  # seeds x probes x (step, addition, subtraction)
        ax.plot(f[0, :, 0], f[:, :, 1].mean(0), "o-", ms=3, color=colors[k], label=f"{k}: addition (old)")
        ax.plot(f[0, :, 0], f[:, :, 2].mean(0), "s--", ms=3, color=colors[k], label=f"{k}: subtraction (new)")
    ax.set_xlabel("fine-tuning step (AdamW, subtraction only)")
    ax.set_ylabel("score (mean over seeds)")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_title("forgetting during the fine-tune", fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "forgetting.png")
    plt.close(fig)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--seed0", type=int, default=0)
    p.add_argument("--steps", type=int, default=1000, help="pre-training steps")
    p.add_argument("--ft-steps", type=int, default=200, help="fine-tuning steps on the shifted task")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--ft-probe", type=int, default=10, help="fine-tuning step at which forgetting is also reported")
    p.add_argument("--ft-lr", type=float, default=5e-4, help="fine-tuning learning rate")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--go-sigma", type=float, default=0.02)
    p.add_argument("--go-relative", action="store_true", help="GO sigma as a fraction of each tensor's RMS")
    p.add_argument("--sam-rho", type=float, default=0.05)
    p.add_argument("--eval-n", type=int, default=256, help="held-out problems per task")
    p.add_argument("--draws", type=int, default=32)
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--sigma", type=float, default=0.03, help="sigma of the fixed-sigma p_lower")
    p.add_argument("--grid", type=str, default="0.01,0.015,0.02,0.025,0.03,0.035,0.04,0.05,0.06,0.08,0.1")
    p.add_argument("--threshold", type=float, default=0.5, help="p_lower a grid point must reach")
    p.add_argument("--slice-dirs", type=int, default=3)
    p.add_argument("--slice-max", type=float, default=0.1)
    p.add_argument("--slice-points", type=int, default=17)
    p.add_argument("--quick", action="store_true", help="seconds: 2 seeds, a few steps (a smoke test)")
    p.add_argument("--out", type=Path, default=Path("reports/go"))
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.seeds, args.steps, args.ft_steps, args.ft_probe, args.batch = 2, 6, 4, 2, 16
        args.eval_n, args.draws, args.grid, args.slice_dirs, args.slice_points = 32, 3, "0.01,0.05", 1, 3
        args.layers, args.width = 1, 32
    return args


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    torch.set_num_threads(1)
    args = parse(argv)
    grid = sorted(float(s) for s in args.grid.split(","))
    scales = list(np.linspace(-args.slice_max, args.slice_max, args.slice_points))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    runs = [run_seed(s, args, grid, scales) for s in range(args.seed0, args.seed0 + args.seeds)]
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    args.out.mkdir(parents=True, exist_ok=True)
    figures(runs, grid, scales, args.out)
    text = report(runs, args, grid, cpu_s, wall_s)
    (args.out / "go_basin.md").write_text(text, encoding="utf-8")
    raw = [{"seconds": r.seconds, "metrics": r.metrics, "curves": r.curves, "forgetting": r.forgetting} for r in runs]
    (args.out / "go_basin.json").write_text(json.dumps({"grid": grid, "runs": raw}, indent=1), encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
