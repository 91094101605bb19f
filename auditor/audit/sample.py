"""The Monte-Carlo loop: draw noise, score every task under it, log each draw, stop when decided.

Designs (DESIGN.md section 2): `bernoulli` scores one uniformly drawn example per task under each
fresh noise (iid Bernoulli units, exact Clopper-Pearson); `batched` scores all examples (or a
uniform subset) under one noise (iid bounded units); `antithetic` scores under eps and -eps and
uses the pair mean as the unit. All tasks share a draw's noise: each task's units are still iid
across draws, and the alpha split across tasks (Bonferroni) covers their dependence.

Every draw is appended to the draw log (`auditor.audit.drawlog`, which also defines the record format)
and flushed before the next starts; a resumed run re-reads the finished draws, and because draw i
depends only on (seed, i) the result is the same as an uninterrupted run.
"""

from __future__ import annotations

import bisect
import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from auditor import stats
from auditor.audit import verdicts
from auditor.audit.drawlog import DrawLog, DrawOutcomes, encode_indices, encode_outcomes, record_outcomes
from auditor.audit.perturb import EmbeddingNoise, Perturber, derive_seed
from auditor.errors import AuditorError
from auditor.policy.schema import Policy
from auditor.tasks.base import Task

CLEAN_FILE = "clean.json"  # next to the log: the clean model's outcomes (hex-packed) and answers per task


@dataclass(frozen=True)
class SamplingPlan:
    """What the loop needs to know from the policy."""

    design: str
    draws: int
    seed: int
    batch_size: int
    subset: int | None = None
    max_draws: int | None = None  # set: sequential stopping with an anytime-valid bound
    alpha_per_task: float = 0.01
    thresholds: dict[str, float | None] = field(default_factory=dict)  # task -> p_lower needed to pass
    randomised_rounding: bool = False

    @property
    def budget(self) -> int:
        return self.max_draws if self.max_draws is not None else self.draws


@dataclass
class TaskDraws:
    """Per-draw values (mean outcome), units (what is bounded) and per-example outcomes of one task."""

    values: list[float] = field(default_factory=list)
    units: list[float] = field(default_factory=list)
    evaluations: int = 0
    records: list[DrawOutcomes] = field(default_factory=list)


@dataclass
class SampleResult:
    draws_used: int
    per_task: dict[str, TaskDraws]
    decided: dict[str, verdicts.Decision]  # task -> 'pass' | 'fail' | 'undecided' | 'measured' (sequential only)
    seconds_noise: float = 0.0
    seconds_eval: float = 0.0
    resumed_draws: int = 0


def draw_indices(task: Task, plan: SamplingPlan, draw: int) -> list[int]:
    """The examples scored under `draw`: fixed by (seed, draw, task) so a replay picks the same ones."""
    n = len(task.examples)
    if plan.design == "bernoulli":
        rng = np.random.default_rng(derive_seed(plan.seed, draw, task.name, "example"))
        return [int(rng.integers(n))]
    if plan.subset is not None and plan.subset < n:
        rng = np.random.default_rng(derive_seed(plan.seed, draw, task.name, "subset"))
        return sorted(int(i) for i in rng.choice(n, size=plan.subset, replace=False))
    return list(range(n))


def draw_unit(value: float, plan: SamplingPlan, task: str, draw: int) -> float:
    """The unit the bound sees for one draw: the value, or its randomised rounding 1{U < value}.

    U comes from (seed, draw, task), so sampler, certificate and replay round the same draw alike.
    """
    if not plan.randomised_rounding:
        return value
    u = np.random.default_rng(derive_seed(plan.seed, draw, task, "rounding")).random()
    return float(u < value)


def _decide(plan: SamplingPlan, seqs: dict[str, stats.BettingSequence]) -> dict[str, verdicts.Decision]:
    # on the interval the certificate will report, over the units it will bound
    return {
        name: verdicts.decide(plan.thresholds.get(name), *verdicts.reported_interval(seq.lower, seq.upper, seq.mean))
        for name, seq in seqs.items()
    }


@dataclass
class DrawTimer:
    """Seconds this process spent applying noise and evaluating under it."""

    noise: float = 0.0
    eval: float = 0.0


def compute_draw(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    perturber: Any,
    plan: SamplingPlan,
    timer: DrawTimer,
    draw: int,
) -> dict[str, Any]:
    """Score every task under draw `draw`'s noise: the record the draw log stores for it."""
    signs = (1.0, -1.0) if plan.design == "antithetic" else (1.0,)
    results = {}
    outcomes: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}
    for sign in signs:
        t0 = time.perf_counter()
        perturber.apply(draw, sign)
        t1 = time.perf_counter()
        try:
            for task in tasks:
                idx = draw_indices(task, plan, draw)
                outcomes[task.name].append(task.evaluate(model, tokenizer, idx, plan.batch_size))
        finally:
            perturber.restore()
        timer.noise += t1 - t0
        timer.eval += time.perf_counter() - t1
    for task in tasks:
        scores = outcomes[task.name]
        # unit: the mean over examples, averaged over the antithetic pair when there is one
        results[task.name] = {
            "value": float(np.mean([s.mean() for s in scores])),
            "evaluations": int(sum(s.size for s in scores)),
            "correct": [int(s.sum()) for s in scores],
            "examples": encode_indices(draw_indices(task, plan, draw)),
            "outcomes": [encode_outcomes(s) for s in scores],
        }
    return results


