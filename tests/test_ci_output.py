"""CI-native output of `auditor certify`: --json on stdout, --junit, --quiet, progress lines in a log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from auditor.certificate.report_formats import CheckCase, junit_xml
from tests.test_cli import write_policy


def _certify(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUDITOR_THREADS": "1"}
    cmd = [sys.executable, "-m", "auditor", "certify", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_json_junit_and_progress_lines(tmp_path: Path, tiny_model_dir: Path) -> None:
    policy = write_policy(tmp_path, str(tiny_model_dir), need=0.0, draws=4)
    junit = tmp_path / "junit.xml"
    r = _certify(
        str(policy),
        "--out",
        str(tmp_path / "run"),
        "--json",
        "--junit",
        str(junit),
        "--progress-every",
        "0",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # stdout is the JSON document and nothing else
    assert doc["verdict"] == "pass" and doc["exit_code"] == 0 and doc["draws_used"] == 4
    assert [t["name"] for t in doc["tasks"]] == ["capitals", "scored"]
    assert {"p_hat", "p_lower", "radius", "clean_score", "verdict", "require"} <= set(doc["tasks"][0])
    assert Path(doc["files"]["certificate"]).is_file() and doc["files"]["junit"] == str(junit)
    # stderr is a pipe here: plain progress lines (draws done, per-task p̂, ETA), then the human report
    progress = [line for line in r.stderr.splitlines() if line.startswith("draws ")]
    assert [line.split()[1] for line in progress] == ["1/4", "2/4", "3/4", "4/4"]
    assert "capitals p̂=" in progress[-1] and "scored p̂=1.000" in progress[-1] and "ETA 0:00" in progress[-1]
    assert "verdict: PASS" in r.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "0"
    names = [(c.get("classname"), c.get("name")) for c in suite.iter("testcase")]
    assert names == [("auditor.certify.capitals", "p_lower >= 0"), ("auditor.certify.scored", "verdict")]


def test_failing_requirement_is_a_junit_failure_and_quiet_prints_nothing(tmp_path: Path, tiny_model_dir: Path) -> None:
    policy = write_policy(tmp_path, str(tiny_model_dir), need=0.2, draws=4)  # reachable, missed
    junit = tmp_path / "junit.xml"
    r = _certify(str(policy), "--out", str(tmp_path / "run"), "--quiet", "--junit", str(junit), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stdout == "" and r.stderr == ""
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["p_lower >= 0.2"]
    assert failed[0].find("failure").get("message").startswith("fail: p_lower=")  # type: ignore[union-attr]


def test_json_error_exit_2_leaves_stdout_empty(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nseed: 1\n")
    r = _certify(str(bad), "--json", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == "" and "error: " in r.stderr and "Traceback" not in r.stderr


def test_junit_escapes_and_counts() -> None:
    cases = [CheckCase("auditor.gate.a<b", 'delta & "norm"', False, "x < y", "detail"), CheckCase("c", "ok", True)]
    root = ET.fromstring(junit_xml("auditor gate", cases))
    assert root.get("tests") == "2" and root.get("failures") == "1"
    first = root.find("testsuite/testcase")
    assert first is not None and first.get("classname") == "auditor.gate.a<b" and first.get("name") == 'delta & "norm"'


def test_measured_tasks_fail_no_requirement_but_a_measured_certificate_fails_one_case() -> None:
    from factories import make_certificate

    from auditor.certificate.report_formats import certificate_cases

    cert = make_certificate()
    task = cert.tasks[0].model_copy(update={"min_p_lower": None, "verdict": "measured", "reasons": ["measured"]})
    other = cert.tasks[0].model_copy(update={"name": "other"})
    cases = certificate_cases(cert.model_copy(update={"tasks": [other, task]}))
    assert [(c.name, c.passed) for c in cases] == [("p_lower >= 0.6", True), ("verdict", True)]
    only = cert.model_copy(update={"tasks": [task], "verdict": "measured", "reasons": ["no task has a requirement"]})
    assert [(c.classname, c.name, c.passed) for c in certificate_cases(only)] == [
        ("auditor.certify.capitals", "verdict", True),
        ("auditor.certify", "requirement", False),
    ]
