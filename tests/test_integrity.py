"""Attacks on what surrounds the weights: scorer and data files, the draw log, signed gate reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from factories import make_certificate, sign_certificate

from auditor.attest.inputs import policy_files
from auditor.audit.drawlog import DrawLog, read_draws
from auditor.certificate.schema import AttestedFile
from auditor.cli import main, resume_command
from auditor.errors import AuditorError
from auditor.policy.schema import load_policy

HEADER = {"policy_sha256": "p", "model_root_digest": "m", "parameters_digest": "d"}


def _policy(tmp_path: Path) -> Path:
    (tmp_path / "scorer.py").write_text("def judge(answer, example):\n    return int('Paris' in answer)\n")
    (tmp_path / "data.jsonl").write_text('{"prompt": "Capital of France?", "answer": "Paris"}\n')
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        textwrap.dedent(
            """
            schema_version: 1
            seed: 1
            perturbation: {sigma: 0.004}
            tasks:
              - name: t
                source: {format: jsonl, path: data.jsonl}
                oracle: {type: python, scorer: "scorer.py:judge"}
            """
        )
    )
    return policy


def test_policy_files_records_scorer_and_data(tmp_path):
    files = policy_files(load_policy(_policy(tmp_path)))
    assert [(f.role, f.path) for f in files] == [("data", "data.jsonl"), ("scorer", "scorer.py")]
    assert all(len(f.sha256) == 64 and f.size > 0 for f in files)


@pytest.fixture
def signed_run(tmp_path):
    """A signed certificate attesting a scorer and a data file next to its policy."""
    policy = _policy(tmp_path)
    cert = make_certificate().model_copy(update={"attested_files": policy_files(load_policy(policy))})
    cert = cert.model_copy(update={"policy": cert.policy.model_copy(update={"path": str(policy)})})
    pub = sign_certificate(cert, tmp_path / "run", tmp_path / "keys")
    return tmp_path, pub


def _verify(run: Path, pub: Path, capsys) -> tuple[int, str]:
    code = main(["verify", str(run), "--key", str(pub)])
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def test_attested_files_are_signed_subjects_and_rehashed(signed_run, capsys):
    tmp, pub = signed_run
    statement = json.loads(
        __import__("base64").b64decode(json.loads((tmp / "run" / "certificate.intoto.jsonl").read_text())["payload"])
    )
    assert {"scorer:scorer.py", "data:data.jsonl"} <= {s["name"] for s in statement["subject"]}
    code, text = _verify(tmp / "run", pub, capsys)
    assert code == 0 and "scorer file scorer.py: matches" in text and "data file data.jsonl: matches" in text


@pytest.mark.parametrize(
    "file, edit",
    [
        ("scorer.py", "def judge(answer, example):\n    return True\n"),  # the swap
        ("data.jsonl", '{"prompt": "1+1?", "answer": "2"}\n'),
    ],
)
def test_swapped_scorer_or_edited_data_is_invalid(signed_run, capsys, file, edit):
    tmp, pub = signed_run
    (tmp / file).write_text(edit)
    code, text = _verify(tmp / "run", pub, capsys)
    assert code == 1 and "INVALID" in text and file in text and "sha256 differs" in text


def test_attested_subjects_must_match_the_certificate(tmp_path, capsys):
    # a signer who lists other digests in the subjects than in the certificate is caught
    from auditor.attest import signing

    cert = make_certificate().model_copy(
        update={"attested_files": [AttestedFile(role="scorer", path="s.py", sha256="0" * 64, size=1)]}
    )
    statement = signing.build_statement(cert, {})
    for s in statement["subject"]:
        if s["name"] == "scorer:s.py":
            s["digest"]["sha256"] = "1" * 64
    signing.keygen(tmp_path / "keys")
    run = tmp_path / "run"
    run.mkdir()
    from auditor.certificate.schema import write_certificate

    write_certificate(cert, run / "certificate.json")
    signer = signing.load_signer(tmp_path / "keys" / signing.SIGNING_KEY)
    signing.write_envelope(signing.sign_statement(statement, signer), run / signing.ENVELOPE)
    code, text = _verify(run, tmp_path / "keys" / signing.PUBLIC_KEY, capsys)
    assert code == 1 and "scorer and data files" in text


# ---------------------------------------------------------------- the draw log


def _log(path: Path, draws: list[int], torn: str = "") -> Path:
    lines = [json.dumps({"header": HEADER})]
    lines += [json.dumps({"draw": d, "results": {"t": {"value": 1.0, "evaluations": 1}}}) for d in draws]
    path.write_text("\n".join(lines) + "\n" + torn)
    return path


def test_resume_cuts_a_torn_last_line_before_appending(tmp_path):
    path = _log(tmp_path / "draws.jsonl", [0, 1], torn='{"draw": 2, "resu')
    log = DrawLog(path, HEADER, resume=True)
    assert sorted(log.done) == [0, 1]
    log.append(2, {"t": {"value": 0.0, "evaluations": 1}})
    log.close()
    _, records = read_draws(path)
    assert [r["draw"] for r in records] == [0, 1, 2]  # the new record is on its own line, none lost


@pytest.mark.parametrize(
    "draws, message",
    [([0, 1, 1, 2], "repeats draw 1"), ([0, 2, 3], "skips to draw 2"), ([1], "skips to draw 1")],
)
def test_resume_refuses_duplicates_and_gaps(tmp_path, draws, message):
    path = _log(tmp_path / "draws.jsonl", draws)
    with pytest.raises(AuditorError, match=message) as err:
        DrawLog(path, HEADER, resume=True)
    assert "\n" not in str(err.value) and "line" in str(err.value)


def test_garbage_in_the_middle_is_refused(tmp_path):
    path = tmp_path / "draws.jsonl"
    _log(path, [0, 1])
    lines = path.read_text().splitlines()
    lines.insert(2, "{not json")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditorError, match="line 3 is not a draw record"):
        DrawLog(path, HEADER, resume=True)


def test_second_run_on_the_same_folder_fails_fast_naming_the_holder(tmp_path):
    first = DrawLog(tmp_path / "draws.jsonl", HEADER, resume=False)
    try:
        # another process: flock is per open file description, so a child sees the lock
        code = (
            "import sys; from pathlib import Path; from auditor.audit.drawlog import DrawLog\n"
            f"DrawLog(Path({str(tmp_path / 'draws.jsonl')!r}), {HEADER!r}, resume=True)\n"
        )
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode != 0 and "run folder in use by pid" in proc.stderr and str(os.getpid()) in proc.stderr
        # ... and in-process a second log on the folder is refused too, the file untouched
        before = (tmp_path / "draws.jsonl").read_bytes()
        with pytest.raises(AuditorError, match=f"in use by pid {os.getpid()}"):
            DrawLog(tmp_path / "draws.jsonl", HEADER, resume=True)
        assert (tmp_path / "draws.jsonl").read_bytes() == before
    finally:
        first.close()
    DrawLog(tmp_path / "draws.jsonl", HEADER, resume=True).close()  # released: the next run may go


def test_resume_command_is_the_same_command_with_out_and_resume():
    cmd = resume_command(["certify", "my policy.yaml", "--out", "old", "--threads", "1"], Path("reports/run 1"))
    assert cmd == "auditor certify 'my policy.yaml' --threads 1 --out 'reports/run 1' --resume"
    assert resume_command(["certify", "--resume", "--out=x"], "r") == "auditor certify --out r --resume"


def test_verify_checks_the_draw_log_against_the_certificate(tmp_path, capsys):
    """A real signed run of the example: any edit of the log's values is caught."""
    example = Path(__file__).resolve().parents[1] / "reports" / "example"
    if not (example / "draws.jsonl").exists():
        pytest.skip("example run not present")
    run = tmp_path / "example"
    shutil.copytree(example, run)
    code, text = _verify(run, run / "signing-key.pub", capsys)
    used = json.loads((run / "certificate.json").read_text())["sampling"]["draws_used"]
    assert code == 0 and f"draws.jsonl: {used} draws give" in text
    lines = (run / "draws.jsonl").read_text().splitlines()
    rec = json.loads(lines[5])
    task = sorted(rec["results"])[0]
    rec["results"][task]["value"] = 1.0 - rec["results"][task]["value"] + 0.25
    (run / "draws.jsonl").write_text("\n".join([*lines[:5], json.dumps(rec), *lines[6:]]) + "\n")
    code, text = _verify(run, run / "signing-key.pub", capsys)
    assert code == 1 and f"task {task}" in text and "draws.jsonl" in text
    (run / "draws.jsonl").write_text("\n".join([*lines[:5], *lines[6:]]) + "\n")  # a draw removed
    code, text = _verify(run, run / "signing-key.pub", capsys)
    assert code == 1 and "skips to draw 5" in text


