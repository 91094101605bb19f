"""How many model evaluations each design needs to certify p_lower >= p_hat - tol (alpha = 0.01).

Baseline: the Cohen-style design (one fresh noise per example, Clopper-Pearson on the 0/1 outcomes).
Compared: batched and antithetic draws with the betting confidence sequence (and Hoeffding /
empirical Bernstein for reference), on synthetic per-draw score distributions shaped like a basin
and like independent Bernoulli examples, and on per-draw scores measured on the real default model.

Cost is counted two ways, because they differ by design: noise draws (a full perturbation of the
weights: the RNG dominates on a CPU) and example evaluations (forward passes per example).
Also: how early sequential stopping decides a clear pass / fail against a fixed-n budget.

Run: python bench/draws_to_certify.py [--reps 30] [--real reports/<run>/draws.jsonl] [--write]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from auditor import stats  # noqa: E402

ALPHA, TOL, M = 0.01, 0.02, 24  # level, target gap, examples per batched draw
MAX_DRAWS = 20_000


def basin(rng: np.random.Generator, n: int) -> np.ndarray:
    """Basin-like: every example answered the same way under most draws; a draw flips ~1 of 24."""
    flips = rng.binomial(M, 0.02, size=n) - rng.binomial(M, 0.02, size=n)
    return np.clip(19 + flips, 0, M) / M


def independent(rng: np.random.Generator, n: int) -> np.ndarray:
    """Bernoulli-like: each example is an independent coin under each draw (no basin coherence)."""
    return rng.binomial(M, 0.8, size=n) / M


def antithetic_basin(rng: np.random.Generator, n: int) -> np.ndarray:
    """Pair means when a draw's effect is mostly odd in eps (the linear term cancels in the pair)."""
    lin = rng.normal(0, 1.5, size=n)
    plus = np.clip(np.round(19 + lin + rng.normal(0, 0.4, size=n)), 0, M)
    minus = np.clip(np.round(19 - lin + rng.normal(0, 0.4, size=n)), 0, M)
    return (plus + minus) / (2 * M)


def draws_needed_sequential(x: np.ndarray, alpha: float, tol: float) -> int | None:
    """First n at which the betting lower bound reaches mean - tol (anytime-valid, so any n is fair)."""
    seq = stats.BettingSequence(alpha)
    for i, v in enumerate(x, 1):
        seq.update(float(v))
        if i >= 2 and seq.lower >= seq.mean - tol:
            return i
    return None


def draws_needed_fixed(x: np.ndarray, method: str, alpha: float, tol: float) -> int | None:
    """Smallest n on a geometric grid at which the fixed-n bound reaches mean - tol."""
    n = 8
    while n <= len(x):
        if stats.lower_bound(method, x[:n], alpha) >= x[:n].mean() - tol:
            return n
        n = int(n * 1.15) + 1
    return None


def cohen_draws(p: float, alpha: float, tol: float) -> int:
    """Examples (= noise draws) the Cohen design needs: CP lower >= p - tol at the expected count."""
    n = np.arange(10, 200_000)
    k = np.round(p * n)
    ok = sps.beta.ppf(alpha, k, n - k + 1) >= k / n - tol
    return int(n[np.argmax(ok)])


def median(vals: list[int | None]) -> float:
    got = [v for v in vals if v is not None]
    return float(np.median(got)) if len(got) == len(vals) else float("inf")


