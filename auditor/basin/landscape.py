"""Landscape slices: every task's score S(theta0 + a * delta) along random, fine-tune and worst directions.

The paper's picture of a basin, measured: along most (random) directions the score stays flat up to
a scale and then falls off a cliff; along the worst direction it falls much sooner. For each slice
the basin edge is the largest |a| up to which every point keeps S >= S(theta0) - tolerance. The
strict-basin test counts, over N independent random directions at one scale, those whose score is
unchanged, and bounds that fraction from below with an exact Clopper-Pearson bound: the directions
are iid, so "unchanged" is an iid Bernoulli outcome and the bound is exact (not a certificate on the
smoothed score: a statement about the fraction of directions).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditor import stats
from auditor.audit.perturb import derive_seed
from auditor.errors import AuditorError
from auditor.policy.schema import LandscapeSpec, Policy

FAMILIES = ("random", "worst", "sft")


@dataclass
class Point:
    """One slice point: the task's score at theta0 + a * delta (delta: `family` number `direction`)."""

    family: str
    direction: int
    task: str
    a: float
    score: float


@dataclass
class Edge:
    """Where a slice leaves the basin: last grid |a| inside (per side) and first outside (the cliff)."""

    family: str
    direction: int
    task: str
    edge: float  # min over both sides: the slice is within tolerance on [-edge, edge]
    edge_pos: float
    edge_neg: float
    cliff_pos: float | None  # first a > 0 outside the tolerance (None: none on the grid)
    cliff_neg: float | None


@dataclass
class StrictBasin:
    """The strict-basin test of one task at one scale."""

    task: str
    scale: float
    directions: int
    unchanged: int
    alpha: float  # per task (the policy's strict_alpha split across tasks)
    lower_bound: float  # Clopper-Pearson lower bound on the fraction of unchanged directions
    fraction: float  # the fraction the test tries to show
    holds: bool  # lower_bound > fraction


@dataclass
class LandscapeResult:
    model: str
    seed: int
    direction_seed: int
    dimension: int
    parameters: list[str]
    tolerance: float
    grid: list[float]
    clean: dict[str, float]
    examples: dict[str, int] = field(default_factory=dict)  # per task: a score moves in steps of 1/n
    points: list[Point] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    strict: list[StrictBasin] = field(default_factory=list)
    directions: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["unit_norm"] = math.sqrt(self.dimension)
        return out


def direction_seed(policy_seed: int) -> int:
    """Seed of the random directions: its own stream, apart from the audit's noise draws."""
    return derive_seed(policy_seed, "landscape")


def signed_grid(grid: Sequence[float]) -> list[float]:
    """-a_k ... -a_1, a_1 ... a_k (a = 0 is the clean score, shared by every slice)."""
    return [-a for a in reversed(grid)] + list(grid)


def basin_edge(clean: float, slice_: dict[float, float], tolerance: float) -> tuple[float, float | None]:
    """(edge, cliff) on the positive side of a slice {a: score}; flip signs of a for the negative side.

    The edge is the largest grid a > 0 such that every grid point in (0, a] keeps score >= clean -
    tolerance (0 when the first point already falls); the cliff is the first point that does not.
    """
    edge, cliff = 0.0, None
    for a in sorted(x for x in slice_ if x > 0):
        if slice_[a] >= clean - tolerance - 1e-12:
            edge = a
        else:
            cliff = a
            break
    return edge, cliff


def edges_of(points: Sequence[Point], clean: dict[str, float], tolerance: float) -> list[Edge]:
    """The basin edge of every (family, direction, task) slice."""
    slices: dict[tuple[str, int, str], dict[float, float]] = {}
    for p in points:
        slices.setdefault((p.family, p.direction, p.task), {})[p.a] = p.score
    out = []
    for (family, k, task), s in sorted(slices.items()):
        pos, cliff_pos = basin_edge(clean[task], s, tolerance)
        neg, cliff_neg = basin_edge(clean[task], {-a: v for a, v in s.items()}, tolerance)
        out.append(Edge(family, k, task, min(pos, neg), pos, neg, cliff_pos, None if cliff_neg is None else -cliff_neg))
    return out


