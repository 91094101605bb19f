"""Which examples break under noise: per-example flip rates, the worst examples, per-draw scores.

Everything here is read off the per-example outcomes in the draw log and the clean run; the one
model call is `perturbed_answers`, which re-runs a recorded draw (same examples, same batches) to
show what the model answered when it failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from auditor.audit.drawlog import DrawOutcomes
from auditor.audit.sample import CleanRun, SampleResult, SamplingPlan, TaskDraws, answer_and_score
from auditor.certificate.schema import FragileExample, Fragility, TaskResult
from auditor.tasks.base import Task

TOP_EXAMPLES = 5  # fragile examples shown per task
HISTOGRAM_BINS = 20
MAX_REPLAYED_DRAWS = 6  # draws re-run to fetch perturbed answers (each costs one noise draw)
TEXT_LIMIT = 240  # characters of prompt/answer kept on the certificate


@dataclass
class ExampleCounts:
    scored: np.ndarray  # times each example was scored under noise
    failures: np.ndarray  # ... and scored 0
    flips: np.ndarray  # ... and differed from the clean outcome


def count_outcomes(records: Sequence[DrawOutcomes], clean: np.ndarray) -> ExampleCounts:
    """Per-example tallies over every draw (both signs of an antithetic pair count)."""
    n = clean.size
    scored, failures, flips = np.zeros(n, int), np.zeros(n, int), np.zeros(n, int)
    for rec in records:
        idx = np.asarray(rec.indices, dtype=int)
        for out in rec.outcomes:
            np.add.at(scored, idx, 1)
            np.add.at(failures, idx, out == 0)
            np.add.at(flips, idx, out != clean[idx])
    return ExampleCounts(scored, failures, flips)


def histogram(values: Sequence[float], bins: int = HISTOGRAM_BINS) -> tuple[list[float], list[int]]:
    """Counts of per-draw scores in equal bins over [0, 1] (the last bin includes 1)."""
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins, range=(0.0, 1.0))
    return [float(e) for e in edges], [int(c) for c in counts]


def fragile_indices(counts: ExampleCounts, clean: np.ndarray, top: int = TOP_EXAMPLES) -> list[int]:
    """Examples that failed under noise, most often first.

    Those the clean model gets right come first (noise broke them), by failure rate; then those it
    already gets wrong; ties by index.
    """
    rate = np.divide(counts.failures, counts.scored, out=np.zeros(counts.scored.size), where=counts.scored > 0)
    cand = [i for i in range(rate.size) if counts.failures[i] > 0]
    cand.sort(key=lambda i: (not bool(clean[i]), -rate[i], i))
    return cand[:top]


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


def failing_draws(records: Sequence[DrawOutcomes], index: int) -> list[tuple[int, float]]:
    """Every (draw, sign) in which `index` scored 0."""
    out = []
    for rec in records:
        pos = [j for j, i in enumerate(rec.indices) if i == index]
        for k, outcome in enumerate(rec.outcomes):
            if pos and outcome[pos[0]] == 0:
                out.append((rec.draw, (1.0, -1.0)[k]))
    return out


def choose_replays(wanted: dict[tuple[str, int], list[tuple[int, float]]]) -> dict[tuple[str, int], tuple[int, float]]:
    """Greedy set cover: few (draw, sign) pairs in which as many wanted examples as possible failed.

    At most MAX_REPLAYED_DRAWS pairs; returns the pair chosen for each example it covers.
    """
    chosen: dict[tuple[str, int], tuple[int, float]] = {}
    left = {key: set(pairs) for key, pairs in wanted.items() if pairs}
    for _ in range(MAX_REPLAYED_DRAWS):
        tally: dict[tuple[int, float], int] = {}
        for pairs in left.values():
            for p in pairs:
                tally[p] = tally.get(p, 0) + 1
        if not tally:
            break
        best = min(tally, key=lambda p: (-tally[p], p))
        for key in [k for k, pairs in left.items() if best in pairs]:
            chosen[key] = best
            del left[key]
    return chosen


def perturbed_answers(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    perturber: Any,
    plan: SamplingPlan,
    per_task: dict[str, TaskDraws],
    picks: dict[str, list[int]],
) -> dict[str, dict[int, tuple[int, str]]]:
    """For fragile examples: (draw, answer) under a recorded draw where they failed.

    The draw is re-run on exactly the examples and batches it scored, so the answer is the one
    the log's 0 came from; an answer whose outcome no longer matches the log is left out.
    """
    wanted = {(name, i): failing_draws(per_task[name].records, i) for name, idxs in picks.items() for i in idxs}
    first = choose_replays(wanted)
    out: dict[str, dict[int, tuple[int, str]]] = {name: {} for name in picks}
    by_name = {t.name: t for t in tasks}
    for draw, sign in sorted(set(first.values())):
        needed = {name for (name, i), p in first.items() if p == (draw, sign)}
        perturber.apply(draw, sign)
        try:
            for name in sorted(needed):
                rec = next(r for r in per_task[name].records if r.draw == draw)
                scores, answers = answer_and_score(by_name[name], model, tokenizer, rec.indices, plan.batch_size)
                if answers is None:
                    continue
                logged = rec.outcomes[0 if sign > 0 else 1]
                for j, i in enumerate(rec.indices):
                    if first.get((name, i)) == (draw, sign) and scores[j] == logged[j] == 0:
                        out[name][i] = (draw, answers[j])
        finally:
            perturber.restore()
    return out


def task_fragility(
    task: Task,
    draws: TaskDraws,
    clean: CleanRun,
    picks: list[int],
    answers: dict[int, tuple[int, str]],
) -> Fragility:
    """The certificate's fragility section for one task."""
    counts = count_outcomes(draws.records, clean.outcomes)
    flip = [float(f / s) if s else None for f, s in zip(counts.flips, counts.scored, strict=True)]
    edges, hist = histogram(draws.values)
    rows = []
    for i in picks:
        ex = task.examples[i]
        prompt = getattr(ex, "prompt", None)
        draw_answer = answers.get(i)
        rows.append(
            FragileExample(
                index=i,
                prompt=_clip(prompt if isinstance(prompt, str) else repr(ex)),
                reference=_clip(getattr(ex, "answer", None)),
                clean_answer=_clip(clean.answers[i]) if clean.answers is not None else None,
                clean_correct=bool(clean.outcomes[i]),
                scored=int(counts.scored[i]),
                failures=int(counts.failures[i]),
                fail_rate=float(counts.failures[i] / counts.scored[i]),
                flip_rate=float(counts.flips[i] / counts.scored[i]),
                perturbed_answer=_clip(draw_answer[1]) if draw_answer else None,
                perturbed_draw=draw_answer[0] if draw_answer else None,
            )
        )
    return Fragility(
        flip_rate=flip,
        scored=[int(s) for s in counts.scored],
        examples_never_failing=int(np.sum((counts.scored > 0) & (counts.failures == 0))),
        histogram_edges=edges,
        histogram_counts=hist,
        fragile=rows,
    )


def with_fragility(
    results: list[TaskResult],
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    perturber: Any,
    plan: SamplingPlan,
    sample: SampleResult,
    clean: dict[str, CleanRun],
) -> list[TaskResult]:
    """The task results with their fragility sections (re-running at most MAX_REPLAYED_DRAWS draws)."""
    picks = {
        t.name: fragile_indices(
            count_outcomes(sample.per_task[t.name].records, clean[t.name].outcomes), clean[t.name].outcomes
        )
        for t in tasks
    }
    answers = perturbed_answers(model, tokenizer, tasks, perturber, plan, sample.per_task, picks)
    out = []
    for r, t in zip(results, tasks, strict=True):
        frag = task_fragility(t, sample.per_task[t.name], clean[t.name], picks[t.name], answers[t.name])
        out.append(r.model_copy(update={"fragility": frag}))
    return out