def measure(
    name: str,
    sampler: Callable[[np.random.Generator, int], np.ndarray],
    evals_per_draw: int,
    noise_per_draw: int,
    reps: int,
    rows: list[dict],
) -> None:
    rng = np.random.default_rng(0)
    p = float(sampler(rng, 200_000).mean())
    cohen = cohen_draws(p, ALPHA, TOL)
    rows.append(
        {
            "distribution": name,
            "design": "Cohen: bernoulli + clopper-pearson",
            "draws": cohen,
            "noise": cohen,
            "evals": cohen,
            "p": p,
        }
    )
    for method in ("betting", "empirical-bernstein", "hoeffding"):
        results = []
        for _ in range(reps):
            x = sampler(rng, MAX_DRAWS)
            results.append(
                draws_needed_sequential(x, ALPHA, TOL)
                if method == "betting"
                else draws_needed_fixed(x, method, ALPHA, TOL)
            )
        d = median(results)
        label = "antithetic" if "pair" in name else "batched"
        rows.append(
            {
                "distribution": name,
                "design": f"{label} + {method}",
                "draws": d,
                "noise": d * noise_per_draw,
                "evals": d * evals_per_draw,
                "p": p,
            }
        )


def sequential_decision(reps: int) -> list[dict]:
    """Draws a sequential betting audit uses to decide, against the fixed-n budget it replaces."""
    rng = np.random.default_rng(1)
    out = []
    budget = 300
    for name, sampler, threshold in (
        ("clear pass (p=0.79 vs 0.6)", basin, 0.6),
        ("clear fail (p=0.79 vs 0.9)", basin, 0.9),
    ):
        used = []
        for _ in range(reps):
            seq = stats.BettingSequence(ALPHA)
            x = sampler(rng, budget)
            for v in x:
                seq.update(float(v))
                if seq.lower >= threshold or seq.upper < threshold:
                    break
            used.append(seq.n)
        out.append(
            {
                "case": name,
                "budget": budget,
                "median_used": float(np.median(used)),
                "fraction": float(np.median(used)) / budget,
            }
        )
    return out


def real_model_sampler(log: Path, task: str) -> Callable[[np.random.Generator, int], np.ndarray]:
    values = [json.loads(line)["results"][task]["value"] for line in log.read_text().splitlines()[1:]]
    arr = np.asarray(values)
    return lambda rng, n: rng.choice(arr, size=n, replace=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--real", type=Path, help="draws.jsonl of a default-model run (per-draw scores to resample)")
    ap.add_argument("--task", default="capitals")
    ap.add_argument("--write", action="store_true", help="write reports/draws_to_certify.md")
    args = ap.parse_args()
    rows: list[dict] = []
    measure("basin-like (batched)", basin, M, 1, args.reps, rows)
    measure("Bernoulli-like (batched)", independent, M, 1, args.reps, rows)
    measure("basin-like (antithetic pair)", antithetic_basin, 2 * M, 1, args.reps, rows)
    if args.real:
        measure(
            f"real default model, {args.task} (resampled)",
            real_model_sampler(args.real, args.task),
            M,
            1,
            args.reps,
            rows,
        )
    lines = [
        f"Draws to certify p_lower >= p_hat - {TOL} at alpha = {ALPHA} (median of {args.reps} runs; "
        f"{M} examples per batched draw; antithetic pairs reuse one noise for eps and -eps).",
        "",
        "| score distribution | design + bound | p | noise draws | example evaluations | "
        "noise ratio vs Cohen | evaluation ratio vs Cohen |",
        "|---|---|---|---|---|---|---|",
    ]
    base: dict[str, dict] = {}
    for r in rows:
        base.setdefault(r["distribution"], r)
        b = base[r["distribution"]]
        lines.append(
            f"| {r['distribution']} | {r['design']} | {r['p']:.3f} | {r['noise']:.0f} | {r['evals']:.0f} | "
            f"{b['noise'] / r['noise']:.1f}x | {b['evals'] / r['evals']:.2f}x |"
        )
    lines += [
        "",
        "Sequential stopping (betting CS, basin-like scores, alpha = 0.01):",
        "",
        "| case | fixed-n budget | median draws used | fraction of budget |",
        "|---|---|---|---|",
    ]
    for s in sequential_decision(args.reps):
        lines.append(f"| {s['case']} | {s['budget']} | {s['median_used']:.0f} | {s['fraction']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        out = Path(__file__).resolve().parents[1] / "reports" / "draws_to_certify.md"
        out.write_text(text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