def directions_needed(fraction: float, alpha: float) -> int:
    """Smallest n whose all-unchanged outcome gives a CP lower bound above `fraction` at level alpha.

    With k = n the bound is alpha^(1/n), so n > log(alpha) / log(fraction) (44 for 90% at alpha 0.01).
    """
    n = math.ceil(math.log(alpha) / math.log(fraction))
    return n + 1 if alpha ** (1.0 / n) <= fraction else n


def strict_basin(
    task: str, scale: float, clean: float, scores: Sequence[float], spec: LandscapeSpec, alpha: float
) -> StrictBasin:
    """Count directions with |S - S(theta0)| <= strict_tolerance; exact CP lower bound on the fraction.

    Guarantee: the directions are iid N(0, I), so with probability >= 1 - alpha over their draw the
    fraction of all directions (at this scale) whose score is unchanged is at least `lower_bound`.
    """
    k = sum(abs(s - clean) <= spec.strict_tolerance + 1e-12 for s in scores)
    lo = stats.clopper_pearson_lower(int(k), len(scores), alpha)
    return StrictBasin(task, scale, len(scores), int(k), alpha, lo, spec.strict_fraction, lo > spec.strict_fraction)


def task_score(task: Any, model: Any, tokenizer: Any, batch_size: int) -> float:
    return float(np.mean(task.evaluate(model, tokenizer, range(len(task.examples)), batch_size)))


class _Runner:
    """Evaluates slice points, remembering each (family, direction, a, task) so no point is paid twice."""

    def __init__(self, model: Any, tokenizer: Any, tasks: Sequence[Any], batch_size: int, on_point: Any) -> None:
        self.model, self.tokenizer, self.tasks, self.batch_size = model, tokenizer, list(tasks), batch_size
        self.on_point = on_point
        self.scores: dict[tuple[str, int, float, str], float] = {}

    def slice(
        self, slicer: Any, family: str, k: int, delta: Any, scales: Sequence[float], tasks: Sequence[Any]
    ) -> None:
        for a in scales:
            todo = [t for t in tasks if (family, k, a, t.name) not in self.scores]
            if not todo:
                continue
            slicer.apply(delta, a)
            try:
                for t in todo:
                    s = task_score(t, self.model, self.tokenizer, self.batch_size)
                    self.scores[(family, k, a, t.name)] = s
                    if self.on_point is not None:
                        self.on_point(Point(family, k, t.name, a, s))
            finally:
                slicer.restore()


