"""Coverage of the lower confidence bounds in auditor.stats, by simulation.

For each bound x per-draw score distribution x alpha x n, simulate `runs` independent audits of n
draws and count how often p_lower <= p (the true mean). A valid bound covers in >= 1 - alpha of
audits; we flag a row when the empirical coverage falls below 1 - alpha - slack, where
slack = 3 sqrt(alpha (1 - alpha) / runs) is three Monte-Carlo standard errors.

Also measured: sequential coverage, the fraction of audits in which the bound stays <= p at every
t = 1..n (what matters when an audit may stop early). For clopper-pearson, hoeffding and
empirical-bernstein this re-applies the fixed-n bound after every draw (peeking); only the betting
bound promises it. For betting it is Ville's event at the true mean (the capital K+_t(p) never
reaches 1/alpha), which implies the reported bound stays <= p at every t and is grid-free.

Score distributions (one value per noise draw):
  basin      Binomial(24, 0.8) / 24: the mean of 24 examples, each right w.p. 0.8 (p = 0.8)
  cliff      0.85 w.p. 0.9, 0.10 w.p. 0.1: rare collapses under noise (p = 0.775)
  bernoulli  Bernoulli(0.7): one 0/1 outcome per draw (p = 0.7)
clopper-pearson is applied to randomised_rounding(x), which is exact Bernoulli(p) data (identity on
0/1 scores); its width is still measured against the mean of the unrounded scores.

Run: python bench/coverage.py [--runs 10000] [--n 32 128] [--alpha 0.05 0.01] [--seed 0] [--write]
(--write also saves the table to reports/coverage.md). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from auditor import stats  # noqa: E402


@dataclass(frozen=True)
class Design:
    description: str
    mean: float
    sample: Callable[[np.random.Generator, tuple[int, int]], np.ndarray]


DESIGNS: dict[str, Design] = {
    "basin": Design("Binomial(24, 0.8)/24", 0.8, lambda rng, size: rng.binomial(24, 0.8, size) / 24.0),
    "cliff": Design(
        "0.9·δ(0.85) + 0.1·δ(0.10)",
        0.9 * 0.85 + 0.1 * 0.1,
        lambda rng, size: np.where(rng.random(size) < 0.9, 0.85, 0.1),
    ),
    "bernoulli": Design("Bernoulli(0.7)", 0.7, lambda rng, size: (rng.random(size) < 0.7).astype(float)),
}
LEGEND = """\
*coverage*: fraction of simulated audits with p_lower ≤ p after n draws; ✓ when it is at least
*need* = 1 − α − slack, slack = 3·sqrt(α(1−α)/audits) (three Monte-Carlo standard errors).

*sequential coverage*: fraction of audits whose bound stays ≤ p after every draw t ≤ n. Only betting
is anytime-valid; for it this column is Ville's event at the true mean (its capital never reaches
1/α), which implies the reported bound stays ≤ p throughout. For the other bounds it re-applies the
fixed-n bound after each draw (peeking), which they do not promise to survive: marked *(peeking)*
when it falls below *need*.

*mean width*: mean of p̂ − p_lower (p̂ the mean of the unrounded scores).

