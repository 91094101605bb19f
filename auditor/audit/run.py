"""From a policy and a model to a certificate: the pipeline the CLI and the Python API share."""

from __future__ import annotations

import datetime as dt
import hashlib
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from auditor import stats
from auditor.attest.inputs import policy_files
from auditor.audit import fragility, verdicts
from auditor.audit.drawlog import RECORD_FORMAT, DrawLog
from auditor.audit.sample import (
    CLEAN_FILE,
    DrawSource,
    SampleResult,
    clean_run,
    make_perturber,
    plan_from_policy,
    run_draws,
    write_clean,
)
from auditor.certificate.schema import (
    GUARANTEE,
    GUARANTEE_RELATIVE,
    BoundCurve,
    Certificate,
    ModelIdentity,
    PerturbationRecord,
    PolicyRecord,
    SamplingRecord,
    TaskResult,
    ToolRecord,
)
from auditor.errors import PolicyError
from auditor.policy.schema import LoadedPolicy, Policy, parse_policy
from auditor.stats import smoothing
from auditor.tasks.base import Example, Task
from auditor.version import __version__

# Points (in units of sigma) at which the certificate tabulates the bound curves.
CURVE_STEPS = [0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0]
REPLAY_NOTE = (
    "Anyone holding the model, the policy and this run's folder (draws.jsonl, clean.json, certificate.json) can "
    "re-run recorded draws and compare every per-example outcome with the log: `auditor replay RUN_DIR --draws K` "
    "(K draws picked from the seed; or --draw I for given ones). Exit 0: identical; 1: the differing draws and "
    "examples are named. Draw i depends only on (seed, i), so any draw replays alone."
)


def _display_path(path: Path | None) -> str | None:
    """The policy path as the user would type it: relative to the working directory when inside it."""
    if path is None:
        return None
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _versions() -> dict[str, str]:
    import scipy
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def check_design(loaded: LoadedPolicy) -> None:
    """Refuse, before any work, a policy whose draws could never meet one of its requirements.

    A sigma grid is refused if any of its sigmas is out of reach; sigma: auto only if every candidate is.
    """
    pert = loaded.policy.perturbation
    if isinstance(pert.sigma, float):
        problems = verdicts.unreachable_requirements(loaded.policy)
    else:
        each = [
            [f"at sigma {s:g}: {m}" for m in verdicts.unreachable_requirements(loaded.at_sigma(s).policy)]
            for s in pert.search_sigmas()
        ]
        problems = [m for ms in each for m in ms] if pert.grid or all(each) else []
    if problems:
        where = loaded.path or "<policy>"
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PolicyError(f"{where}: field 'sampling.draws': {problems[0]}{more}")


def _task_result(task: Task, policy: Policy, sample: SampleResult, clean: float, alpha_task: float) -> TaskResult:
    spec = next(t for t in policy.tasks if t.name == task.name)
    sampling, q = policy.sampling, policy.gate.target
    # relative noise: radii in the whitened norm ||Sigma^-1/2 Delta||, i.e. in units where sigma = 1
    sigma = policy.perturbation.fixed_sigma if policy.perturbation.scale == "absolute" else 1.0
    units = np.asarray(sample.per_task[task.name].units, dtype=float)  # exactly what the sampler decided on
    p_hat, lo, hi = verdicts.task_interval(
        units,
        bound=sampling.bound,
        sequential=sampling.max_draws is not None,
        alpha=alpha_task,
        seed=policy.seed,
        task=task.name,
    )
    radius = float(smoothing.certified_radius(lo, q, sigma))
    curve = smoothing.bound_curve(lo, sigma, [sigma * s for s in CURVE_STEPS])
    judged = verdicts.judge_task(
        p_lower=lo,
        radius=radius,
        min_p_lower=spec.require.min_p_lower,
        min_radius=spec.require.min_radius,
        target=q,
        decision=sample.decided.get(task.name),
        draws=sample.draws_used,
    )
    return TaskResult(
        name=task.name,
        description=getattr(task, "describe", lambda: {})(),
        n_examples=len(task.examples),
        clean_score=clean,
        draws=sample.draws_used,
        evaluations=sample.per_task[task.name].evaluations,
        p_hat=p_hat,
        p_lower=float(lo),
        p_upper=float(hi),
        statistical_slack=p_hat - float(lo),
        loss_under_noise=clean - p_hat,
        target=q,
        radius=radius,
        radius_weak=float(smoothing.weak_radius(lo, q, sigma)),
        radius_over_sigma=radius / sigma,
        curve=BoundCurve(**curve),
        min_p_lower=spec.require.min_p_lower,
        min_radius=spec.require.min_radius,
        verdict=judged.verdict,
        reasons=judged.reasons,
    )


