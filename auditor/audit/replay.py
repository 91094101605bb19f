"""Replay recorded draws: re-run them on the same model and compare every per-example outcome.

Draw i depends only on (seed, i): its noise, its examples and their batches. So a third party
with the model, the run folder (certificate.json, draws.jsonl, clean.json) and the data can
re-run any recorded draw alone and must get, example by example, the outcomes the log holds.
Which draws: listed ones, or K picked from the certificate's seed (so the choice is not the
auditor's to make after the fact). The clean pass is compared too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditor.audit.drawlog import decode_indices, decode_outcomes, read_header
from auditor.audit.perturb import derive_seed
from auditor.audit.sample import CLEAN_FILE, make_perturber, plan_from_policy
from auditor.certificate.schema import Certificate, read_certificate
from auditor.errors import AuditorError
from auditor.policy.schema import LoadedPolicy, parse_policy

LOG_FILE = "draws.jsonl"
CERT_FILE = "certificate.json"


@dataclass
class Mismatch:
    draw: int | None  # None: the clean pass
    task: str
    sign: float
    examples: list[int]


@dataclass
class ReplayReport:
    draws: list[int]
    compared: int = 0  # per-example outcomes compared
    mismatches: list[Mismatch] = field(default_factory=list)
    clean_checked: bool = False

    @property
    def identical(self) -> bool:
        return not self.mismatches

    def lines(self) -> list[str]:
        what = f"{len(self.draws)} draw(s) {self.draws}" + (" and the clean pass" if self.clean_checked else "")
        if self.identical:
            return [f"IDENTICAL: {what}: all {self.compared} per-example outcomes match the log"]
        out = [f"DIFFERENT: {what}: {len(self.mismatches)} task result(s) differ from the log"]
        for m in self.mismatches:
            where = "clean pass" if m.draw is None else f"draw {m.draw}" + (" (-eps)" if m.sign < 0 else "")
            out.append(f"  {where}, task {m.task}: examples {m.examples}")
        return out


def read_log(path: Path) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """Header and finished draws of a draw log (read-only; a torn last line is ignored)."""
    header = read_header(path)
    done: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        try:
            rec = json.loads(line)
            done[int(rec["draw"])] = rec["results"]
        except (ValueError, KeyError, TypeError):
            continue
    return header, done


def pick_draws(seed: int, recorded: list[int], k: int) -> list[int]:
    """K recorded draws chosen by a generator seeded from the certificate's seed alone."""
    rng = np.random.default_rng(derive_seed(seed, "replay"))
    k = min(k, len(recorded))
    return sorted(int(d) for d in rng.choice(sorted(recorded), size=k, replace=False))


def _policy_of(cert: Certificate, run_dir: Path, policy_path: Path | None) -> LoadedPolicy:
    # the signed text is what ran; its data paths resolve against the policy's folder when we can find it
    path = policy_path or (Path(cert.policy.path) if cert.policy.path else None)
    base = path.resolve() if path is not None and path.exists() else None
    loaded = parse_policy(cert.policy.text, origin=f"{run_dir / CERT_FILE} (policy)", path=base)
    return loaded.at_sigma(cert.perturbation.sigma)  # a grid's or auto search's step ran at the recorded sigma


def replay(
    run_dir: Path,
    *,
    draws: int | None = 3,
    listed: list[int] | None = None,
    model: str | None = None,
    policy_path: Path | None = None,
    check_clean: bool = True,
) -> ReplayReport:
    """Re-run recorded draws of `run_dir` and compare them with its log, example by example."""
    from auditor.audit.sample import answer_and_score
    from auditor.model.checkpoint import load_model
    from auditor.tasks import build_tasks

    run_dir = Path(run_dir)
    cert = read_certificate(run_dir / CERT_FILE)
    header, done = read_log(run_dir / LOG_FILE)
    if header.get("policy_sha256") != cert.policy.sha256:
        raise AuditorError(f"{run_dir / LOG_FILE}: made with another policy than {CERT_FILE}")
    if header.get("record_format") is None:
        raise AuditorError(f"{run_dir / LOG_FILE}: an older log without per-example outcomes; nothing to compare")
    if listed:
        missing = sorted(set(listed) - set(done))
        if missing:
            raise AuditorError(f"{run_dir / LOG_FILE}: draw(s) {missing} not in the log")
        chosen = sorted(set(listed))
    else:
        chosen = pick_draws(cert.seed, list(done), draws or 0)
    loaded = _policy_of(cert, run_dir, policy_path)
    policy = loaded.policy
    tasks = build_tasks(loaded)
    lm = load_model(model or policy.model, policy.dtype, policy.device, base_dir=loaded.base_dir)
    if lm.identity.root_digest != header.get("model_root_digest"):
        raise AuditorError(
            f"{model or policy.model}: not the audited model (root digest {lm.identity.root_digest[:16]}… "
            f"vs {str(header.get('model_root_digest'))[:16]}…)"
        )
    perturber = make_perturber(lm.model, policy)
    if hashlib.sha256("\n".join(perturber.names).encode()).hexdigest() != header.get("parameters_digest"):
        raise AuditorError(f"{run_dir / LOG_FILE}: the perturbed parameter set differs from the audited one")
    plan = plan_from_policy(policy, [t.name for t in tasks])
    report = ReplayReport(chosen)
    bs = plan.batch_size
    if check_clean and (run_dir / CLEAN_FILE).exists():
        clean = json.loads((run_dir / CLEAN_FILE).read_text(encoding="utf-8"))
        for t in tasks:
            want = decode_outcomes(clean[t.name]["outcomes"], int(clean[t.name]["n"]))
            got, _ = answer_and_score(t, lm.model, lm.tokenizer, list(range(len(t.examples))), bs)
            _compare(report, None, t.name, 1.0, list(range(len(t.examples))), want, got)
        report.clean_checked = True
    signs = (1.0, -1.0) if plan.design == "antithetic" else (1.0,)
    for d in chosen:
        for k, sign in enumerate(signs):
            perturber.apply(d, sign)
            try:
                for t in tasks:
                    rec = done[d][t.name]
                    idx = decode_indices(rec["examples"])
                    got = t.evaluate(lm.model, lm.tokenizer, idx, bs)
                    _compare(report, d, t.name, sign, idx, decode_outcomes(rec["outcomes"][k], len(idx)), got)
            finally:
                perturber.restore()
    return report


def _compare(
    report: ReplayReport, draw: int | None, task: str, sign: float, idx: list[int], want: np.ndarray, got: Any
) -> None:
    got = np.asarray(got, dtype=np.uint8)
    report.compared += len(idx)
    differ = [idx[j] for j in np.flatnonzero(got != want)]
    if differ:
        report.mismatches.append(Mismatch(draw, task, sign, differ))
