"""The verdict rules: what a task needs, when a sequential audit may stop, what passes overall.

One place for every rule that turns bounds into words, so the sampler (which stops on them) and
the certificate (which reports them) can never disagree:

* a task's requirement is a p_lower threshold (its ``min_p_lower``, and the p that gives its
  ``min_radius`` at the gate target q); a task without one is **measured**: its numbers are on the
  certificate, but it never passes or fails and never makes a certificate pass on its own;
* the reported interval is the bound's, clipped so that p_lower <= p_hat <= p_upper (a running
  intersection can cross the sample mean; clipping only loosens a valid bound, so it stays valid);
* a sequential audit stops once every task *with a requirement* is decided on that reported
  interval, computed on the very units the certificate bounds; with no requirement at all it runs
  its whole budget (there is nothing to decide);
* overall: any failed task fails the audit; an undecided one is inconclusive (or what the policy
  says); a policy with no requirement at all is **measured**, never a pass.

Pure rules on numbers: no torch, no model, only the policy and the statistics before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from auditor import stats
from auditor.audit.seeding import derive_seed
from auditor.policy.schema import Policy

Verdict = Literal["pass", "fail", "inconclusive", "measured"]
Decision = Literal["pass", "fail", "undecided", "measured"]

MEASURED_REASON = "no requirement set: measured only (it cannot make the certificate pass)"


def pass_threshold(policy: Policy, name: str) -> float | None:
    """The p_lower a task needs: its min_p_lower and, for min_radius, the p giving that radius at q."""
    spec = next(t for t in policy.tasks if t.name == name)
    pert = policy.perturbation
    unit = 1.0 if pert.scale == "relative" or spec.require.min_radius is None else pert.fixed_sigma
    return requirement_threshold(spec.require.min_p_lower, spec.require.min_radius, policy.gate.target, unit)


def requirement_threshold(
    min_p_lower: float | None, min_radius: float | None, target: float, unit: float
) -> float | None:
    """max(min_p_lower, Phi(Phi^-1(q) + min_radius / unit)): the p_lower meeting both (None: no requirement).

    `unit` is the std radii are measured in: sigma, or 1 for relative noise (whitened radii).
    """
    needs = [] if min_p_lower is None else [min_p_lower]
    if min_radius is not None:
        from scipy.stats import norm

        needs.append(float(norm.cdf(norm.ppf(target) + min_radius / unit)))
    return max(needs) if needs else None


def reported_interval(lower: float, upper: float, p_hat: float) -> tuple[float, float]:
    """[min(lower, p_hat), max(upper, p_hat)]: never a lower bound above the mean it bounds.

    Guarantee: each end is no tighter than the bound it comes from, so it keeps that bound's
    coverage (with probability >= 1 - alpha, p >= the returned lower end).
    """
    return min(lower, p_hat), max(upper, p_hat)


def task_interval(
    units: np.ndarray, *, bound: str, sequential: bool, alpha: float, seed: int, task: str
) -> tuple[float, float, float]:
    """(p_hat, p_lower, p_upper) the certificate reports for a task's units: the one computation the
    audit and `verify` share.

    Guarantee: with probability >= 1 - alpha over the draws, p_lower <= p <= ... per side, as the
    policy's bound states (sequential audits: the anytime-valid betting sequence at the stop;
    fixed-n: the policy's bound, whose randomisation, if any, comes from (seed, task), never from
    the scores), then clipped around p_hat (clipping only loosens a valid bound).
    """
    x = np.asarray(units, dtype=float)
    p_hat = float(np.mean(x))
    if sequential:  # the anytime-valid running bound at the stop
        seq = stats.BettingSequence(alpha)
        seq.extend(x)
        lo, hi = seq.lower, seq.upper
    else:
        u_lo, u_hi = bound_u(bound, seed, task)
        lo = stats.lower_bound(bound, x, alpha, u_lo)
        hi = stats.upper_bound(bound, x, alpha, u_hi)
    lo, hi = reported_interval(lo, hi, p_hat)
    return p_hat, lo, hi


def decide(threshold: float | None, lower: float, upper: float) -> Decision:
    """A sequential audit's state for one task, on its reported interval."""
    if threshold is None:
        return "measured"
    if lower >= threshold:
        return "pass"
    if upper < threshold:
        return "fail"
    return "undecided"


