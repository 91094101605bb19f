"""Gate one candidate against a trusted base certificate: the steps every caller takes, in order.

The base certificate is trusted first (signature, then every derived number recomputed, then its own
verdict), before any byte of the candidate is read; then the candidate is gated as what it is: a PEFT
adapter (`adapter_config.json`) by its low-rank factors, anything else as a full checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from auditor.certificate.schema import Certificate
from auditor.errors import AuditorError
from auditor.gate.lora import gate_lora
from auditor.gate.radius import GateResult, gate_checkpoint
from auditor.gate.trust import TrustedCertificate, check_base_verdict, check_derived, load_trusted
from auditor.model.checkpoint import model_source_dir


def trusted_base(
    certificate: Path, trusted_key: Path | None, *, allow_unsigned: bool = False, allow_failed_base: bool = False
) -> TrustedCertificate:
    """The base certificate, verified against `trusted_key`, re-derived, and (unless allowed) passing."""
    trusted = load_trusted(certificate, trusted_key, allow_unsigned)
    check_derived(trusted.cert, trusted.path)
    check_base_verdict(trusted.cert, trusted.path, allow_failed_base)
    return trusted


def certified_base_dir(cert: Certificate, base: Path | None) -> Path | None:
    """`base` when given, else the certificate's own model folder when it is on this machine."""
    if base is None and (own := model_source_dir(cert.model.source)).is_dir():
        return own
    return base


def gate_folder(cert: Certificate, candidate: Path, base: Path | None) -> GateResult:
    """Gate one candidate folder: an adapter by its factors, a full checkpoint against `base`."""
    if (candidate / "adapter_config.json").exists():
        return gate_lora(cert, candidate, base)
    if base is None:
        raise AuditorError(f"{cert.model.source}: certified base not found; pass --base")
    return gate_checkpoint(cert, candidate, base)


def gate_candidate(
    certificate: Path,
    candidate: Path,
    *,
    trusted_key: Path | None,
    base: Path | None = None,
    allow_unsigned: bool = False,
    allow_failed_base: bool = False,
) -> GateResult:
    """Does `candidate` stay inside the certified radius of the base that `certificate` certifies?

    `result.passed` is the verdict; `result.to_json(...)` the report `auditor gate` writes. Raises
    AuditorError (exit 2) on bad input and Untrusted (exit 1) for a certificate that cannot be trusted.
    """
    cert = trusted_base(
        Path(certificate), trusted_key, allow_unsigned=allow_unsigned, allow_failed_base=allow_failed_base
    ).cert
    return gate_folder(cert, Path(candidate), certified_base_dir(cert, base))
