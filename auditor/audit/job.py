"""The whole `certify` job: load the model, audit (or run the policy's sigma search), write and sign.

Under torchrun / accelerate launch the draws of a single-sigma audit are sharded over the ranks
(auditor.audit.distributed); a sigma grid or auto search runs in one process.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditor import stats
from auditor.attest.publish import publish
from auditor.audit import sigma_search
from auditor.audit.drawlog import DrawLog, read_header
from auditor.audit.run import check_design, run_audit
from auditor.audit.sample import DrawTimer, SampleResult, compute_draw, make_perturber, plan_from_policy
from auditor.certificate.schema import Certificate
from auditor.errors import AuditorError, PolicyError, RunInterrupted
from auditor.policy.schema import LoadedPolicy

log = logging.getLogger(__name__)


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
    Under torchrun / accelerate launch the draws are sharded over the ranks (auditor.audit.distributed):
    rank 0 returns the run, the other ranks compute their share of the draws and return None.
    A policy whose sigma is a grid or auto runs its search (auditor.audit.sigma_search) in one process; the
    run's certificate is the search's, and its totals cover every audit of the search.
    """
    import functools
    import time

    from auditor.audit import distributed
    from auditor.model.checkpoint import load_model, load_weights
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
    files = publish(cert, run_dir, key)
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
