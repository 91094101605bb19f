"""Exit codes of `auditor certify` / `validate`: 0 pass, 1 fail, 2 error, 130 interrupted (then resumed)."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auditor.cli import main

POLICY = """
schema_version: 1
model: {model}
seed: 3
alpha: 0.05
perturbation: {{sigma: 0.01}}
sampling: {{draws: {draws}, batch_size: 4}}
tasks:
  - name: capitals
    source: builtin:capitals
    oracle: {{type: contains}}
    limit: 4
    max_new_tokens: 2
    require: {{min_p_lower: {need}}}
  - name: scored
    source: builtin:arithmetic
    oracle: {{type: python, scorer: "scorer.py:always"}}
    limit: 4
    max_new_tokens: 2
"""


def write_policy(tmp_path: Path, model: str, need: float = 0.0, draws: int = 4) -> Path:
    (tmp_path / "scorer.py").write_text("def always(answer, example):\n    return 1\n")
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(model=model, need=need, draws=draws))
    return path


def test_validate_default_and_bad_policy(tmp_path, capsys):
    assert main(["validate"]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nseed: 1\nperturbation: {sigma: zero}\ntasks: []\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()  # both problems, one line each, each naming the file and the field
    assert len(lines) == 2 and all(line.startswith(f"error: {bad}: field '") for line in lines)
    assert "perturbation.sigma" in lines[0] and "'tasks'" in lines[1]
    assert "Traceback" not in err


def test_certify_pass_writes_certificate(tmp_path, tiny_model_dir, capsys):
    policy = write_policy(tmp_path, str(tiny_model_dir), need=0.0)
    out = tmp_path / "run"
    assert main(["certify", str(policy), "--out", str(out), "--no-progress"]) == 0
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["verdict"] == "pass" and [t["name"] for t in cert["tasks"]] == ["capitals", "scored"]
    assert cert["tasks"][1]["p_hat"] == 1.0 and cert["sampling"]["alpha_per_task"] == 0.025
    assert cert["model"]["root_digest"] and (out / "draws.jsonl").exists()
    assert "verdict: PASS" in capsys.readouterr().out


def test_certify_fail_exit_1(tmp_path, tiny_model_dir):
    policy = write_policy(tmp_path, str(tiny_model_dir), need=0.2)  # reachable with 4 draws, missed
    assert main(["certify", str(policy), "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    assert json.loads((tmp_path / "run" / "certificate.json").read_text())["verdict"] == "fail"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda t: t.replace("builtin:capitals", "builtin:nonsense"), "builtin:nonsense"),
        (lambda t: t.replace("scorer.py:always", "scorer.py:missing"), "missing"),
        (lambda t: t, "model not found"),
    ],
)
def test_certify_errors_exit_2_with_one_line(tmp_path, tiny_model_dir, capsys, mutate, expected):
    policy = write_policy(tmp_path, str(tmp_path / "no-such-model"))
    if expected != "model not found":
        policy = write_policy(tmp_path, str(tiny_model_dir))
    policy.write_text(mutate(policy.read_text()))
    assert main(["certify", str(policy), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="policy file not found"):
        main(["--debug", "validate", str(tmp_path / "nope.yaml")])


def test_unknown_option_is_a_usage_error():
    assert main(["certify", "--no-such-flag"]) == 2


def test_sigint_then_resume_matches_an_uninterrupted_run(tmp_path, tiny_model_dir):
    policy = write_policy(tmp_path, str(tiny_model_dir), draws=200)
    full = tmp_path / "full"
    assert main(["certify", str(policy), "--out", str(full), "--no-progress"]) == 0
    cut = tmp_path / "cut"
    cmd = [sys.executable, "-m", "auditor", "certify", str(policy), "--out", str(cut), "--no-progress"]
    # a shell that started us in the background may have left SIGINT ignored: give the child the default back
    restore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, preexec_fn=restore_sigint
    )
    log = cut / "draws.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    resume = err.decode().split("resume with: ", 1)[1].strip()  # the exact command, printed on Ctrl-C
    assert resume == f"auditor certify {policy} --no-progress --out {cut} --resume"
    done = len(log.read_text().splitlines()) - 1
    assert 3 <= done < 200 and not (cut / "certificate.json").exists()
    assert main(shlex.split(resume)[1:]) == 0
    a, b = (json.loads((d / "certificate.json").read_text()) for d in (full, cut))
    for d in (a, b):
        for k in ("started", "finished", "run_id", "artifacts"):
            d.pop(k, None)
    assert a == b
