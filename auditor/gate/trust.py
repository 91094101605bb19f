"""What the gate may believe of a certificate: only what verifies against a trusted key, re-derived.

A platform gates untrusted uploads against a base certificate, so the certificate file is itself an
input an attacker may edit. `load_trusted` accepts the certificate only when its DSSE envelope
verifies against the trusted public key and `certificate.json` is byte-for-byte the signed predicate
(the signed copy is what is used). `check_derived` then recomputes every number that follows from
the primary fields (sigma, p_lower, target, alpha, the parameter list) and refuses any mismatch, so
a certificate accepted unsigned (`--allow-unsigned`) cannot carry a radius its own p_lower does not
give. Refusals are exit 1 (the certificate is not trusted), one line naming the file and field.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from auditor.certificate.schema import Certificate, read_certificate
from auditor.errors import EXIT_FAIL, AuditorError
from auditor.model.tensor_stream import TensorRef

TRUSTED_KEY_ENV = "AUDITOR_TRUSTED_KEY"
_REL = 1e-9
_RMS_REL = 1e-9  # float64 sums of the same values in another order agree far closer than this


class Untrusted(AuditorError):
    """The certificate cannot be trusted: unsigned, badly signed, or inconsistent. Exit 1."""

    exit_code = EXIT_FAIL


@dataclass(frozen=True)
class TrustedCertificate:
    """A certificate and how far it is trusted (signed by `keyid`, or accepted unsigned)."""

    cert: Certificate
    path: Path
    signed: bool
    keyid: str | None = None

    @property
    def trust(self) -> str:
        return f"signed, key {self.keyid}" if self.signed else "unsigned (accepted with --allow-unsigned)"


def load_trusted(target: Path, trusted_key: Path | None, allow_unsigned: bool = False) -> TrustedCertificate:
    """The certificate at `target` (file, envelope or run folder), verified against `trusted_key`.

    A present envelope that does not verify is refused even with `allow_unsigned`: a bad signature
    is evidence of tampering, not the absence of a signature.
    """
    from auditor.attest.signing import load_public_key
    from auditor.verify.certificates import check_consistency, locate, parse_statement
    from auditor.verify.envelope import (
        Invalid,
        check_certificate_file,
        check_signature,
        parse_envelope,
        subject_digests,
    )

    envelope_path, cert_path = locate(Path(target))
    how = f"--trusted-key PUB or {TRUSTED_KEY_ENV}"
    if trusted_key is None:
        if not allow_unsigned:
            raise Untrusted(
                f"{cert_path}: no trusted public key ({how}): the certificate cannot be verified; "
                "refused (--allow-unsigned gates against it anyway)"
            )
        return TrustedCertificate(read_certificate(cert_path), cert_path, signed=False)
    key = load_public_key(Path(trusted_key).expanduser())
    if not envelope_path.is_file():
        if not allow_unsigned:
            raise Untrusted(f"{cert_path}: unsigned (no {envelope_path.name} next to it): refused (--allow-unsigned)")
        return TrustedCertificate(read_certificate(cert_path), cert_path, signed=False)
    if not cert_path.is_file():
        raise AuditorError(f"{cert_path}: certificate not found next to its envelope")
    try:
        envelope = parse_envelope(envelope_path.read_bytes())
        check_signature(envelope, key)
        statement, cert = parse_statement(envelope.payload)
        check_consistency(cert, subject_digests(statement))
        check_certificate_file(cert_path, statement["predicate"])
    except Invalid as exc:
        raise Untrusted(f"{envelope_path}: {exc}: the certificate is not trusted; refused") from exc
    except OSError as exc:
        raise AuditorError(f"{envelope_path}: not readable ({exc.strerror or exc})") from exc
    return TrustedCertificate(cert, cert_path, signed=True, keyid=str(key.keyid))


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL, abs_tol=1e-12)


def check_derived(cert: Certificate, where: Path) -> None:
    """Recompute every derived number from the primary fields; Untrusted naming the first mismatch."""
    from auditor import stats
    from auditor.model.checkpoint import root_digest
    from auditor.stats import smoothing

    def refuse(field: str, stated: object, recomputed: object) -> NoReturn:
        _refuse(where, field, stated, recomputed)

    p, s = cert.perturbation, cert.sampling
    digest = hashlib.sha256("\n".join(p.parameters).encode()).hexdigest()
    if p.parameters_digest != digest:
        refuse("perturbation.parameters_digest", p.parameters_digest, digest)
    if not (math.isfinite(p.sigma) and p.sigma > 0):
        refuse("perturbation.sigma", p.sigma, "a positive number")
    if p.scale == "absolute":
        if p.tensor_rms is not None:
            refuse("perturbation.tensor_rms", "a list", "none (absolute noise)")
        if p.dimension <= 0 or not _close(p.typical_noise_norm, p.sigma * math.sqrt(p.dimension)):
            refuse("perturbation.typical_noise_norm", p.typical_noise_norm, p.sigma * math.sqrt(max(p.dimension, 0)))
    else:  # the values themselves are recomputed from the base tensors: check_tensor_rms
        if p.space != "weights":
            refuse("perturbation.scale", p.scale, "absolute (relative noise is for space: weights)")
        if p.tensor_rms is None or set(p.tensor_rms) != set(p.parameters):
            refuse("perturbation.tensor_rms", "missing or other names", "one RMS per perturbed parameter")
        bad = [n for n, r in p.tensor_rms.items() if not (math.isfinite(r) and r > 0)]
        if bad:
            refuse(f"perturbation.tensor_rms.{bad[0]}", p.tensor_rms[bad[0]], "a positive number")
    unit = p.radius_unit  # sigma, or 1 for relative noise (whitened radii)
    if cert.model.files and root_digest(list(cert.model.files)) != cert.model.root_digest:
        refuse("model.root_digest", cert.model.root_digest, root_digest(list(cert.model.files)))
    if not cert.tasks:
        refuse("tasks", [], "at least one task")
    m = len(cert.tasks)
    per_task = stats.bonferroni(s.alpha, m) if s.correction == "bonferroni" else s.alpha
    if s.correction not in ("bonferroni", "none") or (s.correction == "none" and m > 1):
        refuse("sampling.correction", s.correction, "bonferroni" if m > 1 else "none")
    if not _close(s.alpha_per_task, per_task):
        refuse("sampling.alpha_per_task", s.alpha_per_task, per_task)
    for i, t in enumerate(cert.tasks):
        at = f"tasks[{i}]"
        if not (0.0 <= t.p_lower <= t.p_hat <= t.p_upper <= 1.0):
            refuse(f"{at}.p_lower", t.p_lower, "0 <= p_lower <= p_hat <= p_upper <= 1")
        if not 0.0 < t.target < 1.0:
            refuse(f"{at}.target", t.target, "a target in (0, 1)")
        radius = float(smoothing.certified_radius(t.p_lower, t.target, unit))
        if not _close(t.radius, radius):
            refuse(f"{at}.radius", t.radius, radius)
        weak = float(smoothing.weak_radius(t.p_lower, t.target, unit))
        if not _close(t.radius_weak, weak):
            refuse(f"{at}.radius_weak", t.radius_weak, weak)
        if not _close(t.radius_over_sigma, radius / unit):
            refuse(f"{at}.radius_over_sigma", t.radius_over_sigma, radius / unit)
        curve = smoothing.bound_curve(t.p_lower, unit, list(t.curve.delta_norm))
        for key in ("strong", "weak"):
            stated = getattr(t.curve, key)
            if len(stated) != len(curve[key]) or not all(map(_close, stated, curve[key])):
                refuse(f"{at}.curve.{key}", stated, curve[key])
        if t.verdict == "pass":
            if t.min_p_lower is not None and t.p_lower < t.min_p_lower:
                refuse(f"{at}.verdict", t.verdict, "fail (p_lower below min_p_lower)")
            if t.min_radius is not None and radius < t.min_radius:
                refuse(f"{at}.verdict", t.verdict, "fail (radius below min_radius)")
    if cert.verdict == "pass" and any(t.verdict == "fail" for t in cert.tasks):
        refuse("verdict", cert.verdict, "fail (a task failed)")
    _check_policy(cert, where, refuse)


def _refuse(where: Path, field: str, stated: object, recomputed: object) -> NoReturn:
    raise Untrusted(
        f"{where}: field '{field}' is {stated!r} but its primary fields give {recomputed!r}: "
        "the certificate is inconsistent; refused"
    )


def _check_policy(cert: Certificate, where: Path, refuse: Callable[[str, object, object], NoReturn]) -> None:
    """The recorded policy text is the one hashed, and gives the certificate's sigma, alpha, seed."""
    import yaml

    text = cert.policy.text
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != cert.policy.sha256:
        refuse("policy.sha256", cert.policy.sha256, hashlib.sha256(text.encode("utf-8")).hexdigest())
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None
    if not isinstance(doc, dict):
        return  # in-memory audits record a generated policy; nothing more to compare
    pert = doc.get("perturbation") or {}
    stated = pert.get("sigma") if isinstance(pert, dict) else None
    if isinstance(stated, list | dict):
        from auditor.gate.sigma_trust import check_search

        def not_a_search(kind: str) -> NoReturn:
            raise Untrusted(
                f"{where}: field 'sigma_search': absent, but the policy's sigma is {kind} search: this is one step "
                "(or pilot) of that search, not a certificate of its sigma; gate against the search's own "
                "certificate (its run folder); refused"
            )

        check_search(cert, stated, refuse, not_a_search)
    elif cert.sigma_search is not None:
        refuse("sigma_search", cert.sigma_search.mode, None)
    if isinstance(stated, int | float) and not _close(float(stated), cert.perturbation.sigma):
        refuse("perturbation.sigma", cert.perturbation.sigma, float(stated))
    if isinstance(pert, dict) and pert.get("scale", "absolute") != cert.perturbation.scale:
        refuse("perturbation.scale", cert.perturbation.scale, pert.get("scale", "absolute"))
    if "alpha" in doc and not _close(float(doc["alpha"]), cert.sampling.alpha):
        refuse("sampling.alpha", cert.sampling.alpha, float(doc["alpha"]))
    if "seed" in doc and doc["seed"] != cert.seed:
        refuse("seed", cert.seed, doc["seed"])
    gate = doc.get("gate") or {}
    if isinstance(gate, dict) and "target" in gate:
        for i, t in enumerate(cert.tasks):
            if not _close(t.target, float(gate["target"])):
                refuse(f"tasks[{i}].target", t.target, float(gate["target"]))


