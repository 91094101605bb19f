"""From a policy and a model to a certificate: the pipeline the CLI and the Python API share."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from auditor import __version__, bounds, fragility, sigma_search, stats, verdicts
from auditor.attest import policy_files
from auditor.certificate import (
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
from auditor.drawlog import RECORD_FORMAT, DrawLog, read_header
from auditor.errors import AuditorError, PolicyError, RunInterrupted
from auditor.policy import LoadedPolicy, Policy, parse_policy
from auditor.sample import (
    CLEAN_FILE,
    DrawSource,
    DrawTimer,
    SampleResult,
    clean_run,
    compute_draw,
    make_perturber,
    plan_from_policy,
    run_draws,
    write_clean,
)
from auditor.tasks.base import Example, Task

log = logging.getLogger(__name__)
# Points (in units of sigma) at which the certificate tabulates the bound curves.
CURVE_STEPS = [0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0]
REPLAY_NOTE = (
    "Anyone holding the model, the policy and this run's folder (draws.jsonl, clean.json, certificate.json) can "
    "re-run recorded draws and compare every per-example outcome with the log: `auditor replay RUN_DIR --draws K` "
    "(K draws picked from the seed; or --draw I for given ones). Exit 0: identical; 1: the differing draws and "
    "examples are named. Draw i depends only on (seed, i), so any draw replays alone."
)


@dataclass
class AuditRun:
    """A finished audit: the certificate and how the time was spent."""

    certificate: Certificate
    files: dict[str, Path]
    seconds_total: float
    seconds_noise: float
    seconds_eval: float
    draws_used: int  # over every audit of a sigma search (pilots included)
    resumed_draws: int


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
    radius = float(bounds.certified_radius(lo, q, sigma))
    curve = bounds.bound_curve(lo, sigma, [sigma * s for s in CURVE_STEPS])
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
        radius_weak=float(bounds.weak_radius(lo, q, sigma)),
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

    from auditor.checkpoint import memory_identity

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


def find_resumable(reports: Path, policy_sha: str) -> Path | None:
    """The newest run folder under `reports` whose draw log was made with this policy."""
    runs = sorted((p.parent for p in reports.glob("*/draws.jsonl")), key=lambda p: p.stat().st_mtime, reverse=True)
    for run in runs:
        try:
            header = read_header(run / "draws.jsonl")
        except AuditorError:
            continue
        if header.get("policy_sha256") == policy_sha:
            return run
    return None


def certify(
    loaded: LoadedPolicy,
    *,
    model: str | None = None,
    out_dir: Path | None = None,
    reports: Path = Path("reports"),
    resume: bool = False,
    sequential: bool = False,
    key: Path | None = None,
    on_start: Callable[[int, list[str]], None] | None = None,
    on_draw: Callable[[int, dict[str, float]], None] | None = None,
    device_map: str | None = None,
) -> AuditRun | None:
    """The whole job: load the model, sample, bound, judge, write (and sign) the certificate.

    `model` overrides the policy's model (e.g. to audit a fine-tuned candidate under a base's policy);
    `sequential` turns on early stopping within the policy's draw budget when its bound allows it;
    `device_map` ('auto', 'balanced', ...) spreads a model too large for one device over the GPUs.
    Under torchrun / accelerate launch the draws are sharded over the ranks (auditor.distributed):
    rank 0 returns the run, the other ranks compute their share of the draws and return None.
    """
    import functools
    import time

    from auditor import distributed
    from auditor.checkpoint import load_model, load_weights
    from auditor.tasks import build_tasks

    t0 = time.perf_counter()
    seq_bound = stats.sequential_bound(loaded.policy.sampling.bound)
    if sequential and loaded.policy.sampling.max_draws is None and seq_bound is not None:
        sampling = loaded.policy.sampling.model_copy(
            update={"max_draws": loaded.policy.sampling.draws, "bound": seq_bound}
        )
        loaded = loaded.model_copy(update={"policy": loaded.policy.model_copy(update={"sampling": sampling})})
    policy = loaded.policy
    check_design(loaded)
    tasks = build_tasks(loaded)  # bad task specs fail before the (slow) model load
    sharding = distributed.from_environment()
    searching = not isinstance(policy.perturbation.sigma, float)
    if searching and sharding is not None:
        raise PolicyError(
            f"{loaded.path or '<policy>'}: field 'perturbation.sigma': a sigma grid or auto search runs in one "
            "process (sharded runs take a single sigma)"
        )
    if out_dir is not None and (sharding is None or sharding.is_main):
        DrawLog.check_free(out_dir)  # another run on this folder: fail before the model load
    device = sharding.device(policy.device) if sharding is not None else policy.device
    gpus = sharding.gpus() if sharding is not None else None
    if sharding is not None and not sharding.is_main:  # a worker: no identity (file hashes), no files written
        weights, tokenizer, _, _ = load_weights(
            model or policy.model, policy.dtype, device, loaded.base_dir, device_map, gpus
        )
        plan = plan_from_policy(policy, [t.name for t in tasks])
        perturber = make_perturber(weights, policy)
        compute = functools.partial(compute_draw, weights, tokenizer, tasks, perturber, plan, DrawTimer())
        distributed.serve_draws(sharding, compute)
        distributed.shutdown()
        return None
    lm = load_model(model or policy.model, policy.dtype, device, loaded.base_dir, device_map=device_map, gpus=gpus)
    started = dt.datetime.now(dt.timezone.utc)
    if out_dir is None and resume:
        out_dir = find_resumable(reports, loaded.sha256)
        if out_dir is None:
            raise AuditorError(f"{reports}: no earlier run of this policy to resume (pass --out RUN_DIR)")
    run_dir = out_dir or reports / f"{started.strftime('%Y%m%d-%H%M%S')}-{lm.identity.name}"
    if on_start is not None and not searching:
        on_start(policy.sampling.max_draws or policy.sampling.draws, [t.name for t in tasks])

    samples: list[SampleResult] = []  # every audit of a sigma search (one otherwise): the run's totals

    def audit_at(at: LoadedPolicy, here: Path) -> tuple[Certificate, SampleResult]:
        if searching:
            log.info("sigma %g (seed %d): %s", at.policy.perturbation.fixed_sigma, at.policy.seed, here)
            if on_start is not None:
                on_start(at.policy.sampling.max_draws or at.policy.sampling.draws, [t.name for t in tasks])
        cert, sample = run_audit(
            lm.model,
            lm.tokenizer,
            tasks,
            at,
            lm.identity,
            here / "draws.jsonl",
            resume=resume,
            run_id=here.relative_to(run_dir.parent).as_posix(),
            on_draw=on_draw,
            source=distributed.ShardedDraws(sharding) if sharding is not None else None,
        )
        samples.append(sample)
        return cert, sample

    try:
        if policy.perturbation.grid is not None:
            cert, _ = sigma_search.run_grid(tasks, loaded, run_dir, audit_at)
        elif policy.perturbation.auto is not None:
            cert, _ = sigma_search.run_auto(tasks, loaded, run_dir, audit_at)
        else:
            cert, _ = audit_at(loaded, run_dir)
    except KeyboardInterrupt as exc:
        raise RunInterrupted(run_dir) from exc  # the CLI prints the exact command to resume it
    files = publish_certificate(cert, run_dir, key)
    if sharding is not None:
        distributed.shutdown()
    return AuditRun(
        certificate=cert,
        files=files,
        seconds_total=time.perf_counter() - t0,
        seconds_noise=sum(s.seconds_noise for s in samples),
        seconds_eval=sum(s.seconds_eval for s in samples),
        draws_used=sum(s.draws_used for s in samples),
        resumed_draws=sum(s.resumed_draws for s in samples),
    )


def publish_certificate(cert: Certificate, run_dir: Path, key: Path | None) -> dict[str, Path]:
    """Write the certificate JSON, HTML and PDF (and the signed envelope when a key is given)."""
    from auditor.signing import publish

    return publish(cert, run_dir, key)