# ---------------------------------------------------------------- signed gate reports


def test_verify_signed_gate_report(tmp_path, capsys):
    from auditor.attest import signing
    from auditor.cli.gate_cmds import write_report
    from auditor.model.checkpoint import sha256_file

    cand = tmp_path / "cand"
    cand.mkdir()
    (cand / "model.safetensors").write_bytes(b"weights")
    report = {
        "report": "auditor-gate",
        "verdict": "pass",
        "certificate": {"run_id": "r1"},
        "candidate": {"files": [{"path": "model.safetensors", "sha256": sha256_file(cand / "model.safetensors")}]},
    }
    keys = signing.keygen(tmp_path / "keys")
    subjects = [{"name": "model.safetensors", "digest": {"sha256": report["candidate"]["files"][0]["sha256"]}}]
    out = tmp_path / "gate.json"
    write_report(report, out, signing.load_signer(keys["private_key"]), subjects)
    pub = str(keys["public_key"])
    for target in (out, tmp_path / "gate.intoto.jsonl"):
        assert main(["verify", str(target), "--key", pub, "--model", str(cand)]) == 0
        assert "VALID: gate report (verdict PASS, certificate r1)" in capsys.readouterr().out
    (cand / "model.safetensors").write_bytes(b"other weights")  # the candidate swapped after gating
    assert main(["verify", str(out), "--key", pub, "--model", str(cand)]) == 1
    assert "model.safetensors" in capsys.readouterr().err
    edited = dict(report, verdict="pass", certificate={"run_id": "forged"})
    out.write_text(json.dumps(edited))
    assert main(["verify", str(out), "--key", pub]) == 1
    assert "differs from the signed predicate" in capsys.readouterr().err
    (tmp_path / "gate.intoto.jsonl").unlink()
    assert main(["verify", str(out), "--key", pub]) == 1
    assert "UNSIGNED" in capsys.readouterr().err


def test_resumed_draw_without_a_task_is_refused(tmp_path):
    from auditor.audit.sample import SamplingPlan, run_draws

    class Task:
        name, examples = "other", [0]

    path = _log(tmp_path / "draws.jsonl", [0])  # its draw 0 holds task "t" only
    log = DrawLog(path, HEADER, resume=True)
    try:
        with pytest.raises(AuditorError, match="draw 0 has no record of task other"):
            run_draws(None, None, [Task()], None, SamplingPlan("batched", 2, 0, 1), log)
    finally:
        log.close()


def test_certify_on_a_folder_another_run_holds_exits_2_naming_it(tmp_path, tiny_model_dir, capsys):
    from test_cli import write_policy

    policy = write_policy(tmp_path, str(tiny_model_dir))
    run = tmp_path / "run"
    holder = DrawLog(run / "draws.jsonl", HEADER, resume=False)  # a run in progress on this folder
    try:
        before = (run / "draws.jsonl").read_bytes()
        code = main(["certify", str(policy), "--out", str(run), "--resume", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and f"in use by pid {os.getpid()}" in err and len(err.strip().splitlines()) == 1
        assert (run / "draws.jsonl").read_bytes() == before and not (run / "certificate.json").exists()
    finally:
        holder.close()