def check_base_verdict(cert: Certificate, where: Path, allow_failed_base: bool) -> None:
    """A base that did not pass its own audit is no ground to pass anything on."""
    if cert.verdict != "pass" and not allow_failed_base:
        raise Untrusted(
            f"{where}: field 'verdict': the base's own verdict is {cert.verdict!r}, not pass: refused "
            "(--allow-failed-base gates against it anyway)"
        )


def check_dimension(cert: Certificate, numel: dict[str, int], where: Path, names: set[str] | None = None) -> None:
    """d recomputed from the parameter list (tied aliases folded: `names`) and the base's shapes."""
    names = set(cert.perturbation.parameters) if names is None else names
    absent = sorted(n for n in names if n not in numel)
    if absent:
        raise Untrusted(f"{where}: field 'perturbation.parameters': {absent[0]} is not a tensor of the base; refused")
    dim = sum(numel[n] for n in names)
    if dim != cert.perturbation.dimension:
        raise Untrusted(
            f"{where}: field 'perturbation.dimension' is {cert.perturbation.dimension} but the parameters "
            f"have {dim} coordinates in the base: the certificate is inconsistent; refused"
        )


def check_tensor_rms(
    cert: Certificate, base: dict[str, TensorRef], where: Path, aliases: dict[str, str], only: set[str] | None = None
) -> None:
    """Relative noise: every recorded RMS(theta0_k) recomputed from the base's tensors (never trusted).

    A forged (say, inflated) RMS would inflate sigma_k and shrink the whitened norm of a change, so
    the gate reads each perturbed tensor of the (hash-checked) base and refuses any mismatch.
    `aliases` maps a tied copy's name to the one tensor the base stores; `only` restricts the check
    to those (recorded) names.
    """
    from auditor.model.tensor_stream import tensor_rms_from_ref

    p = cert.perturbation
    if p.scale == "absolute" or p.tensor_rms is None:
        return
    draw_sq = 0.0
    for name, stated in sorted(p.tensor_rms.items()):
        if only is not None and name not in only:
            continue
        ref = base.get(aliases.get(name, name))
        if ref is None:
            raise Untrusted(f"{where}: field 'perturbation.tensor_rms': {name} is not a tensor of the base; refused")
        got = tensor_rms_from_ref(ref, cert.model.dtype)
        if not math.isclose(stated, got, rel_tol=_RMS_REL, abs_tol=0.0):
            _refuse(where, f"perturbation.tensor_rms.{name}", stated, got)
        draw_sq += (p.sigma * stated) ** 2 * ref.numel
    if only is None and not _close(p.typical_noise_norm, math.sqrt(draw_sq)):
        _refuse(where, "perturbation.typical_noise_norm", p.typical_noise_norm, math.sqrt(draw_sq))
