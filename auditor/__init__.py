"""auditor: certify how robust an LLM's capabilities are to changes of its weights.

The public Python API; everything else is internal and may move. The stages are subpackages, each
`__init__` saying what the stage takes and gives; each imports only the stages before it:

    policy -> stats -> certificate -> model -> tasks -> attest -> audit -> verify -> gate -> basin -> optim -> cli

(tests/test_architecture.py holds every import to that order and refuses any import cycle.)

Names are imported on first use, so `import auditor` (and the CLI's `--help`) stays light.

    from auditor import load_policy, certify
    run = certify(load_policy("policies/default.yaml"), out_dir=Path("reports/run"))
    run.certificate.verdict                      # "pass" / "fail" / "measured"

    from auditor import ScorerTask, certify_model
    cert = certify_model(model, [ScorerTask("t", examples, scorer)], sigma=0.004, seed=1, draws=32)

    from auditor import gate_candidate, verify_signed
    gate_candidate(Path("reports/run"), Path("uploads/adapter"), trusted_key=Path("keys/signing-key.pub")).passed
    verify_signed(Path("reports/run"), Path("keys/signing-key.pub")).valid
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from auditor.version import __version__

if TYPE_CHECKING:
    from auditor.attest.publish import publish
    from auditor.attest.signing import keygen
    from auditor.audit.job import AuditRun, certify
    from auditor.audit.run import ScorerTask, certify_model, run_audit
    from auditor.certificate.schema import Certificate, read_certificate
    from auditor.errors import AuditorError, PolicyError
    from auditor.gate.check import gate_candidate, trusted_base
    from auditor.gate.radius import GateResult
    from auditor.gate.tokens import token_bound
    from auditor.model.checkpoint import load_model
    from auditor.policy.schema import LoadedPolicy, Policy, load_policy, parse_policy
    from auditor.verify.certificates import Verification
    from auditor.verify.certificates import verify as verify_signed

# public name -> the module that defines it ("module:name" where the name there differs)
_HOME = {
    "load_policy": "auditor.policy.schema",
    "parse_policy": "auditor.policy.schema",
    "Policy": "auditor.policy.schema",
    "LoadedPolicy": "auditor.policy.schema",
    "load_model": "auditor.model.checkpoint",
    "certify": "auditor.audit.job",
    "AuditRun": "auditor.audit.job",
    "certify_model": "auditor.audit.run",
    "run_audit": "auditor.audit.run",
    "ScorerTask": "auditor.audit.run",
    "Certificate": "auditor.certificate.schema",
    "read_certificate": "auditor.certificate.schema",
    "publish": "auditor.attest.publish",
    "keygen": "auditor.attest.signing",
    "verify_signed": "auditor.verify.certificates:verify",
    "Verification": "auditor.verify.certificates",
    "gate_candidate": "auditor.gate.check",
    "trusted_base": "auditor.gate.check",
    "GateResult": "auditor.gate.radius",
    "token_bound": "auditor.gate.tokens",
    "AuditorError": "auditor.errors",
    "PolicyError": "auditor.errors",
}

__all__ = [
    "__version__",
    "load_policy",
    "parse_policy",
    "Policy",
    "LoadedPolicy",
    "load_model",
    "certify",
    "AuditRun",
    "certify_model",
    "run_audit",
    "ScorerTask",
    "Certificate",
    "read_certificate",
    "publish",
    "keygen",
    "verify_signed",
    "Verification",
    "gate_candidate",
    "trusted_base",
    "GateResult",
    "token_bound",
    "AuditorError",
    "PolicyError",
]


def __getattr__(name: str) -> Any:
    if name in _HOME:
        module, _, attr = _HOME[name].partition(":")
        value = getattr(import_module(module), attr or name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