def may_stop(decisions: dict[str, Decision]) -> bool:
    """Stop once every task with a requirement is decided; never when no task has one."""
    required = [d for d in decisions.values() if d != "measured"]
    return bool(required) and all(d != "undecided" for d in required)


@dataclass(frozen=True)
class TaskJudgement:
    verdict: Verdict
    reasons: list[str]


def judge_task(
    *,
    p_lower: float,
    radius: float,
    min_p_lower: float | None,
    min_radius: float | None,
    target: float,
    decision: str | None,
    draws: int,
) -> TaskJudgement:
    """A task's verdict from its reported p_lower and radius against its requirement."""
    if min_p_lower is None and min_radius is None:
        return TaskJudgement("measured", [MEASURED_REASON])
    reasons: list[str] = []
    ok_all = True
    if min_p_lower is not None:
        ok = p_lower >= min_p_lower
        reasons.append(f"p_lower {p_lower:.4f} {'>=' if ok else '<'} required {min_p_lower:.4f}")
        ok_all &= ok
    if min_radius is not None:
        ok = radius >= min_radius
        reasons.append(f"certified radius {radius:.3g} {'>=' if ok else '<'} required {min_radius:.3g} at q={target}")
        ok_all &= ok
    if ok_all:
        return TaskJudgement("pass", reasons)
    if decision == "undecided":
        return TaskJudgement("inconclusive", [*reasons, f"undecided after {draws} draws (budget spent)"])
    return TaskJudgement("fail", reasons)


def judge_overall(
    verdicts: Sequence[tuple[str, Verdict]], inconclusive_counts_as: str = "fail"
) -> tuple[Verdict, list[str]]:
    """The certificate's verdict from its tasks' (name, verdict) pairs."""
    failed = [n for n, v in verdicts if v == "fail"]
    open_ = [n for n, v in verdicts if v == "inconclusive"]
    measured = [n for n, v in verdicts if v == "measured"]
    note = [f"measured only (no requirement): {', '.join(measured)}"] if measured else []
    if failed:
        return "fail", [f"task(s) failed: {', '.join(failed)}", *note]
    if open_:
        rule = inconclusive_counts_as
        verdict: Verdict = "pass" if rule == "pass" else "inconclusive"
        return verdict, [
            f"task(s) undecided within the draw budget: {', '.join(open_)} (policy: inconclusive counts as {rule})",
            *note,
        ]
    if len(measured) == len(verdicts):
        return "measured", ["no task has a requirement: the audit measured but tested nothing, so it is not a pass"]
    return "pass", ["every task with a requirement meets it", *note]


def bound_u(bound: str, seed: int, task: str) -> tuple[float, float]:
    """The u's (lower, upper) a randomised bound uses for a task: from (seed, task), never from the
    scores; (1, 1) for a deterministic bound."""
    if bound not in stats.RANDOMISED:
        return 1.0, 1.0
    rng = np.random.default_rng(derive_seed(seed, task, "bound"))
    return stats.seeded_u(rng), stats.seeded_u(rng)


def best_possible_lower(bound: str, draws: int, alpha: float, u: float = 1.0) -> float:
    """The p_lower `bound` gives when all `draws` units are 1: no run of this size can certify more."""
    return stats.lower_bound(bound, np.ones(draws), alpha, u)


def unreachable_requirements(policy: Policy) -> list[str]:
    """Tasks whose requirement no run of this policy's size could meet (too few draws for the bound).

    A design problem to refuse before any work: even a perfect run cannot reach the threshold.
    """
    s = policy.sampling
    n = s.max_draws if s.max_draws is not None else s.draws
    bound = "betting" if s.max_draws is not None else s.bound
    alpha = stats.bonferroni(policy.alpha, len(policy.tasks))
    out = []
    for t in policy.tasks:
        need = pass_threshold(policy, t.name)
        best = best_possible_lower(bound, n, alpha, bound_u(bound, policy.seed, t.name)[0])
        if need is not None and best < need:
            out.append(
                f"task '{t.name}' needs p_lower >= {need:.4f} but {n} draws with bound {bound} at alpha {alpha:.3g} "
                f"certify at most {best:.4f} even when every draw scores 1: raise sampling.draws"
            )
    return out