class DrawSource(Protocol):
    """Where the loop gets the records of draws it has not logged yet (e.g. shards on other processes)."""

    def results(self, draw: int, pending: Sequence[int], compute: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        """The record of `draw`, the first of `pending` (the unlogged draws in index order)."""
        ...

    def finish(self) -> None:
        """The loop is done: drop any draw computed past the stop."""
        ...


def run_draws(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    perturber: Any,
    plan: SamplingPlan,
    log: DrawLog,
    on_draw: Callable[[int, dict[str, float]], None] | None = None,
    source: DrawSource | None = None,
) -> SampleResult:
    """Run draws 0..budget-1 (skipping those in the log), stopping early once every task is decided.

    Draws are consumed in index order whoever computes them (`source`, default this process), so
    the log, the stop and the result are the same however the work was spread.
    """
    per_task = {t.name: TaskDraws() for t in tasks}
    seqs = {t.name: stats.BettingSequence(plan.alpha_per_task) for t in tasks} if plan.max_draws else {}
    decided: dict[str, verdicts.Decision] = {}
    timer = DrawTimer()
    compute = functools.partial(compute_draw, model, tokenizer, tasks, perturber, plan, timer)
    pending = [d for d in range(plan.budget) if d not in log.done]
    used = resumed = 0
    for draw in range(plan.budget):
        if draw in log.done:
            results = log.done[draw]["results"]
            lacking = [t.name for t in tasks if not isinstance(results.get(t.name), dict)]
            if lacking:
                raise AuditorError(f"{log.path}: draw {draw} has no record of task {lacking[0]}: the log is damaged")
            resumed += 1
        else:
            if source is None:
                results = compute(draw)
            else:
                results = source.results(draw, pending[bisect.bisect_left(pending, draw) :], compute)
            log.append(draw, results)
        used += 1
        for task in tasks:
            rec, logged = per_task[task.name], results[task.name]
            rec.values.append(float(logged["value"]))
            rec.units.append(draw_unit(rec.values[-1], plan, task.name, draw))
            rec.evaluations += int(logged["evaluations"])
            rec.records.append(record_outcomes(task.name, logged, draw))
            if seqs:
                seqs[task.name].update(rec.units[-1])
        if on_draw is not None:
            on_draw(draw, {name: float(np.mean(r.values)) for name, r in per_task.items()})
        if seqs:
            decided = _decide(plan, seqs)
            if verdicts.may_stop(decided):
                break
    if source is not None:
        source.finish()
    return SampleResult(used, per_task, decided, timer.noise, timer.eval, resumed)


@dataclass
class CleanRun:
    """The unperturbed model on every example of a task: its 0/1 outcomes and (when known) its answers."""

    outcomes: np.ndarray
    answers: list[str] | None

    @property
    def score(self) -> float:
        return float(self.outcomes.mean())


def answer_and_score(
    task: Task, model: Any, tokenizer: Any, indices: Sequence[int], batch_size: int
) -> tuple[np.ndarray, list[str] | None]:
    """Outcomes and answers in one pass: the generated text, or the chosen choice; None when opaque.

    Same batching as `evaluate`, so the outcomes equal `task.evaluate(...)` for the same weights.
    """
    t: Any = task
    if callable(getattr(t, "answers", None)) and callable(getattr(t, "scorer", None)):
        answers = list(t.answers(model, tokenizer, indices, batch_size))
        scores = [t.scorer(a, t.examples[i]) for a, i in zip(answers, indices, strict=True)]
        return np.asarray(scores, dtype=np.uint8), answers
    if callable(getattr(t, "loglikelihoods", None)) and hasattr(t, "targets"):
        picks = [int(np.argmax(s)) for s in t.loglikelihoods(model, tokenizer, indices, batch_size)]
        choices = [t.examples[i].choices[k] for k, i in zip(picks, indices, strict=True)]
        hits = [k == t.targets[i] for k, i in zip(picks, indices, strict=True)]
        return np.asarray(hits, dtype=np.uint8), choices
    return np.asarray(task.evaluate(model, tokenizer, indices, batch_size), dtype=np.uint8), None


def clean_run(model: Any, tokenizer: Any, tasks: Sequence[Task], batch_size: int) -> dict[str, CleanRun]:
    """S(theta0) per task on all examples, unperturbed, with the clean answers kept."""
    out = {}
    for t in tasks:
        outcomes, answers = answer_and_score(t, model, tokenizer, list(range(len(t.examples))), batch_size)
        out[t.name] = CleanRun(outcomes, answers)
    return out


def write_clean(path: Path, clean: dict[str, CleanRun]) -> None:
    """The clean model's outcomes (hex-packed like the draw log) and answers, per task."""
    data = {
        name: {"outcomes": encode_outcomes(c.outcomes), "n": int(c.outcomes.size), "answers": c.answers}
        for name, c in clean.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def make_perturber(model: Any, policy: Policy) -> Any:
    """The noise source the policy asks for (weights or input embeddings)."""
    pert = policy.perturbation
    if pert.space == "input-embeddings":
        return EmbeddingNoise(model, pert.fixed_sigma, policy.seed)
    return Perturber(
        model,
        pert.fixed_sigma,
        policy.seed,
        pert.include,
        pert.exclude,
        cache_noise=policy.sampling.design == "antithetic",
        scale=pert.scale,
    )


def plan_from_policy(policy: Policy, names: Sequence[str], **overrides: Any) -> SamplingPlan:
    """The sampling plan of a policy (per-task alpha after the Bonferroni split, thresholds)."""
    s = policy.sampling
    fields: dict[str, Any] = {
        "design": s.design,
        "draws": s.draws,
        "seed": policy.seed,
        "batch_size": s.batch_size,
        "subset": s.subset,
        "max_draws": s.max_draws,
        "alpha_per_task": stats.bonferroni(policy.alpha, len(names)),
        "thresholds": {n: verdicts.pass_threshold(policy, n) for n in names},
        "randomised_rounding": s.randomised_rounding,
    }
    fields.update(overrides)
    return SamplingPlan(**fields)
