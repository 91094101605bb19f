"""sigma as a search: a certified basin edge over an ascending grid, or sigma chosen from pilot draws.

Grid (fixed-sequence testing). For one task with pass threshold c (its requirement) and a grid
sigma_1 < ... < sigma_m fixed in the policy, the hypotheses are H_j: p_A(sigma_j) < c. H_1 is tested
with the audit's own bound at the task's full level alpha_t, then H_2, ..., and testing stops at the
first H_j that is not rejected. The family-wise error stays <= alpha_t without any split: a false
claim needs some true H_j rejected; the first true one in the order, j0, is reached only if all
before it were rejected, and rejecting it happens with probability <= alpha_t. That argument uses
only each test's own level, so it holds under any dependence between the sigmas' draws; every sigma
uses the policy's seed (common random numbers: the same directions, scaled), which keeps the curve
of p_lower against sigma smooth.

The claim it supports, with probability >= 1 - alpha_t: p_A(sigma) >= c for every sigma_j <= sigma*.
Radii need their own accounting, both reported:
  - at sigma*, from the threshold: R = sigma* (Phi^-1(c) - Phi^-1(q)), on the same event as the claim
    (p_lower at a data-chosen sigma* is NOT a valid plug-in: sigma* was picked by looking at it);
  - at every sigma of the grid at once, from bounds at level alpha_t / m (Bonferroni over the grid).

Auto (Cohen et al.'s n0 / n split). Pilot draws on a seed of their own score each candidate sigma;
the chosen sigma is then certified with the policy's own draws, which the choice never saw, so the
certificate's bounds hold exactly as for a sigma fixed in advance. Pilot draws never enter a bound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditor import stats
from auditor.audit import verdicts
from auditor.audit.seeding import derive_seed
from auditor.certificate.schema import Certificate, SigmaEdge, SigmaPilot, SigmaSearch, SigmaStep
from auditor.model.checkpoint import sha256_file
from auditor.policy.tasks import Requirement
from auditor.stats import smoothing

GRID_PROCEDURE = (
    "fixed-sequence: the grid's sigmas are audited in ascending order with fresh audits (the policy's seed); "
    "each task's sequence stops at its first failure, and later sigmas never count for it"
)
AUTO_PROCEDURE = (
    "n0/n split: pilot draws on their own seed score every candidate; the candidate with the largest smallest "
    "predicted radius over tasks at the gate target is certified with the policy's own draws"
)
# audit(loaded policy at one sigma, run folder) -> (certificate, sample): run_audit with the caller's model
StepAudit = Callable[[Any, Path], tuple[Certificate, Any]]


def step_dir(sigma: float) -> str:
    """A later grid sigma's run folder, relative to the grid's certificate (sigma_1 is its own run).

    repr, not a rounded format: two grid sigmas never share a folder."""
    return f"sigma-{sigma!r}"


def certify_grid(
    tasks: Sequence[str],
    grid: Sequence[float],
    audit_at: Callable[[float], dict[str, SigmaStep]],
    target: float,
) -> list[SigmaEdge]:
    """Fixed-sequence over the grid, each task on its own sequence, one shared audit per sigma.

    Guarantee (module docstring), per task t with probability >= 1 - alpha_t: p_A(sigma) >= its
    threshold for every grid sigma <= sigma*_t. The audit moves on while any task is still certified.
    """
    steps: dict[str, list[SigmaStep]] = {t: [] for t in tasks}
    open_ = list(tasks)
    for sigma in grid:
        if not open_:
            break
        audited = audit_at(sigma)
        for t in list(open_):
            steps[t].append(audited[t])
            if not audited[t].certified:
                open_.remove(t)
    edges = []
    for t in tasks:
        passed = [s for s in steps[t] if s.certified]
        failed = [s for s in steps[t] if not s.certified]
        star = passed[-1] if passed else None
        edges.append(
            SigmaEdge(
                task=t,
                steps=steps[t],
                sigma_star=None if star is None else star.sigma,
                stopped_at=failed[0].sigma if failed else None,
                radius_at_star=None
                if star is None
                else float(smoothing.certified_radius(star.threshold, target, star.sigma)),
            )
        )
    return edges


def grid_claims(alpha: float, alpha_task: float, m: int, simultaneous: bool) -> list[str]:
    """The grid's claims and the error level of each family."""
    out = [
        f"Fixed-sequence (error <= alpha_task = {alpha_task:.4g} per task, <= alpha = {alpha:.4g} in all): for each "
        "task, p_A(sigma) >= its threshold at every grid sigma up to its sigma*, so any change with ||Delta||_2 <= "
        "radius_at_star keeps the smoothed score at sigma* >= the gate target.",
        "This certificate's own tasks are the ordinary audit at sigma_1 (fixed before any draw): "
        f"error <= {alpha:.4g}.",
    ]
    if simultaneous:
        out.append(
            f"Simultaneous over the grid (Bonferroni, alpha_task / {m} per sigma): every step's p_lower_bonferroni "
            "and radius_bonferroni hold together, error <= alpha."
        )
    gate = "the simultaneous family (each task's best grid sigma)" if simultaneous else "sigma_1's own bounds"
    out += [
        "Each family above holds with probability >= 1 - alpha on its own; relying on two at once holds with "
        f">= 1 - 2 alpha (union bound). The gate uses one family, fixed before any draw: {gate}.",
        "A later step's certificate (sigma-*/) read alone is not a certificate of sigma*: that sigma was reached "
        "by looking at the data. The gate refuses it.",
    ]
    return out