def run_landscape(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Any],
    policy: Policy,
    *,
    families: Sequence[str] = ("random", "worst"),
    candidate: Path | None = None,
    model_name: str = "model",
    on_point: Callable[[Point], None] | None = None,
) -> LandscapeResult:
    """Slice every task along the requested direction families; edges and the strict-basin test."""
    from auditor.basin.directions import Slicer, reference_pairs, sft_direction, worst_direction

    spec, pert = policy.landscape, policy.perturbation
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise AuditorError(f"--directions: unknown family {unknown[0]!r} (choose from {', '.join(FAMILIES)})")
    if "sft" in families and candidate is None:
        raise AuditorError("--directions sft needs --candidate (a fine-tuned checkpoint or LoRA adapter folder)")
    if pert.space != "weights":
        raise AuditorError("perturbation.space: landscape slices move weights; 'input-embeddings' has none")
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    seed = direction_seed(policy.seed)
    slicer = Slicer(model, seed, pert.include, pert.exclude)
    bs = policy.sampling.batch_size
    clean = {t.name: task_score(t, model, tokenizer, bs) for t in tasks}
    result = LandscapeResult(
        model=model_name,
        seed=policy.seed,
        direction_seed=seed,
        dimension=slicer.dimension,
        parameters=list(slicer.names),
        tolerance=spec.tolerance,
        grid=list(spec.grid),
        clean=clean,
        examples={t.name: len(t.examples) for t in tasks},
    )
    runner = _Runner(model, tokenizer, tasks, bs, on_point)
    scales = signed_grid(spec.grid)
    if "random" in families:
        for k in range(spec.random_directions):
            runner.slice(slicer, "random", k, slicer.random(k), scales, tasks)
            result.directions.append({"family": "random", "direction": k, "norm": "~sqrt(d) (unnormalised N(0, I))"})
    if "sft" in families:
        assert candidate is not None
        sft = sft_direction(slicer, candidate)
        sft_scales = sorted({*scales, sft.scale})  # the slice passes through the fine-tuned model itself
        runner.slice(slicer, "sft", 0, sft.delta, sft_scales, tasks)
        result.directions.append(
            {"family": "sft", "direction": 0, "distance": sft.distance, "scale_of_candidate": sft.scale}
        )
        if sft.changed_outside:
            result.notes.append(
                f"the candidate also changes {len(sft.changed_outside)} parameter(s) outside the perturbed set "
                f"(e.g. {sft.changed_outside[0]}); the sft slice moves only the perturbed ones"
            )
    if "worst" in families:
        scale = spec.worst_scale or float(np.median(spec.grid))
        for t in tasks:
            pairs = reference_pairs(t, tokenizer)
            if pairs is None:
                result.notes.append(f"task {t.name}: no reference answers, so no worst-case direction")
                continue
            worst = worst_direction(slicer, model, tokenizer, pairs, scale, spec.worst_steps, bs)
            runner.slice(slicer, "worst", 0, worst.delta, scales, [t])
            result.directions.append(
                {"family": "worst", "direction": 0, "task": t.name, "scale": scale, "surrogate_trace": worst.trace}
            )
    if spec.strict_scale is not None:
        a = spec.strict_scale
        for k in range(spec.strict_directions):
            if any(("random", k, a, t.name) not in runner.scores for t in tasks):
                runner.slice(slicer, "random", k, slicer.random(k), [a], tasks)
        alpha = stats.bonferroni(spec.strict_alpha, len(tasks))
        for t in tasks:
            scores = [runner.scores[("random", k, a, t.name)] for k in range(spec.strict_directions)]
            result.strict.append(strict_basin(t.name, a, clean[t.name], scores, spec, alpha))
    result.points = [Point(f, k, task, a, s) for (f, k, a, task), s in sorted(runner.scores.items())]
    sliced = [p for p in result.points if p.family != "random" or p.direction < spec.random_directions]
    result.edges = edges_of(sliced + _zero_points(sliced, clean), clean, spec.tolerance)
    result.cpu_seconds = time.process_time() - t_cpu
    result.wall_seconds = time.perf_counter() - t_wall
    return result


def _zero_points(points: Sequence[Point], clean: dict[str, float]) -> list[Point]:
    keys = sorted({(p.family, p.direction, p.task) for p in points})
    return [Point(f, k, task, 0.0, clean[task]) for f, k, task in keys]


def write_result(result: LandscapeResult, out_dir: Path) -> dict[str, Path]:
    """landscape.json (every point) and one PNG + SVG figure per task."""
    import json

    from auditor.certificate.plots import plot_task_svg, save_task_png

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "landscape.json"}
    tmp = files["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(files["json"])
    data = result.to_json()
    for task in result.clean:
        svg = out_dir / f"landscape-{task}.svg"
        svg.write_text(plot_task_svg(data, task), encoding="utf-8")
        files[f"{task}.svg"] = svg
        files[f"{task}.png"] = save_task_png(data, task, out_dir / f"landscape-{task}.png")
    return files


def read_result(path: Path) -> dict[str, Any]:
    """A landscape.json (or its folder) as written by write_result; AuditorError when unreadable."""
    import json

    path = Path(path)
    if path.is_dir():
        path = path / "landscape.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AuditorError(f"{path}: cannot read landscape results ({exc})") from exc
    for key in ("clean", "points", "grid", "tolerance", "dimension"):
        if not isinstance(data, dict) or key not in data:
            raise AuditorError(f"{path}: not a landscape result (field '{key}' missing)")
    try:
        clean = {str(k): float(v) for k, v in data["clean"].items()}
        for p in data["points"]:
            if p["family"] not in FAMILIES or p["task"] not in clean:
                raise ValueError(f"point {p!r}")
            float(p["a"]), float(p["score"]), int(p["direction"])
        float(data["tolerance"]), int(data["dimension"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise AuditorError(f"{path}: not a landscape result (malformed {exc})") from exc
    return data
