"""Machine-readable outcomes for CI: a JSON summary document and JUnit XML.

`certify_summary` is what `auditor certify --json` prints on stdout: the verdict and exit code, the
per-task numbers and the paths of the files written. `CheckCase` + `write_junit` make a JUnit file
with one test case per checked requirement; `certificate_cases` gives those of a certificate (one
per task requirement), and any other command (the gate) can build its own cases and write them.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.certificate.schema import Certificate, TaskResult

SUMMARY_VERSION = 1


def certify_summary(
    cert: Certificate, files: dict[str, Path], exit_code: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON document of a finished audit (stable keys; `summary_version` bumps on a change)."""
    return {
        "summary_version": SUMMARY_VERSION,
        "command": "certify",
        "verdict": cert.verdict,
        "exit_code": exit_code,
        "reasons": list(cert.reasons),
        "run_id": cert.run_id,
        "model": {"name": cert.model.name, "root_digest": cert.model.root_digest},
        "policy": {"path": cert.policy.path, "sha256": cert.policy.sha256},
        "sigma": cert.perturbation.sigma,
        "alpha": cert.sampling.alpha,
        "bound": cert.sampling.bound,
        "draws_used": cert.sampling.draws_used,
        "tasks": [_task_numbers(t) for t in cert.tasks],
        "sigma_search": _search_numbers(cert),
        "files": {kind: str(path) for kind, path in files.items()},
        **(extra or {}),
    }


def _search_numbers(cert: Certificate) -> dict[str, Any] | None:
    """sigma* and its radius per task (grid), or the chosen sigma (auto); None for a single sigma."""
    search = cert.sigma_search
    if search is None:
        return None
    if search.mode == "auto":
        return {"mode": "auto", "chosen": search.chosen, "candidates": search.sigmas}
    return {
        "mode": "grid",
        "grid": search.sigmas,
        "sigma_star": {e.task: e.sigma_star for e in search.edges},
        "radius_at_star": {e.task: e.radius_at_star for e in search.edges},
    }


def _task_numbers(t: TaskResult) -> dict[str, Any]:
    return {
        "name": t.name,
        "verdict": t.verdict,
        "clean_score": t.clean_score,
        "p_hat": t.p_hat,
        "p_lower": t.p_lower,
        "p_upper": t.p_upper,
        "target": t.target,
        "radius": t.radius,
        "radius_over_sigma": t.radius_over_sigma,
        "draws": t.draws,
        "n_examples": t.n_examples,
        "require": {"min_p_lower": t.min_p_lower, "min_radius": t.min_radius},
        "reasons": list(t.reasons),
    }


def dumps(document: dict[str, Any]) -> str:
    """The document as indented JSON (readable in a CI log, parseable by jq); NaN is refused."""
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class CheckCase:
    """One JUnit test case: a requirement or check that passed or failed."""

    classname: str  # e.g. 'auditor.certify.capitals' or 'auditor.gate.candidate-a'
    name: str  # e.g. 'p_lower >= 0.5'
    passed: bool
    message: str = ""  # one line: why it failed (or what was measured)
    details: str = ""  # more text for the report's system-out
    seconds: float = 0.0


def certificate_cases(cert: Certificate) -> list[CheckCase]:
    """One case per task requirement (min_p_lower, min_radius); a task without one gets one case."""
    cases = []
    for t in cert.tasks:
        where = f"auditor.certify.{t.name}"
        details = "; ".join(t.reasons)
        measured = f"p_lower={t.p_lower:.4f} p_hat={t.p_hat:.4f} radius={t.radius:.4g} draws={t.draws}"
        checks: list[tuple[str, bool]] = []
        if t.min_p_lower is not None:
            checks.append((f"p_lower >= {t.min_p_lower:g}", t.p_lower >= t.min_p_lower))
        if t.min_radius is not None:
            checks.append((f"radius >= {t.min_radius:g}", t.radius >= t.min_radius))
        if not checks:
            checks.append(("verdict", t.verdict == "pass"))
        for name, met in checks:
            # the task's verdict decides (an inconclusive task may pass by policy); a failing task fails
            # exactly the requirements its numbers do not meet; a measured task (no requirement) fails none
            ok = t.verdict in ("pass", "measured") or (met and name != "verdict")
            cases.append(CheckCase(where, name, ok, f"{t.verdict}: {measured}", details))
    if cert.verdict == "measured":  # nothing was required, so nothing passed (exit 1): one failing case says so
        cases.append(CheckCase("auditor.certify", "requirement", False, "; ".join(cert.reasons)))
    return cases


def junit_xml(suite: str, cases: Sequence[CheckCase]) -> str:
    """A JUnit XML report (the common subset GitHub, GitLab and Jenkins read) of one suite."""
    failures = sum(not c.passed for c in cases)
    total_time = sum(c.seconds for c in cases)
    root = ET.Element("testsuites", name="auditor", tests=str(len(cases)), failures=str(failures), errors="0")
    node = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{total_time:.3f}",
    )
    for c in cases:
        case = ET.SubElement(node, "testcase", classname=c.classname, name=c.name, time=f"{c.seconds:.3f}")
        if not c.passed:
            fail = ET.SubElement(case, "failure", message=c.message, type="requirement")
            fail.text = c.details or c.message
        elif c.message or c.details:
            ET.SubElement(case, "system-out").text = "\n".join(x for x in (c.message, c.details) if x)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: Path, suite: str, cases: Sequence[CheckCase]) -> Path:
    """Write the JUnit report atomically (a CI step reading it never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(junit_xml(suite, cases), encoding="utf-8")
    tmp.replace(path)
    return path