def run_grid(tasks: Sequence[Any], loaded: Any, run_dir: Path, audit: StepAudit) -> tuple[Certificate, Any]:
    """Audit each grid sigma in order (sigma_1 in run_dir itself, the others in run_dir/sigma-<v>/), stop
    when every task has failed; the sigma_1 certificate with the search attached, and its sample."""
    from auditor.attest.publish import publish

    policy = loaded.policy
    grid = policy.perturbation.grid
    alpha_t = stats.bonferroni(policy.alpha, len(tasks))
    simultaneous = policy.sampling.max_draws is None
    first: dict[str, Any] = {}

    def audit_at(sigma: float) -> dict[str, SigmaStep]:
        at = loaded.at_sigma(sigma)
        here = run_dir if sigma == grid[0] else run_dir / step_dir(sigma)
        cert, sample = audit(at, here)
        digest = None
        if sigma == grid[0]:
            first.update(cert=cert, sample=sample)
        else:
            publish(cert, here, None)  # unsigned: only the search's own certificate is signed
            digest = sha256_file(here / "certificate.json")
        out = {}
        for r in cert.tasks:
            c = verdicts.pass_threshold(at.policy, r.name)
            assert c is not None  # the policy refuses a grid with a task lacking a requirement
            lo_b = rad_b = None
            if simultaneous:
                units = np.asarray(sample.per_task[r.name].units, dtype=float)
                _, lo_b, _ = verdicts.task_interval(
                    units,
                    bound=policy.sampling.bound,
                    sequential=False,
                    alpha=alpha_t / len(grid),
                    seed=policy.seed,
                    task=r.name,
                )
                rad_b = float(smoothing.certified_radius(lo_b, policy.gate.target, sigma))
            out[r.name] = SigmaStep(
                sigma=sigma,
                p_lower=r.p_lower,
                threshold=c,
                certified=r.p_lower >= c,
                p_lower_bonferroni=lo_b,
                radius_bonferroni=rad_b,
                run="." if digest is None else step_dir(sigma),
                certificate_sha256=digest,
            )
        return out

    edges = certify_grid([t.name for t in tasks], grid, audit_at, policy.gate.target)
    search = SigmaSearch(
        mode="grid",
        sigmas=list(grid),
        procedure=GRID_PROCEDURE,
        claims=grid_claims(policy.alpha, alpha_t, len(grid), simultaneous),
        edges=edges,
    )
    return first["cert"].model_copy(update={"sigma_search": search}), first["sample"]


# --------------------------------------------------------------------------- sigma from the data


def pilot_seed(seed: int) -> int:
    """The pilot draws' seed: a stream of its own, so the certifying draws are independent of them."""
    return derive_seed(seed, "sigma-pilot")


