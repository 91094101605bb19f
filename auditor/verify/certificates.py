"""Check a signed certificate: envelope signature, certificate bytes, rendered files, model files.

`verify` returns a `Verification` (valid or invalid, with a one-line reason) and raises AuditorError
only for usage problems: no key, a path that does not exist, a file that cannot be read.
Anything that is present but does not match is invalid, never an error: tampering must not be
able to turn a failed check into a usage error.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from auditor.attest.signing import (
    CERT_HTML,
    CERT_JSON,
    CERT_PDF,
    ENVELOPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    load_public_key,
    policy_subject_name,
)
from auditor.certificate.schema import Certificate
from auditor.errors import AuditorError
from auditor.model.checkpoint import sha256_file
from auditor.verify.envelope import (
    Invalid,
    Verification,
    check_certificate_file,
    check_signature,
    load_statement,
    parse_envelope,
    read_input,
    subject_digests,
)
from auditor.verify.gate_reports import gate_report_paths, verify_gate_report

VERIFY_KEY_ENV = "AUDITOR_VERIFY_KEY"
ENVELOPE_SUFFIXES = (".intoto.jsonl", ".intoto.json", ".dsse.json", ".jsonl")
ATTESTED_PREFIXES = ("policy:", "scorer:", "data:")


def locate(target: Path) -> tuple[Path, Path]:
    """(envelope, certificate.json) for a run directory, an envelope, or a certificate JSON."""
    target = Path(target)
    if not target.exists():
        raise AuditorError(f"{target}: not found")
    if target.is_dir():
        return target / ENVELOPE, target / CERT_JSON
    if target.name.endswith(ENVELOPE_SUFFIXES):
        return target, target.parent / CERT_JSON
    return target.parent / ENVELOPE, target


def parse_statement(payload: bytes) -> tuple[dict[str, Any], Certificate]:
    """The signed statement and its predicate as a Certificate; Invalid on any mismatch of shape."""
    statement = load_statement(payload, PREDICATE_TYPE)
    try:
        cert = Certificate.model_validate(statement.get("predicate"))
    except ValueError as exc:
        raise Invalid("signed predicate is not a valid certificate") from exc
    return statement, cert


def check_consistency(cert: Certificate, subjects: dict[str, str]) -> None:
    """The signed subjects say the same as the signed certificate (files, policy, renders)."""
    other = (CERT_HTML, CERT_PDF)
    weights = {k: v for k, v in subjects.items() if k not in other and not k.startswith(ATTESTED_PREFIXES)}
    if weights != {f.path: f.sha256 for f in cert.model.files}:
        raise Invalid("statement subjects do not match the certificate's model files")
    attested = {k: v for k, v in subjects.items() if k.startswith(("scorer:", "data:"))}
    if attested != {f"{f.role}:{f.path}": f.sha256 for f in cert.attested_files}:
        raise Invalid("statement subjects do not match the certificate's scorer and data files")
    if subjects.get(policy_subject_name(cert)) != cert.policy.sha256:
        raise Invalid("statement policy subject does not match the certificate's policy digest")
    if hashlib.sha256(cert.policy.text.encode("utf-8")).hexdigest() != cert.policy.sha256:
        raise Invalid("the policy text in the certificate does not match its sha256")
    for name in (CERT_HTML, CERT_PDF):
        if name in cert.artifacts and subjects.get(name) != cert.artifacts[name]:
            raise Invalid(f"{name}: digest in the certificate differs from the signed subject")


def check_renders(run_dir: Path, subjects: dict[str, str]) -> list[str]:
    """HTML and PDF present next to the certificate must match their signed digests."""
    notes = []
    for name in (CERT_HTML, CERT_PDF):
        path = run_dir / name
        if not path.exists():
            notes.append(f"{name}: not present (not checked)")
            continue
        if name not in subjects:
            raise Invalid(f"{name} is present but not covered by the signature")
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise AuditorError(f"{path}: not readable ({exc.strerror or exc})") from exc
        if digest != subjects[name]:
            raise Invalid(f"{name}: sha256 differs from the signed digest")
        notes.append(f"{name}: matches its signed digest")
    return notes


def check_attested(cert: Certificate, policy_dir: Path) -> list[str]:
    """Re-hash every scorer and data file the certificate attests (paths relative to the policy)."""
    notes = []
    for f in cert.attested_files:
        path = Path(f.path).expanduser()
        path = path if path.is_absolute() else policy_dir / path
        if not path.is_file():
            notes.append(f"{f.role} file {f.path}: not found under {policy_dir} (not checked)")
            continue
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise AuditorError(f"{path}: not readable ({exc.strerror or exc})") from exc
        if digest != f.sha256:
            raise Invalid(f"{f.role} file {path}: sha256 differs from the signed digest")
        notes.append(f"{f.role} file {f.path}: matches its signed digest")
    return notes


DRAW_LOG = "draws.jsonl"


def _log_units(path: Path, cert: Certificate) -> tuple[dict[str, Any], dict[str, int], int]:
    """The draw log's units per task (what the bounds saw), evaluations per task, and its number of draws.

    Invalid unless the log was made for this certificate (policy, model, parameters) with its draw count.
    """
    import numpy as np

    from auditor.audit.drawlog import read_draws
    from auditor.audit.sample import SamplingPlan, draw_unit
    from auditor.errors import AuditorError as LogError

    try:
        header, records = read_draws(path)
    except LogError as exc:
        raise Invalid(str(exc)) from exc
    pinned = {
        "policy_sha256": cert.policy.sha256,
        "model_root_digest": cert.model.root_digest,
        "parameters_digest": cert.perturbation.parameters_digest,
    }
    for key, want in pinned.items():
        if header.get(key) != want:
            raise Invalid(f"{path.name}: header {key} is not the certificate's: another run's log")
    s = cert.sampling
    plan = SamplingPlan(s.design, s.draws_used, cert.seed, s.batch_size, randomised_rounding=s.randomised_rounding)
    if len(records) != s.draws_used:
        raise Invalid(f"{path.name}: {len(records)} draws, the certificate used {s.draws_used}")
    units, evaluations = {}, {}
    for t in cert.tasks:
        try:
            rows = [r["results"][t.name] for r in records]
            x = np.array([float(r["value"]) for r in rows])
            evaluations[t.name] = sum(int(r["evaluations"]) for r in rows)
        except (KeyError, TypeError, ValueError) as exc:
            raise Invalid(f"{path.name}: a draw lacks task {t.name}'s value ({exc})") from exc
        units[t.name] = np.array([draw_unit(v, plan, t.name, int(r["draw"])) for v, r in zip(x, records, strict=True)])
    return units, evaluations, len(records)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def check_draw_log(path: Path, cert: Certificate) -> str:
    """The draw log next to the certificate gives exactly its per-task numbers (recomputed here)."""
    from auditor.audit.verdicts import task_interval

    units, evaluations, n = _log_units(path, cert)
    s = cert.sampling
    for t in cert.tasks:
        p_hat, lo, hi = task_interval(
            units[t.name], bound=s.bound, sequential=s.sequential, alpha=s.alpha_per_task, seed=cert.seed, task=t.name
        )
        got = {"p_hat": p_hat, "p_lower": lo, "p_upper": hi, "evaluations": evaluations[t.name]}
        for key, value in got.items():
            if not _close(float(getattr(t, key)), value):
                raise Invalid(f"task {t.name}: {key} {getattr(t, key)!r} is not what {path.name} gives ({value!r})")
    return f"{path.name}: {n} draws give the certificate's p_hat, p_lower, p_upper per task"


def check_model(model_dir: Path, cert: Certificate) -> str:
    """Every model file on disk matches the signed digests; a missing or extra file is invalid."""
    from auditor.model.checkpoint import directory_digests, root_digest

    if not model_dir.is_dir():
        raise AuditorError(f"{model_dir}: model directory not found")
    if not cert.model.files:
        raise Invalid("the certificate records no model files (an in-memory model): nothing to compare")
    try:
        on_disk = {f.path: f.sha256 for f in directory_digests(model_dir)}
    except OSError as exc:
        raise AuditorError(f"{model_dir}: not readable ({exc.strerror or exc})") from exc
    signed = {f.path: f.sha256 for f in cert.model.files}
    missing = sorted(set(signed) - set(on_disk))
    extra = sorted(set(on_disk) - set(signed))
    if missing:
        raise Invalid(
            f"model file missing: {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if extra:
        raise Invalid(
            f"model file not in the certificate: {extra[0]}" + (f" (+{len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    for path, digest in sorted(signed.items()):
        if on_disk[path] != digest:
            raise Invalid(f"model file {path}: sha256 differs from the signed digest")
    if root_digest(list(cert.model.files)) != cert.model.root_digest:
        raise Invalid("the certificate's root digest does not match its file digests")
    return f"model: {len(signed)} file(s) in {model_dir} match (root {cert.model.root_digest[:16]}…)"


def check_grid_steps(run_dir: Path, cert: Certificate) -> str:
    """Each later grid sigma's certificate is on disk with the digest the signed search records, and every
    step's draw log (when present) gives the search's p_lower and Bonferroni p_lower (recomputed here)."""
    from auditor.audit.verdicts import task_interval
    from auditor.certificate.schema import read_certificate

    search = cert.sigma_search
    assert search is not None
    steps = {s.run: s.certificate_sha256 for e in search.edges for s in e.steps}
    absent, recomputed = [], 0
    for run, digest in sorted(steps.items()):
        path = run_dir / run / CERT_JSON
        if run != "." and not path.is_file():
            absent.append(run)
            continue
        if digest is not None and sha256_file(path) != digest:
            raise Invalid(f"{run}/{CERT_JSON}: sha256 differs from the digest the signed sigma search records")
        step_cert = cert if run == "." else read_certificate(path)
        log = run_dir / run / DRAW_LOG
        if not log.exists():
            continue
        units, _, _ = _log_units(log, step_cert)
        s, m = step_cert.sampling, len(search.sigmas)
        for e in search.edges:
            st = next((x for x in e.steps if x.run == run), None)
            if st is None:
                continue
            for key, alpha in (("p_lower", s.alpha_per_task), ("p_lower_bonferroni", s.alpha_per_task / m)):
                stated = getattr(st, key)
                if stated is None or (key == "p_lower_bonferroni" and s.sequential):
                    continue
                got = task_interval(
                    units[e.task], bound=s.bound, sequential=s.sequential, alpha=alpha, seed=cert.seed, task=e.task
                )[1]
                if not _close(stated, got):
                    raise Invalid(
                        f"sigma grid {run}: {e.task} {key} {stated!r} is not what its draw log gives ({got!r})"
                    )
        recomputed += 1
    gone = f"; not present (not checked): {', '.join(absent)}" if absent else ""
    return (
        f"sigma grid: {len(steps) - 1 - len(absent)} step certificate(s) match their signed digests; "
        f"{recomputed} step draw log(s) give the search's p_lower and Bonferroni p_lower{gone}"
    )


def verify(
    target: Path, key_path: Path | None, model_dir: Path | None = None, policy_dir: Path | None = None
) -> Verification:
    """Verify a run directory, envelope or certificate against an Ed25519 public key."""
    if key_path is None:
        raise AuditorError(f"a public key is required: pass --key PUB or set {VERIFY_KEY_ENV}")
    key = load_public_key(Path(key_path))
    if gate := gate_report_paths(Path(target)):
        return verify_gate_report(*gate, key, model_dir)
    envelope_path, cert_path = locate(Path(target))
    if model_dir is not None and not Path(model_dir).is_dir():
        raise AuditorError(f"{model_dir}: model directory not found")
    if not envelope_path.exists():
        if cert_path.exists():
            return Verification(False, f"no signature envelope ({ENVELOPE}) next to {cert_path.name}: UNSIGNED")
        raise AuditorError(f"{Path(target)}: neither {ENVELOPE} nor {CERT_JSON} found")
    if not cert_path.exists():
        raise AuditorError(f"{cert_path}: certificate not found next to the envelope")
    envelope_bytes = read_input(envelope_path, "envelope")
    try:
        envelope = parse_envelope(envelope_bytes)
        check_signature(envelope, key)
        statement, cert = parse_statement(envelope.payload)
        subjects = subject_digests(statement)
        check_consistency(cert, subjects)
        check_certificate_file(cert_path, statement["predicate"])
        checked = [
            f"signature: Ed25519, key {key.keyid[:16]}…",
            f"statement: {STATEMENT_TYPE}, predicate {PREDICATE_TYPE}, {len(subjects)} subjects",
            f"{cert_path.name}: identical to the signed predicate",
        ]
        checked += check_renders(envelope_path.parent, subjects)
        policy_dir = policy_dir or (Path(cert.policy.path).parent if cert.policy.path else Path.cwd())
        checked += check_attested(cert, policy_dir)
        log = envelope_path.parent / DRAW_LOG
        checked.append(check_draw_log(log, cert) if log.exists() else f"{DRAW_LOG}: not present (not checked)")
        if cert.sigma_search is not None and cert.sigma_search.mode == "grid":
            checked.append(check_grid_steps(envelope_path.parent, cert))
        if model_dir is not None:
            checked.append(check_model(Path(model_dir), cert))
        else:
            checked.append("model files: not checked (pass --model DIR to re-hash them)")
    except Invalid as exc:
        return Verification(False, str(exc))
    return Verification(True, checked=checked, certificate=cert)
