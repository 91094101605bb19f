"""The CI examples under examples/ci parse, fit together, and the certify step's script really runs."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import yaml

from auditor.cli import cli
from tests.test_cli import write_policy

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "examples" / "ci" / "certify" / "action.yml"
WORKFLOW = ROOT / "examples" / "ci" / "github-workflow.yml"


def _certify_options() -> set[str]:
    from auditor.cli import _register

    _register()
    command = cli.commands["certify"]
    return {opt for p in command.params for opt in getattr(p, "opts", [])}


def test_action_is_a_well_formed_composite_action() -> None:
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    declared = set(action["inputs"])
    steps = action["runs"]["steps"]
    text = ACTION.read_text()
    used = set(re.findall(r"\$\{\{\s*inputs\.([\w-]+)\s*\}\}", text))
    assert used <= declared, f"inputs used but not declared: {used - declared}"
    assert {name for name, spec in action["inputs"].items() if spec.get("required")} == {"policy"}
    for step in steps:
        assert "run" in step or "uses" in step
        if "run" in step:
            assert step.get("shell") == "bash"  # composite actions need an explicit shell
    outputs = {k: v["value"] for k, v in action["outputs"].items()}
    ids = {s.get("id") for s in steps}
    for value in outputs.values():
        step_id = re.search(r"steps\.([\w-]+)\.outputs", value)
        assert step_id and step_id.group(1) in ids
    # every flag the action passes to `auditor certify` exists
    certify_run = next(s["run"] for s in steps if s.get("id") == "certify")
    flags = set(re.findall(r"(--[a-z-]+)", certify_run.split("auditor certify", 1)[1].splitlines()[0]))
    assert {"--json", "--junit", "--reports", "--model"} <= flags <= _certify_options()


def test_workflow_uses_the_action_and_keeps_the_reports() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as true
    assert "pull_request" in on
    steps = workflow["jobs"]["certify"]["steps"]
    local = [s["uses"] for s in steps if s.get("uses", "").startswith("./")]
    assert local == ["./examples/ci/certify"] and (ROOT / local[0] / "action.yml").is_file()
    action_inputs = set(yaml.safe_load(ACTION.read_text())["inputs"])
    audit = next(s for s in steps if s.get("uses") == local[0])
    assert set(audit["with"]) <= action_inputs
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads and uploads[0]["if"] == "always()"


def test_the_certify_step_script_runs(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Run the action's certify step with bash, as a runner would (outputs and summary files included)."""
    step = next(s for s in yaml.safe_load(ACTION.read_text())["runs"]["steps"] if s.get("id") == "certify")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "auditor").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m auditor "$@"\n')
    (shim / "auditor").chmod(stat.S_IRWXU)
    (shim / "python").symlink_to(sys.executable)
    policy = write_policy(tmp_path, str(tiny_model_dir), need=0.0, draws=2)
    env = {
        **os.environ,
        "PATH": f"{shim}:{os.environ['PATH']}",
        "POLICY": str(policy),
        "MODEL": "",
        "REPORTS": "out",
        "JUNIT": "out/junit.xml",
        "AUDITOR_THREADS": "1",
        "GITHUB_OUTPUT": str(tmp_path / "gh_output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "gh_summary"),
    }
    r = subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    outputs = dict(line.split("=", 1) for line in (tmp_path / "gh_output").read_text().splitlines())
    assert outputs == {"exit-code": "0", "summary": "out/summary.json", "verdict": "pass"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["verdict"] == "pass"
    summary = (tmp_path / "gh_summary").read_text()
    assert summary.startswith("### auditor: PASS") and "| capitals |" in summary
    assert (tmp_path / "out" / "junit.xml").is_file()