def predicted_lower(units: Sequence[float], policy: Any, task: str, n_tasks: int, resamples: int = 25) -> float:
    """What the certifying audit would bound if its draws looked like the pilot's: the median, over
    bootstrap resamples of n pilot units, of the policy's own bound (fixed-n or sequential, at alpha_task).

    A prediction for the choice only; it carries no guarantee and needs none: the certificate's bound
    never sees the pilot draws. Deterministic: the resamples are seeded by (seed, task).
    """
    s = policy.sampling
    n = s.max_draws or s.draws
    x = np.asarray(units, dtype=float)
    rng = np.random.default_rng(derive_seed(policy.seed, f"sigma-predict/{task}"))
    lows = [
        verdicts.task_interval(
            rng.choice(x, size=n, replace=True),
            bound=s.bound,
            sequential=s.max_draws is not None,
            alpha=stats.bonferroni(policy.alpha, n_tasks),
            seed=policy.seed,
            task=task,
        )[1]
        for _ in range(resamples)
    ]
    return float(np.median(lows))


def auto_claims(pilot_draws: int, pilot_seed: int, seed: int, chosen: float, alpha: float) -> list[str]:
    """What a certificate of sigma: auto claims, and why the choice costs no alpha."""
    return [
        f"The pilot ({pilot_draws} draws per candidate, seed {pilot_seed}) chose sigma = {chosen:.6g}; the "
        f"certifying draws (seed {seed}) never entered the choice, so this certificate's bounds hold at "
        f"alpha = {alpha:.4g} exactly as for a sigma fixed in advance. Pilot draws enter no bound."
    ]


def choose_sigma(pilot: Sequence[SigmaPilot]) -> float:
    """The reachable candidate whose smallest predicted radius over tasks is largest (ties: the smaller sigma).

    Unreachable: no run of the policy's draws could meet a requirement there (a min_radius needs a
    higher p_lower at a smaller sigma); the policy is refused up front when no candidate is reachable.
    """
    return max((c for c in pilot if c.reachable), key=lambda c: (c.min_radius, -c.sigma)).sigma


def run_auto(tasks: Sequence[Any], loaded: Any, run_dir: Path, audit: StepAudit) -> tuple[Certificate, Any]:
    """Pilot each candidate (own seed, pilot_draws each, under run_dir/pilot/), choose, certify the choice
    in run_dir with the policy's draws; that certificate with the search attached, and its sample."""
    policy = loaded.policy
    auto = policy.perturbation.auto
    seed = pilot_seed(policy.seed)
    sampling = policy.sampling.model_copy(update={"draws": auto.pilot_draws, "max_draws": None})
    judge_nothing = [t.model_copy(update={"require": Requirement()}) for t in policy.tasks]  # the pilot only measures
    pilot = []
    for k, sigma in enumerate(auto.sigmas()):
        at = loaded.at_sigma(sigma, seed=seed, sampling=sampling, tasks=judge_nothing)
        cert, sample = audit(at, run_dir / "pilot" / f"{k:02d}-sigma-{sigma:.4g}")
        units = {r.name: sample.per_task[r.name].units for r in cert.tasks}
        predicted = {name: predicted_lower(u, policy, name, len(tasks)) for name, u in units.items()}
        radius = min(float(smoothing.certified_radius(p, policy.gate.target, sigma)) for p in predicted.values())
        p_hat = {r.name: r.p_hat for r in cert.tasks}
        reachable = not verdicts.unreachable_requirements(loaded.at_sigma(sigma).policy)
        pilot.append(
            SigmaPilot(sigma=sigma, p_hat=p_hat, predicted_p_lower=predicted, min_radius=radius, reachable=reachable)
        )
    chosen = choose_sigma(pilot)
    cert, sample = audit(loaded.at_sigma(chosen), run_dir)
    search = SigmaSearch(
        mode="auto",
        sigmas=auto.sigmas(),
        procedure=AUTO_PROCEDURE,
        claims=auto_claims(auto.pilot_draws, seed, policy.seed, chosen, policy.alpha),
        pilot_seed=seed,
        pilot_draws=auto.pilot_draws,
        pilot=pilot,
        chosen=chosen,
    )
    return cert.model_copy(update={"sigma_search": search}), sample
