"""The gate's checks of a sigma search on a certificate: every search number re-derived from the policy text.

A grid's later steps and an auto search's pilots are audits at a sigma that was reached by looking at
data. Presented alone they would read as a certificate of a sigma fixed in advance, so a certificate
whose recorded policy holds a grid or `auto` must carry the search (sigma_1's or the chosen sigma's
certificate does), and the search must be the one its own numbers and the policy give.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, NoReturn

from auditor.audit.sigma_search import (
    AUTO_PROCEDURE,
    GRID_PROCEDURE,
    auto_claims,
    choose_sigma,
    grid_claims,
    pilot_seed,
    step_dir,
)
from auditor.audit.verdicts import requirement_threshold, unreachable_requirements
from auditor.certificate.schema import Certificate, SigmaEdge, TaskResult
from auditor.errors import PolicyError
from auditor.policy.schema import SigmaAuto, parse_policy
from auditor.stats import smoothing

Refuse = Callable[[str, object, object], NoReturn]
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(map(_close, a, b))


def check_search(cert: Certificate, stated: Any, refuse: Refuse, not_a_search: Callable[[str], NoReturn]) -> None:
    """`stated` is the policy text's sigma (a list or a mapping); refuse anything the search does not give."""
    search = cert.sigma_search
    if search is None:
        not_a_search("a grid" if isinstance(stated, list) else "auto")
    try:
        grid = [float(s) for s in stated] if isinstance(stated, list) else []
        auto = None if isinstance(stated, list) else SigmaAuto.model_validate(stated)
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        refuse("policy.text", stated, f"a valid sigma grid or auto ({exc.__class__.__name__})")
    if auto is None:
        if search.mode != "grid" or len(grid) < 2 or not _same(search.sigmas, grid):
            refuse("sigma_search.sigmas", search.sigmas, grid)
        if not _close(cert.perturbation.sigma, grid[0]):
            refuse("perturbation.sigma", cert.perturbation.sigma, grid[0])
        _check_grid(cert, grid, refuse)
    else:
        if search.mode != "auto" or not _same(search.sigmas, auto.sigmas()):
            refuse("sigma_search.sigmas", search.sigmas, auto.sigmas())
        _check_auto(cert, auto, refuse)


def _check_grid(cert: Certificate, grid: list[float], refuse: Refuse) -> None:
    search = cert.sigma_search
    assert search is not None
    s = cert.sampling
    claims = grid_claims(s.alpha, s.alpha_per_task, len(grid), not s.sequential)
    if search.procedure != GRID_PROCEDURE or search.claims != claims:
        refuse("sigma_search.claims", search.claims, claims)
    if [e.task for e in search.edges] != [t.name for t in cert.tasks]:
        refuse("sigma_search.edges", [e.task for e in search.edges], [t.name for t in cert.tasks])
    for i, (e, t) in enumerate(zip(search.edges, cert.tasks, strict=True)):
        _check_edge(f"sigma_search.edges[{i}]", e, t, grid, refuse)


