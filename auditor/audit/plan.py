"""Plan an audit: a short pilot, then predicted wall time and slack for candidate (draws, subset) pairs.

Near p = 1 the slack p_hat - p_lower is dominated by about log(1/alpha)/n, so many cheaper draws
(a subset of examples each) can beat a few full ones; in the middle it is the per-draw variance,
which a smaller subset raises. The pilot measures both costs and outcomes; the prediction
resamples the pilot's per-example outcomes.

The pilot draws use their own seed (derived from the policy's seed and "pilot"): their noise is
independent of every draw the audit will make, and nothing they produce is written to a run
folder or enters a certificate. The prediction is a simulation, not a guarantee: it assumes the
pilot's outcomes are representative (say so when quoting it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from auditor import stats
from auditor.audit import verdicts
from auditor.audit.fragility import MAX_REPLAYED_DRAWS
from auditor.audit.perturb import derive_seed
from auditor.audit.sample import make_perturber
from auditor.policy.schema import LoadedPolicy
from auditor.stats.fixed_n import star_lower_rows
from auditor.tasks.base import Task

DRAW_GRID = (30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 140, 160, 180, 200, 250, 300, 400, 500)
SUBSET_FRACTIONS = (1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 6, 1 / 8)
SIMULATIONS = 200
PLAN_STAR_GRID = 256


@dataclass
class Pilot:
    """What the pilot measured: costs (seconds) and per-example outcomes per task (draws x examples)."""

    setup_seconds: float  # model load + clean pass: paid once per audit
    noise_seconds: float  # per draw
    eval_seconds: dict[str, float]  # per draw, all examples of the task
    small_seconds: dict[str, tuple[int, float]]  # (m, seconds) of one evaluation on m < n examples
    outcomes: dict[str, np.ndarray]
    n_examples: dict[str, int]


@dataclass
class Candidate:
    draws: int
    subset: int | None
    seconds: float
    slack: dict[str, float]  # median predicted p_hat - p_lower per task
    p_lower: dict[str, float]
    decided: dict[str, str]  # 'pass' | 'fail' | 'undecided' | 'measured' (most simulations)
    fits: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def worst_slack(self) -> float:
        return max(self.slack.values())


def run_pilot(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    loaded: LoadedPolicy,
    pilot_draws: int,
    setup_seconds: float,
    on_draw: Callable[[int], None] | None = None,
    cpu_clock: bool = False,
) -> Pilot:
    """Score every example of every task under `pilot_draws` independent pilot noises.

    `cpu_clock` times with the process's CPU time instead of the wall clock: on a machine shared
    with other jobs that is what one uncontended thread would take.
    """
    policy = loaded.policy
    pilot_policy = policy.model_copy(update={"seed": derive_seed(policy.seed, "pilot") % (2**62)})
    perturber = make_perturber(model, pilot_policy)
    bs = policy.sampling.batch_size
    outcomes: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}
    clock = time.process_time if cpu_clock else time.perf_counter
    noise = 0.0
    evals = {t.name: 0.0 for t in tasks}
    small: dict[str, tuple[int, float]] = {}
    for d in range(pilot_draws):
        t0 = clock()
        perturber.apply(d, 1.0)
        noise += clock() - t0
        try:
            for t in tasks:
                t1 = clock()
                outcomes[t.name].append(np.asarray(t.evaluate(model, tokenizer, range(len(t.examples)), bs)))
                evals[t.name] += clock() - t1
                if d == 0 and len(t.examples) >= 4:  # a second point for the cost of a smaller draw
                    m = len(t.examples) // 4
                    t2 = clock()
                    t.evaluate(model, tokenizer, range(m), bs)
                    small[t.name] = (m, clock() - t2)
        finally:
            perturber.restore()
        if on_draw is not None:
            on_draw(d)
    return Pilot(
        setup_seconds=setup_seconds,
        noise_seconds=noise / pilot_draws,
        eval_seconds={k: v / pilot_draws for k, v in evals.items()},
        small_seconds=small,
        outcomes={k: np.vstack(v).astype(float) for k, v in outcomes.items()},
        n_examples={t.name: len(t.examples) for t in tasks},
    )


def eval_seconds(pilot: Pilot, name: str, m: int) -> float:
    """One evaluation of m examples: the line through the pilot's (n, full) and (small, its time)."""
    n, full = pilot.n_examples[name], pilot.eval_seconds[name]
    if m >= n or name not in pilot.small_seconds:
        return full * m / n
    m0, t0 = pilot.small_seconds[name]
    slope = max((full - t0) / (n - m0), 0.0)
    return max(t0 + slope * (m - m0), 0.0)