"""
METHODS: tuple[str, ...] = ("clopper-pearson", "hoeffding", "empirical-bernstein", "betting")


@dataclass(frozen=True)
class CoverageResult:
    method: str
    design: str
    alpha: float
    n: int
    runs: int
    coverage: float  # fraction of audits with p_lower <= p after n draws
    sequential: float  # fraction of audits whose bound is <= p after every draw t <= n
    mean_width: float  # mean of p_hat - p_lower
    slack: float  # 3 Monte-Carlo standard errors of a coverage of exactly 1 - alpha

    @property
    def required(self) -> float:
        return 1.0 - self.alpha - self.slack

    @property
    def ok(self) -> bool:
        return self.coverage >= self.required

    @property
    def sequential_ok(self) -> bool:
        return self.sequential >= self.required


def _rng(seed: int, *key: object) -> np.random.Generator:
    # stable across processes (unlike hash()), so a table can be reproduced exactly
    return np.random.default_rng([seed, zlib.crc32("|".join(map(str, key)).encode())])


def simulate_coverage(
    method: str, design: str, alpha: float, n: int, runs: int, seed: int = 0, sequential: bool = True
) -> CoverageResult:
    """Simulate `runs` audits of `n` draws from `design` and measure the coverage of `method`.

    `method` is a key of auditor.stats.BOUNDS; all runs are bounded at once (one row per audit).
    With sequential=False the sequential column is NaN (and the per-draw re-bounding is skipped).
    """
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; choose one of {', '.join(DESIGNS)}")
    spec, d = stats.BOUNDS[method], DESIGNS[design]
    rng = _rng(seed, method, design, alpha, n)
    x = d.sample(rng, (runs, n))
    units = stats.randomised_rounding(x, rng) if spec.binary_only else x
    lower = stats.batch_lower_bound(method, units, alpha)
    coverage = float(np.mean(lower <= d.mean))
    width = float(np.mean(x.mean(axis=1) - lower))
    seq = float("nan")
    if sequential:
        if method in stats.ANYTIME_VALID:
            # Ville's event at the true mean; implies the grid bound is <= p at every t
            log_k = stats.betting_log_capital(x, d.mean, alpha)
            seq = float(np.mean(log_k.max(axis=1) < -math.log(alpha)))
        else:
            crossed = np.zeros(runs, dtype=bool)
            for t in range(spec.min_n, n + 1):
                crossed |= stats.batch_lower_bound(method, units[:, :t], alpha) > d.mean
            seq = 1.0 - float(np.mean(crossed))
    slack = 3.0 * math.sqrt(alpha * (1.0 - alpha) / runs)
    return CoverageResult(method, design, alpha, n, runs, coverage, seq, width, slack)


def table(results: list[CoverageResult]) -> str:
    """Markdown table; a check mark when the coverage clears 1 - alpha - slack."""
    lines = [
        "| bound | design | α | n | audits | coverage | sequential coverage | need ≥ "
        "| mean width p̂−p_lower | MC slack |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        anytime = r.method in stats.ANYTIME_VALID
        seq_mark = ("✓" if r.sequential_ok else "✗") if anytime else ("" if r.sequential_ok else "(peeking)")
        lines.append(
            f"| {r.method} | {r.design} | {r.alpha:g} | {r.n} | {r.runs} "
            f"| {r.coverage:.4f} {'✓' if r.ok else '✗'} | {f'{r.sequential:.4f} {seq_mark}'.strip()} "
            f"| {r.required:.4f} | {r.mean_width:.4f} | {r.slack:.4f} |"
        )
    return "\n".join(lines)


def run_all(
    runs: int, ns: list[int], alphas: list[float], seed: int = 0, methods: tuple[str, ...] = METHODS
) -> list[CoverageResult]:
    return [simulate_coverage(m, d, a, n, runs, seed) for n in ns for a in alphas for d in DESIGNS for m in methods]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000, help="simulated audits per row")
    ap.add_argument("--n", type=int, nargs="+", default=[32, 128], help="draws per audit")
    ap.add_argument("--alpha", type=float, nargs="+", default=[0.05, 0.01])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="also write reports/coverage.md")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = run_all(args.runs, args.n, args.alpha, args.seed)
    seconds = time.perf_counter() - t0
    body = table(results)
    print(body)
    designs = "; ".join(f"{k}: {v.description}, p = {v.mean:g}" for k, v in DESIGNS.items())
    failed = [r for r in results if not r.ok or (r.method in stats.ANYTIME_VALID and not r.sequential_ok)]
    print(f"\n{len(results)} rows, {len(failed)} failing, {seconds:.0f} s")
    if args.write:
        out = Path(__file__).resolve().parents[1] / "reports" / "coverage.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            "# Coverage of the lower confidence bounds\n\n"
            f"Generated by `python bench/coverage.py --runs {args.runs} --n {' '.join(map(str, args.n))} "
            f"--alpha {' '.join(map(str, args.alpha))} --seed {args.seed} --write`.\n\n"
            f"Per-draw scores: {designs}. CP bounds randomised_rounding(x), exact Bernoulli(p).\n\n"
            + LEGEND
            + body
            + "\n"
        )
        print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
