"""A DSSE envelope and the in-toto statement inside it: parsing, the signature, the signed file.

Shared by the checks of certificates (`auditor.verify.certificates`) and of gate reports
(`auditor.verify.gate_reports`), and by the gate's trust in a base certificate. Anything malformed
or not matching raises `Invalid`; only an unreadable file is a usage error (AuditorError).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.attest.signing import PAYLOAD_TYPE, STATEMENT_TYPE
from auditor.certificate.schema import Certificate, canonical_json
from auditor.errors import AuditorError


class Invalid(Exception):
    """A check that failed: the certificate is not what it claims."""


@dataclass
class Verification:
    """The outcome: valid or not, the reason when not, and what was checked."""

    valid: bool
    reason: str = ""
    checked: list[str] = field(default_factory=list)
    certificate: Certificate | None = None
    headline: str = ""

    def summary(self) -> str:
        if not self.valid:
            return f"INVALID: {self.reason}"
        cert = self.certificate
        head = f"VALID: certificate {cert.run_id} (verdict {cert.verdict.upper()})" if cert else "VALID"
        head = self.headline or head
        if cert is not None and cert.verdict == "measured":
            # the signature is valid; the audit tested nothing, so it must not read as a pass
            head += " — measured only: the policy set no requirement, so the certificate does not pass anything"
        return head + "\n" + "\n".join(f"  - {line}" for line in self.checked)


def read_input(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AuditorError(f"{path}: {what} not readable ({exc.strerror or exc})") from exc


def _strict_b64(text: Any) -> bytes:
    # Reject anything but the one canonical encoding, so no edit of the text decodes to the same bytes.
    if not isinstance(text, str):
        raise ValueError("not a string")
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return raw


def parse_envelope(data: bytes) -> Any:
    """A securesystemslib DSSE Envelope from the file bytes; Invalid when malformed in any way."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import FormatError

    lines = data.split(b"\n")
    if len(lines) > 2 or (len(lines) == 2 and lines[1] != b""):
        raise Invalid("envelope file must hold exactly one DSSE envelope on one line")
    try:
        raw = json.loads(lines[0])
        if not isinstance(raw, dict) or set(raw) != {"payload", "payloadType", "signatures"}:
            raise ValueError("unexpected fields")
        _strict_b64(raw["payload"])
        for sig in raw["signatures"]:
            _strict_b64(sig["sig"])
        envelope = Envelope.from_dict(copy.deepcopy(raw))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, FormatError) as exc:
        raise Invalid(f"malformed DSSE envelope ({exc})") from exc
    if envelope.to_dict() != raw:
        raise Invalid("malformed DSSE envelope (it does not re-serialise to itself)")
    return envelope


def check_signature(envelope: Any, key: Any) -> None:
    from securesystemslib.exceptions import VerificationError

    if envelope.payload_type != PAYLOAD_TYPE:
        raise Invalid(f"envelope payloadType is {envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}")
    try:
        envelope.verify([key], 1)
    except (VerificationError, ValueError) as exc:
        raise Invalid(f"signature does not verify with key {key.keyid[:16]}… ({exc})") from exc


def load_statement(payload: bytes, predicate_type: str) -> dict[str, Any]:
    """The signed in-toto statement with that predicate type and well-formed subjects; Invalid otherwise."""
    try:
        statement = json.loads(payload)
    except ValueError as exc:
        raise Invalid(f"signed payload is not JSON ({exc})") from exc
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise Invalid(f"signed payload is not an in-toto Statement ({STATEMENT_TYPE})")
    if statement.get("predicateType") != predicate_type:
        raise Invalid(f"predicateType is {statement.get('predicateType')!r}, expected {predicate_type!r}")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("digest"), dict) for s in subjects
    ):
        raise Invalid("statement subjects are malformed")
    return statement


def subject_digests(statement: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in statement["subject"]:
        if s["name"] in out:
            raise Invalid(f"subject {s['name']!r} appears twice")
        out[s["name"]] = str(s["digest"].get("sha256", ""))
    return out


def check_certificate_file(path: Path, predicate: Any) -> None:
    """certificate.json must be byte-for-byte the canonical JSON of the signed predicate."""
    data = read_input(path, "certificate")
    expected = canonical_json(predicate)
    if data not in (expected, expected + b"\n"):
        raise Invalid(f"{path.name} differs from the signed predicate (canonical bytes)")