def predicted_seconds(pilot: Pilot, draws: int, subset: int | None) -> float:
    """Setup plus draws x (noise + evaluation of each task's examples per draw).

    Plus up to MAX_REPLAYED_DRAWS draws re-run for the fragility section; rendering is not counted.
    """
    per_draw = pilot.noise_seconds
    for name, n in pilot.n_examples.items():
        per_draw += eval_seconds(pilot, name, n if subset is None else min(subset, n))
    return pilot.setup_seconds + (draws + MAX_REPLAYED_DRAWS) * per_draw


def simulate_units(outcomes: np.ndarray, subset: int | None, draws: int, sims: int, seed: int) -> np.ndarray:
    """Per-draw units resampled from the pilot: a pilot noise draw, then `subset` of its examples."""
    rng = np.random.default_rng(seed)
    p, n = outcomes.shape
    m = n if subset is None else min(subset, n)
    rows = rng.integers(p, size=(sims, draws))
    if m == n:
        return outcomes.mean(axis=1)[rows]
    # m examples without replacement: rank random keys per (sim, draw)
    keys = rng.random((sims, draws, n)).argsort(axis=2)[:, :, :m]
    return outcomes[rows[:, :, None], keys].mean(axis=2)


def predict(pilot: Pilot, loaded: LoadedPolicy, draws: int, subset: int | None, sims: int = SIMULATIONS) -> Candidate:
    """Median slack and p_lower per task over simulated audits of this size, and the likely decision."""
    policy = loaded.policy
    bound = "betting" if policy.sampling.max_draws is not None else policy.sampling.bound
    alpha = stats.bonferroni(policy.alpha, len(pilot.outcomes))
    slack, lows, decided = {}, {}, {}
    for k, (name, outs) in enumerate(sorted(pilot.outcomes.items())):
        x = simulate_units(outs, subset, draws, sims, derive_seed(policy.seed, "plan", name, draws, subset, k))
        if policy.sampling.randomised_rounding:
            x = stats.randomised_rounding(x, np.random.default_rng(derive_seed(policy.seed, "plan-round", name)))
        if bound == "star-bets":  # a coarse grid: thousands of simulated audits, at most 1/256 looser each
            lo = star_lower_rows(x, alpha, grid_size=PLAN_STAR_GRID)
        else:
            lo = stats.batch_lower_bound(bound, x, alpha)
        lo = np.minimum(lo, x.mean(axis=1))
        slack[name] = float(np.median(x.mean(axis=1) - lo))
        lows[name] = float(np.median(lo))
        need = verdicts.pass_threshold(policy, name)
        if need is None:
            decided[name] = "measured"
        else:
            share = float(np.mean(lo >= need))
            decided[name] = "pass" if share >= 0.9 else ("undecided" if share >= 0.1 else "fail/undecided")
    secs = predicted_seconds(pilot, draws, subset)
    return Candidate(draws, subset, secs, slack, lows, decided)


def candidates(pilot: Pilot, loaded: LoadedPolicy, seconds_budget: float | None) -> list[Candidate]:
    """Every (draws, subset) pair of the grid, predicted; `fits` marks those within the time budget."""
    n_max = max(pilot.n_examples.values())
    subsets: list[int | None] = [None]
    for f in SUBSET_FRACTIONS[1:]:
        m = max(2, round(n_max * f))
        if m < n_max and m not in subsets:
            subsets.append(m)
    out = []
    for subset in subsets:
        for draws in DRAW_GRID:
            c = predict(pilot, loaded, draws, subset)
            c.fits = seconds_budget is None or c.seconds <= seconds_budget
            out.append(c)
    return out


def best(cands: Sequence[Candidate]) -> Candidate | None:
    """Among those that fit: the smallest worst-task slack, then the fastest."""
    fitting = [c for c in cands if c.fits]
    return min(fitting, key=lambda c: (round(c.worst_slack, 3), c.seconds)) if fitting else None


def pilot_to_json(pilot: Pilot) -> dict[str, Any]:
    """The pilot as plain data (to keep beside a plan, or to re-plan without re-running it)."""
    return {
        "setup_seconds": pilot.setup_seconds,
        "noise_seconds": pilot.noise_seconds,
        "eval_seconds": pilot.eval_seconds,
        "small_seconds": {k: list(v) for k, v in pilot.small_seconds.items()},
        "outcomes": {k: v.astype(int).tolist() for k, v in pilot.outcomes.items()},
        "n_examples": pilot.n_examples,
    }


def pilot_from_json(data: dict[str, Any]) -> Pilot:
    return Pilot(
        setup_seconds=float(data["setup_seconds"]),
        noise_seconds=float(data["noise_seconds"]),
        eval_seconds={k: float(v) for k, v in data["eval_seconds"].items()},
        small_seconds={k: (int(v[0]), float(v[1])) for k, v in data["small_seconds"].items()},
        outcomes={k: np.asarray(v, dtype=float) for k, v in data["outcomes"].items()},
        n_examples={k: int(v) for k, v in data["n_examples"].items()},
    )
