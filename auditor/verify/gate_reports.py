"""Check a signed gate report: its envelope, the report file, and (optionally) the candidate's files.

`auditor gate --key` writes `gate-*.json` and `gate-*.intoto.jsonl` next to it: an in-toto Statement
whose predicate is the report and whose subjects are the candidate's files. A platform re-checks the
candidate against them before loading it, so a folder changed after it was gated is caught.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from auditor.attest.signing import CERT_JSON, ENVELOPE, STATEMENT_TYPE
from auditor.errors import AuditorError
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


def gate_report_paths(target: Path) -> tuple[Path, Path] | None:
    """(envelope, report) when `target` is a gate report (`gate-*.json`) or its envelope, else None."""
    if not target.is_file() or target.name in (ENVELOPE, CERT_JSON):
        return None
    if target.name.endswith(".intoto.jsonl"):
        return target, target.with_name(target.name.removesuffix(".intoto.jsonl") + ".json")
    if target.suffix == ".json":
        try:
            head = json.loads(target.read_bytes())
        except (OSError, ValueError):
            return None
        if isinstance(head, dict) and head.get("report") == "auditor-gate":
            return target.with_name(target.stem + ".intoto.jsonl"), target
    return None


def verify_gate_report(envelope_path: Path, report_path: Path, key: Any, candidate: Path | None) -> Verification:
    """A signed gate report: signature, the report file is the signed predicate, candidate digests."""
    from auditor.attest.signing import GATE_PREDICATE_TYPE
    from auditor.model.checkpoint import directory_digests

    if not envelope_path.exists():
        return Verification(False, f"no signature envelope ({envelope_path.name}) next to {report_path.name}: UNSIGNED")
    if not report_path.exists():
        raise AuditorError(f"{report_path}: gate report not found next to its envelope")
    try:
        envelope = parse_envelope(read_input(envelope_path, "envelope"))
        check_signature(envelope, key)
        statement = load_statement(envelope.payload, GATE_PREDICATE_TYPE)
        report = statement.get("predicate")
        if not isinstance(report, dict) or report.get("report") != "auditor-gate":
            raise Invalid("signed predicate is not a gate report")
        check_certificate_file(report_path, report)
        subjects = subject_digests(statement)
        files = {f["path"]: f["sha256"] for f in report.get("candidate", {}).get("files", [])}
        if subjects != files:
            raise Invalid("statement subjects do not match the report's candidate files")
        checked = [
            f"signature: Ed25519, key {key.keyid[:16]}…",
            f"statement: {STATEMENT_TYPE}, predicate {GATE_PREDICATE_TYPE}, {len(subjects)} subjects",
            f"{report_path.name}: identical to the signed predicate",
        ]
        if candidate is not None:
            on_disk = {f.path: f.sha256 for f in directory_digests(Path(candidate))}
            if on_disk != files:
                diff = sorted(set(on_disk) ^ set(files)) or sorted(k for k in files if on_disk[k] != files[k])
                raise Invalid(f"candidate file {diff[0]}: not what the gate report signed")
            checked.append(f"candidate: {len(files)} file(s) in {candidate} match")
        else:
            checked.append("candidate files: not checked (pass --model CANDIDATE_DIR to re-hash them)")
    except Invalid as exc:
        return Verification(False, str(exc))
    run_id = report.get("certificate", {}).get("run_id")
    head = f"VALID: gate report (verdict {str(report.get('verdict')).upper()}, certificate {run_id})"
    return Verification(True, checked=checked, headline=head)