def _check_edge(at: str, e: SigmaEdge, t: TaskResult, grid: list[float], refuse: Refuse) -> None:
    sigmas = [st.sigma for st in e.steps]
    if not e.steps or not _same(sigmas, grid[: len(sigmas)]):
        refuse(f"{at}.steps", sigmas, grid)
    for j, st in enumerate(e.steps):
        here = f"{at}.steps[{j}]"
        need = requirement_threshold(t.min_p_lower, t.min_radius, t.target, st.sigma)
        if need is None or not _close(st.threshold, need):
            refuse(f"{here}.threshold", st.threshold, need)
        if st.certified != (st.p_lower >= st.threshold):
            refuse(f"{here}.certified", st.certified, st.p_lower >= st.threshold)
        if st.p_lower_bonferroni is not None and st.p_lower_bonferroni > st.p_lower + 1e-12:
            # the same draws bounded at alpha_task / m can never give more than at alpha_task
            refuse(f"{here}.p_lower_bonferroni", st.p_lower_bonferroni, f"<= p_lower {st.p_lower}")
        if st.p_lower_bonferroni is not None and not _close(
            st.radius_bonferroni, float(smoothing.certified_radius(st.p_lower_bonferroni, t.target, st.sigma))
        ):
            refuse(f"{here}.radius_bonferroni", st.radius_bonferroni, "the radius of p_lower_bonferroni")
        run, digest = (".", None) if j == 0 else (step_dir(st.sigma), st.certificate_sha256)
        if st.run != run or (j > 0 and not _SHA256.fullmatch(digest or "")) or (j == 0 and st.certificate_sha256):
            refuse(f"{here}.run", st.run, run)
    first = e.steps[0]
    if not _close(first.p_lower, t.p_lower) or first.certified != (t.verdict == "pass"):
        refuse(f"{at}.steps[0].p_lower", first.p_lower, t.p_lower)
    # a task's sequence ends at its first failure; one never failing runs the whole grid
    failed = [j for j, st in enumerate(e.steps) if not st.certified]
    if failed and failed[0] != len(e.steps) - 1:
        refuse(f"{at}.steps", sigmas, "steps up to the first failure")
    if not failed and len(e.steps) != len(grid):
        refuse(f"{at}.steps", sigmas, grid)
    star = e.steps[-1] if not failed else (e.steps[-2] if len(e.steps) > 1 else None)
    if not _close(e.sigma_star, None if star is None else star.sigma):
        refuse(f"{at}.sigma_star", e.sigma_star, None if star is None else star.sigma)
    if not _close(e.stopped_at, e.steps[-1].sigma if failed else None):
        refuse(f"{at}.stopped_at", e.stopped_at, e.steps[-1].sigma if failed else None)
    radius = None if star is None else float(smoothing.certified_radius(star.threshold, t.target, star.sigma))
    if not _close(e.radius_at_star, radius):
        refuse(f"{at}.radius_at_star", e.radius_at_star, radius)


def _check_auto(cert: Certificate, auto: SigmaAuto, refuse: Refuse) -> None:
    search = cert.sigma_search
    assert search is not None
    seed = pilot_seed(cert.seed)
    if search.pilot_seed != seed or search.pilot_draws != auto.pilot_draws:
        refuse("sigma_search.pilot_seed", (search.pilot_seed, search.pilot_draws), (seed, auto.pilot_draws))
    if not _same([c.sigma for c in search.pilot], auto.sigmas()):
        refuse("sigma_search.pilot", [c.sigma for c in search.pilot], auto.sigmas())
    target = cert.tasks[0].target
    try:
        policy = parse_policy(cert.policy.text).policy
    except PolicyError as exc:
        refuse("policy.text", "unparseable", f"a valid policy ({exc})")
    for i, c in enumerate(search.pilot):
        reachable = not unreachable_requirements(
            policy.model_copy(update={"perturbation": policy.perturbation.at(c.sigma)})
        )
        if c.reachable != reachable:
            refuse(f"sigma_search.pilot[{i}].reachable", c.reachable, reachable)
        if sorted(c.predicted_p_lower) != sorted(t.name for t in cert.tasks):
            refuse(f"sigma_search.pilot[{i}].predicted_p_lower", sorted(c.predicted_p_lower), "one per task")
        radius = min(float(smoothing.certified_radius(p, target, c.sigma)) for p in c.predicted_p_lower.values())
        if not _close(c.min_radius, radius):
            refuse(f"sigma_search.pilot[{i}].min_radius", c.min_radius, radius)
    if not any(c.reachable for c in search.pilot):  # such a policy is refused before any draw
        refuse("sigma_search.pilot", "no reachable candidate", "at least one")
    chosen = choose_sigma(search.pilot)
    if not (_close(search.chosen, chosen) and _close(cert.perturbation.sigma, chosen)):
        refuse("sigma_search.chosen", (search.chosen, cert.perturbation.sigma), chosen)
    claims = auto_claims(auto.pilot_draws, seed, cert.seed, chosen, cert.sampling.alpha)
    if search.procedure != AUTO_PROCEDURE or search.claims != claims:
        refuse("sigma_search.claims", search.claims, claims)