def run_audit(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[Task],
    loaded: LoadedPolicy,
    identity: ModelIdentity,
    log_path: Path,
    *,
    resume: bool = False,
    run_id: str | None = None,
    on_draw: Callable[[int, dict[str, float]], None] | None = None,
    source: DrawSource | None = None,
) -> tuple[Certificate, SampleResult]:
    """Sample, bound and judge: the certificate for `model` under `loaded` (nothing written but the log).

    Next to the log it keeps the clean model's outcomes and answers (clean.json).
    """
    policy = loaded.policy
    check_design(loaded)
    started = dt.datetime.now(dt.timezone.utc)
    pert = policy.perturbation
    perturber = make_perturber(model, policy)
    plan = plan_from_policy(policy, [t.name for t in tasks])
    alpha_task = plan.alpha_per_task
    header = {
        "policy_sha256": loaded.sha256,
        "model_root_digest": identity.root_digest,
        "parameters_digest": hashlib.sha256("\n".join(perturber.names).encode()).hexdigest(),
        "record_format": RECORD_FORMAT,
    }
    attested = policy_files(loaded)  # hashed before any draw: what the draws were scored with
    log = DrawLog(log_path, header, resume)  # locks the run folder: a second run fails before any work
    try:
        clean = clean_run(model, tokenizer, tasks, policy.sampling.batch_size)
        write_clean(log_path.parent / CLEAN_FILE, clean)
        sample = run_draws(model, tokenizer, tasks, perturber, plan, log, on_draw, source)
    finally:
        log.close()
    results = [_task_result(t, policy, sample, clean[t.name].score, alpha_task) for t in tasks]
    results = fragility.with_fragility(results, model, tokenizer, tasks, perturber, plan, sample, clean)
    verdict, reasons = verdicts.judge_overall([(r.name, r.verdict) for r in results], policy.sampling.inconclusive)
    cert = Certificate(
        run_id=run_id or started.strftime("%Y%m%d-%H%M%S"),
        tool=ToolRecord(name="auditor", version=__version__, versions=_versions()),
        started=started.isoformat(timespec="seconds"),
        finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        model=identity,
        policy=PolicyRecord(path=_display_path(loaded.path), sha256=loaded.sha256, text=loaded.text),
        seed=policy.seed,
        perturbation=PerturbationRecord(
            space=pert.space,
            sigma=pert.fixed_sigma,
            include=list(pert.include),
            exclude=list(pert.exclude),
            parameters=list(perturber.names),
            parameters_digest=header["parameters_digest"],
            dimension=int(perturber.dimension),
            typical_noise_norm=float(perturber.typical_noise_norm),
            scale=pert.scale,
            tensor_rms=getattr(perturber, "tensor_rms", None),
        ),
        sampling=SamplingRecord(
            design=policy.sampling.design,
            bound=policy.sampling.bound,
            exact=True,  # every offered bound is finite-sample valid (none is asymptotic)
            anytime_valid=policy.sampling.bound in stats.ANYTIME_VALID,
            sequential=policy.sampling.max_draws is not None,
            draws_planned=plan.budget,
            draws_used=sample.draws_used,
            batch_size=policy.sampling.batch_size,
            subset=policy.sampling.subset,
            randomised_rounding=policy.sampling.randomised_rounding,
            alpha=policy.alpha,
            alpha_per_task=alpha_task,
            correction="bonferroni" if len(tasks) > 1 else "none",
        ),
        tasks=results,
        verdict=verdict,
        reasons=reasons,
        attested_files=attested,
        replay=REPLAY_NOTE,
        guarantee=GUARANTEE_RELATIVE if pert.scale == "relative" else GUARANTEE,
    )
    return cert, sample


class ScorerTask:
    """A task scored by a user callable `scorer(model, example) -> 0/1` (any model, any oracle)."""

    def __init__(self, name: str, examples: Sequence[Example | Any], scorer: Callable[[Any, Any], Any]) -> None:
        self.name = name
        self.examples = list(examples)
        self.scorer = scorer

    def evaluate(self, model: Any, tokenizer: Any, indices: Sequence[int], batch_size: int) -> np.ndarray:
        out = np.empty(len(indices), dtype=np.uint8)
        for k, i in enumerate(indices):
            s = self.scorer(model, self.examples[i])
            if s not in (0, 1, True, False):
                raise ValueError(f"task {self.name}: scorer returned {s!r} for example {i}; expected 0 or 1")
            out[k] = int(s)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "source": "python",
            "oracle": getattr(self.scorer, "__name__", "callable"),
            "n_examples": len(self.examples),
        }


def certify_model(
    model: Any,
    tasks: Sequence[Task],
    *,
    sigma: float,
    seed: int,
    alpha: float = 0.01,
    design: str = "batched",
    bound: str = "betting",
    draws: int = 32,
    max_draws: int | None = None,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    min_p_lower: float | None = None,
    target: float = 0.5,
    tokenizer: Any = None,
    log_path: Path | None = None,
    name: str = "in-memory",
) -> Certificate:
    """Certify an in-memory torch module on tasks (e.g. `ScorerTask`s with your own scorer).

    The settings are recorded as a policy on the certificate, exactly as a policy file would be.
    """
    import tempfile

    from auditor.model.checkpoint import memory_identity

    doc = {
        "schema_version": 1,
        "model": name,
        "seed": seed,
        "alpha": alpha,
        "perturbation": {"sigma": sigma, "include": list(include), "exclude": list(exclude)},
        "sampling": {"design": design, "bound": bound, "draws": draws, "max_draws": max_draws},
        "gate": {"target": target},
        "tasks": [
            {
                "name": t.name,
                "source": "python",
                "oracle": {"type": "python", "scorer": "in-memory"},
                "require": {"min_p_lower": min_p_lower},
            }
            for t in tasks
        ],
    }
    loaded = parse_policy(yaml.safe_dump(doc, sort_keys=False), origin="<certify_model>")
    identity = memory_identity(model, name)
    with tempfile.TemporaryDirectory() as tmp:
        path = log_path or Path(tmp) / "draws.jsonl"
        cert, _ = run_audit(model, tokenizer, tasks, loaded, identity, path)
    return cert
