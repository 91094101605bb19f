"""A certified basin edge: certify an ascending grid of sigmas in order, stop at the first failure.

Fixed-sequence testing. For one task with pass threshold c (its requirement) and a grid
sigma_1 < ... < sigma_m fixed before any draw, the hypotheses are H_j: p_A(sigma_j) < c. H_1 is
tested with the audit's own bound at the task's full level alpha_t, then H_2, ..., and testing stops
at the first H_j that is not rejected. The family-wise error stays <= alpha_t without any split: a
false claim needs some true H_j rejected; the first true one in the order, j0, is reached only if all
before it were rejected, and rejecting it happens with probability <= alpha_t. Draws are fresh for
every sigma (independent streams), and nothing about the order depends on the data.

The claim it supports, with probability >= 1 - alpha_t: p_A(sigma) >= c for every sigma_j <= sigma*
(sigma* = the last sigma certified). Radii need their own accounting, both reported:
  - at sigma*, from the threshold: R = sigma* (Phi^-1(c) - Phi^-1(q)), on the same event as the claim
    (p_lower at a data-chosen sigma* is NOT a valid plug-in: sigma* was picked by looking at it);
  - at every sigma of the grid at once, from bounds at level alpha_t / m (Bonferroni over the grid).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditor import bounds, stats


@dataclass
class SigmaStep:
    """One sigma of the grid for one task: its lower bounds and whether it was certified."""

    sigma: float
    p_lower: float  # at the task's level alpha_t (the fixed-sequence test)
    threshold: float
    certified: bool
    p_lower_bonferroni: float | None = None  # at alpha_t / m (simultaneous over the grid)
    radius_bonferroni: float | None = None


@dataclass
class TaskEdge:
    """The certified basin edge of one task."""

    task: str
    steps: list[SigmaStep] = field(default_factory=list)
    sigma_star: float | None = None  # largest sigma certified (None: the first one failed)
    stopped_at: float | None = None  # the sigma whose failure ended the sequence (None: grid exhausted)
    radius_at_star: float | None = None  # sigma* (Phi^-1(c) - Phi^-1(q)): holds with the claim


def check_grid(sigmas: Sequence[float]) -> list[float]:
    """The grid as floats; ValueError unless strictly ascending and positive."""
    out = [float(s) for s in sigmas]
    if not out or any(s <= 0 for s in out) or any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"sigma grid must be positive and strictly ascending, got {list(sigmas)}")
    return out


def certify_grid(
    tasks: Sequence[str],
    sigmas: Sequence[float],
    audit_at: Callable[[float], dict[str, SigmaStep]],
    target: float,
) -> list[TaskEdge]:
    """Fixed-sequence over the grid, each task on its own sequence, one shared audit per sigma.

    Guarantee (module docstring), per task t with probability >= 1 - alpha_t: p_A(sigma) >= its
    threshold for every grid sigma <= sigma*_t.

    Each task's sequence stops at its own first failure (later sigmas never count for it); the audit
    moves on while any task is still certified. `audit_at(sigma)` audits every task at that sigma.
    """
    grid = check_grid(sigmas)
    edges = {t: TaskEdge(t) for t in tasks}
    open_ = list(tasks)
    for sigma in grid:
        if not open_:
            break
        steps = audit_at(sigma)
        for t in list(open_):
            step = steps[t]
            edges[t].steps.append(step)
            if step.certified:
                edges[t].sigma_star = sigma
            else:
                edges[t].stopped_at = sigma
                open_.remove(t)
    for e in edges.values():
        if e.sigma_star is not None:
            last = next(s for s in e.steps if s.sigma == e.sigma_star)
            e.radius_at_star = float(bounds.certified_radius(last.threshold, target, e.sigma_star))
    return [edges[t] for t in tasks]


def run_sigma_grid(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Any],
    loaded: Any,
    identity: Any,
    sigmas: Sequence[float],
    out_dir: Path,
    on_sigma: Callable[[float], None] | None = None,
) -> list[TaskEdge]:
    """Audit `model` at each sigma of the grid in order (fresh draws each), stop when every task failed.

    One certificate per audited sigma under out_dir/sigma-<value>/ (the policy recorded on each is the
    grid's policy; its perturbation record holds that sigma), plus sigma_grid.json.
    """
    from auditor.audit import publish_certificate, run_audit
    from auditor.verdicts import pass_threshold

    grid = check_grid(sigmas)
    policy = loaded.policy
    refuse_relative(policy)
    for t in tasks:
        if pass_threshold(policy, t.name) is None:
            raise ValueError(f"task '{t.name}' has no requirement: a sigma grid certifies against one")
    alpha_t = stats.bonferroni(policy.alpha, len(tasks))
    simultaneous = policy.sampling.max_draws is None and not policy.sampling.randomised_rounding

    def audit_at(sigma: float) -> dict[str, SigmaStep]:
        if on_sigma is not None:
            on_sigma(sigma)
        pert = policy.perturbation.model_copy(update={"sigma": sigma})
        at = loaded.model_copy(update={"policy": policy.model_copy(update={"perturbation": pert})})
        run_dir = out_dir / f"sigma-{sigma:g}"
        cert, sample = run_audit(model, tokenizer, tasks, at, identity, run_dir / "draws.jsonl", run_id=run_dir.name)
        publish_certificate(cert, run_dir, None)
        steps = {}
        for r in cert.tasks:
            c = pass_threshold(at.policy, r.name)
            assert c is not None
            step = SigmaStep(sigma, r.p_lower, c, r.verdict == "pass")
            if simultaneous:
                x = np.asarray(sample.per_task[r.name].values, dtype=float)
                lo = stats.lower_bound(policy.sampling.bound, x, alpha_t / len(grid))
                step.p_lower_bonferroni = float(lo)
                step.radius_bonferroni = float(bounds.certified_radius(lo, policy.gate.target, sigma))
            steps[r.name] = step
        return steps

    edges = certify_grid([t.name for t in tasks], grid, audit_at, policy.gate.target)
    doc = {
        "grid": grid,
        "alpha": policy.alpha,
        "alpha_per_task": alpha_t,
        "target": policy.gate.target,
        "procedure": "fixed-sequence (ascending, stop at the first failure per task); FWER <= alpha_t per task",
        "tasks": [asdict(e) for e in edges],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sigma_grid.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return edges


# --------------------------------------------------------------------------- sigma from the data


def refuse_relative(policy: Any) -> None:
    """Relative noise states radii in a whitened norm whose unit moves with sigma: no common scale across sigmas."""
    if policy.perturbation.scale != "absolute":
        raise ValueError(
            "perturbation.scale: relative is not supported with a sigma grid or sigma: auto "
            "(the whitened radii of different sigmas are in different units); use scale: absolute"
        )


def pilot_seed(seed: int) -> int:
    """The pilot draws' seed: a stream of its own, so the certifying draws are independent of them."""
    from auditor.perturb import derive_seed

    return derive_seed(seed, "sigma-pilot")


def candidate_sigmas(lo: float, hi: float, k: int) -> list[float]:
    """k sigmas spaced geometrically over [lo, hi] (radii scale with sigma, so ratios matter)."""
    if not 0 < lo < hi or k < 2:
        raise ValueError(f"sigma range must satisfy 0 < lo < hi with k >= 2 candidates, got [{lo}, {hi}], k={k}")
    return [float(v) for v in np.geomspace(lo, hi, k)]


def choose_sigma(pilot: dict[float, dict[str, float]], target: float) -> tuple[float, dict[float, float]]:
    """The sigma whose smallest pilot radius over tasks is largest; {sigma: that radius} for the record.

    `pilot[sigma][task]` is the pilot's lower bound. Any rule is valid here: the pilot draws are
    never reused by the bound that certifies the chosen sigma (Cohen et al.'s n0 / n split).
    """
    score = {
        s: min(float(bounds.certified_radius(p, target, s)) for p in by_task.values()) for s, by_task in pilot.items()
    }
    best = max(score, key=lambda s: (score[s], -s))  # ties: the smaller sigma
    return best, score


def run_sigma_auto(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Any],
    loaded: Any,
    identity: Any,
    lo: float,
    hi: float,
    pilot_draws: int,
    out_dir: Path,
    candidates: int = 5,
) -> dict[str, Any]:
    """Pilot n0 draws at each candidate sigma (own seed), pick sigma, certify it with fresh draws.

    Writes the certificate of the chosen sigma under out_dir/ and sigma_auto.json (the pilot table).
    """
    from auditor.audit import publish_certificate, run_audit

    policy = loaded.policy
    refuse_relative(policy)

    def at(sigma: float, seed: int, draws: int) -> Any:
        pert = policy.perturbation.model_copy(update={"sigma": sigma})
        sampling = policy.sampling.model_copy(update={"draws": draws, "max_draws": None})
        p = policy.model_copy(update={"perturbation": pert, "sampling": sampling, "seed": seed})
        return loaded.model_copy(update={"policy": p})

    pilot: dict[float, dict[str, float]] = {}
    pseed = pilot_seed(policy.seed)
    for sigma in candidate_sigmas(lo, hi, candidates):
        log = out_dir / "pilot" / f"sigma-{sigma:.4g}.jsonl"
        cert, _ = run_audit(model, tokenizer, tasks, at(sigma, pseed, pilot_draws), identity, log)
        pilot[sigma] = {r.name: r.p_lower for r in cert.tasks}
    chosen, radii = choose_sigma(pilot, policy.gate.target)
    final = loaded.model_copy(
        update={
            "policy": policy.model_copy(
                update={"perturbation": policy.perturbation.model_copy(update={"sigma": chosen})}
            )
        }
    )
    cert, _ = run_audit(model, tokenizer, tasks, final, identity, out_dir / "draws.jsonl", run_id=out_dir.name)
    publish_certificate(cert, out_dir, None)
    doc = {
        "range": [lo, hi],
        "pilot_seed": pseed,
        "pilot_draws": pilot_draws,
        "pilot_p_lower": {f"{s:.6g}": v for s, v in pilot.items()},
        "pilot_min_radius": {f"{s:.6g}": v for s, v in radii.items()},
        "chosen_sigma": chosen,
        "certifying_seed": policy.seed,
        "certifying_draws": policy.sampling.max_draws or policy.sampling.draws,
        "rule": "largest smallest-over-tasks radius at the target from the pilot lower bounds; pilot draws "
        "(own seed) never enter the certificate's bound",
        "verdict": cert.verdict,
        "p_lower": {r.name: r.p_lower for r in cert.tasks},
        "radius": {r.name: r.radius for r in cert.tasks},
    }
    (out_dir / "sigma_auto.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return doc
