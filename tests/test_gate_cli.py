"""`auditor gate` and `auditor tokens` through the CLI: exit codes, reports, signing, --recertify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_model
from factories import make_certificate, sign_certificate
from test_gate import BAD

from auditor.cli import main


@pytest.fixture
def world(tmp_path, tiny_tokenizer, monkeypatch):
    """A certified tiny base (with tokenizer), its certificate file, and the model to fine-tune."""
    model = make_model(tie=False)
    base = tmp_path / "base"
    model.save_pretrained(base, safe_serialization=True)
    tiny_tokenizer.save_pretrained(base)
    names = [n for n, _ in model.named_parameters() if "q_proj" in n or "embed" in n]
    params = dict(model.named_parameters())
    cert = make_certificate(
        model_dir=base,
        parameters=names,
        sigma=0.05,
        p_lower=0.8,
        dimension=sum(params[n].numel() for n in names),
    )
    cert_path = tmp_path / "cert" / "certificate.json"
    monkeypatch.setenv("AUDITOR_TRUSTED_KEY", str(sign_certificate(cert, cert_path.parent, tmp_path / "trusted")))
    return model, base, cert_path, tmp_path


def candidate(model, path: Path, scale: float, param: str = "model.layers.0.self_attn.q_proj.weight"):
    with torch.no_grad():
        p = dict(model.named_parameters())[param]
        old = p.detach().clone()
        p.add_(scale)
        model.save_pretrained(path, safe_serialization=True)
        p.copy_(old)
    base = path.parent / "base"
    for f in base.iterdir():  # the base's tokenizer files, unchanged
        if not (path / f.name).exists():
            shutil.copy(f, path / f.name)
    return path


def run(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_pass_writes_a_canonical_report(world, capsys):
    model, base, cert_path, tmp = world
    cand = candidate(model, tmp / "cand", 1e-5)
    out = tmp / "gate.json"
    code, text = run(["gate", str(cert_path), "--candidate", str(cand), "--out", str(out)], capsys)
    assert code == 0, text
    assert "PASS" in text and "sigma*sqrt(d)" in text
    report = json.loads(out.read_text())
    assert report["verdict"] == "pass" and report["kind"] == "checkpoint"
    assert report["delta"]["norm"] == pytest.approx(1e-5 * (32 * 32) ** 0.5, rel=1e-3)
    assert report["base"]["path"] == str(base)  # defaulted from the certificate's model.source
    from auditor.certificate.schema import canonical_json

    assert out.read_bytes() == canonical_json(report) + b"\n"


def test_not_certified_and_not_certifiable_exit_1(world, capsys):
    model, base, cert_path, tmp = world
    far = candidate(model, tmp / "far", 0.01)
    code, text = run(["gate", str(cert_path), "--candidate", str(far), "--out", str(tmp / "r1.json")], capsys)
    assert code == 1 and "NOT CERTIFIED" in text and "--recertify" in text
    outside = candidate(model, tmp / "outside", 1e-6, param="model.norm.weight")
    code, text = run(["gate", str(cert_path), "--candidate", str(outside), "--out", str(tmp / "r2.json")], capsys)
    assert code == 1 and "NOT CERTIFIABLE" in text and "model.norm.weight" in text


def test_errors_exit_2_with_one_line(world, capsys):
    model, base, cert_path, tmp = world
    cand = candidate(model, tmp / "cand", 1e-5)
    (cand / "pytorch_model.bin").write_bytes(b"\x80\x04.")
    code, text = run(["gate", str(cert_path), "--candidate", str(cand)], capsys)
    assert code == 2 and "pytorch_model.bin" in text and "Traceback" not in text
    (cand / "pytorch_model.bin").unlink()
    (base / "config.json").write_text((base / "config.json").read_text() + " ")
    code, text = run(["gate", str(cert_path), "--candidate", str(cand)], capsys)
    assert code == 2 and "config.json: sha256" in text
    code, text = run(["gate", str(tmp / "missing.json"), "--candidate", str(cand)], capsys)
    assert code == 2 and "missing.json: not found" in text


def test_signed_report_verifies(world, capsys):
    from securesystemslib.dsse import Envelope

    from auditor.attest import signing

    model, base, cert_path, tmp = world
    keys = signing.keygen(tmp / "keys")
    cand = candidate(model, tmp / "cand", 1e-5)
    out = tmp / "gate.json"
    code, text = run(
        ["gate", str(cert_path), "--candidate", str(cand), "--out", str(out), "--key", str(tmp / "keys")],
        capsys,
    )
    assert code == 0, text
    envelope = Envelope.from_dict(json.loads((tmp / "gate.intoto.jsonl").read_text()))
    envelope.verify([signing.load_public_key(keys["public_key"])], 1)
    statement = json.loads(envelope.payload)
    assert statement["predicate"] == json.loads(out.read_text())
    assert {s["name"] for s in statement["subject"]} >= {"model.safetensors", "config.json"}


def _run(cert, files):
    from auditor.audit.job import AuditRun

    return AuditRun(cert, files, 1.0, 0.1, 0.8, cert.sampling.draws_used, 0)


def test_recertify_reports_both_verdicts(world, capsys, monkeypatch):
    import auditor.audit.job

    model, base, cert_path, tmp = world
    far = candidate(model, tmp / "far", 0.01)
    seen = {}

    def fake_certify(loaded, model, out_dir, sequential, **progress):
        from factories import make_certificate

        seen.update(policy=loaded.text, model=model, sequential=sequential)
        cert = make_certificate(model_dir=Path(model), p_lower=0.9)
        return _run(cert, {"certificate": out_dir / "certificate.json"})

    monkeypatch.setattr(auditor.audit.job, "certify", fake_certify)
    out = tmp / "gate.json"
    code, text = run(
        [
            "gate",
            str(cert_path),
            "--candidate",
            str(far),
            "--out",
            str(out),
            "--recertify",
            "--recertify-out",
            str(tmp / "rerun"),
        ],
        capsys,
    )
    assert code == 0, text  # the gate cannot certify it, but the candidate's own audit passes
    report = json.loads(out.read_text())
    assert report["verdict"] == "recertified pass" and report["gate_verdict"] == "not certified"
    assert report["recertification"]["verdict"] == "pass"
    assert seen == {
        "policy": json.loads(cert_path.read_text())["policy"]["text"],
        "model": str(far),
        "sequential": True,
    }
    assert "RECERTIFIED PASS" in text


def test_recertify_an_adapter_merges_it_first(world, capsys, monkeypatch):
    import peft

    import auditor.audit.job

    model, base, cert_path, tmp = world
    pm = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.fill_(0.5)
    pm.save_pretrained(tmp / "adapter")
    seen = {}

    def fake_certify(loaded, model, out_dir, sequential, **progress):
        from auditor.model.checkpoint import weight_files

        seen["files"] = [f.name for f in weight_files(Path(model))]
        return _run(make_certificate(model_dir=Path(model), p_lower=0.3).model_copy(update={"verdict": "fail"}), {})

    monkeypatch.setattr(auditor.audit.job, "certify", fake_certify)
    code, text = run(
        [
            "gate",
            str(cert_path),
            "--candidate",
            str(tmp / "adapter"),
            "--out",
            str(tmp / "g.json"),
            "--recertify",
            "--recertify-out",
            str(tmp / "rerun"),
        ],
        capsys,
    )
    assert code == 1, text
    assert seen["files"] == ["model.safetensors"]  # a full merged checkpoint, not the adapter
    report = json.loads((tmp / "g.json").read_text())
    assert report["kind"] == "lora" and report["verdict"] == "recertified fail"
    assert report["gate_verdict"] == "not certified"
    assert report["recertification"]["verdict"] == "fail"


def test_tokens_cli_exit_codes(world, capsys):
    model, base, cert_path, tmp = world
    code, text = run(["tokens", str(cert_path), "--substitute", "#5=#5", "--out", str(tmp / "t0.json")], capsys)
    assert code == 0 and "HEURISTIC" in text
    assert json.loads((tmp / "t0.json").read_text())["delta_norm"] == 0.0
    code, text = run(
        [
            "tokens",
            str(cert_path),
            "--substitute",
            "#5=#6",
            "--substitute",
            "#5=#7",
            "--out",
            str(tmp / "t1.json"),
        ],
        capsys,
    )
    assert code == 1 and "refused" in text
    code, text = run(["tokens", str(cert_path), "--k", "2", "--out", str(tmp / "t2.json")], capsys)
    assert code in (0, 1) and json.loads((tmp / "t2.json").read_text())["worst_case"]["k"] == 2
    code, text = run(["tokens", str(cert_path), "--substitute", "#5=#6", "--k", "2"], capsys)
    assert code == 2


@pytest.mark.parametrize("case", sorted(BAD))
def test_every_bad_candidate_exits_2_naming_it(world, capsys, case):
    model, base, cert_path, tmp = world
    cand = tmp / "cand"
    model.save_pretrained(cand, safe_serialization=True)
    breaker, name = BAD[case]
    breaker(cand)
    capsys.readouterr()  # drop the progress bar of save_pretrained
    code = main(["gate", str(cert_path), "--candidate", str(cand), "--out", str(tmp / "r.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert name in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp / "r.json").exists()


def test_several_candidates_one_line_each_exit_code_the_worst(world, capsys):
    model, base, cert_path, tmp = world
    (tmp / "batch").mkdir()
    near = Path(shutil.move(candidate(model, tmp / "near", 1e-5), tmp / "batch" / "near"))
    far = Path(shutil.move(candidate(model, tmp / "far", 0.01), tmp / "batch" / "far"))
    out = tmp / "reports"
    code, text = run(
        ["gate", str(cert_path), "--candidate", str(near), "--candidate", str(far), "--out", str(out)], capsys
    )
    assert code == 1, text
    lines = [ln for ln in text.splitlines() if ln.startswith(("PASS", "NOT CERTIFIED"))]
    assert len(lines) == 2 and str(near) in lines[0] and lines[0].startswith("PASS")
    assert lines[1].startswith("NOT CERTIFIED") and str(far) in lines[1]
    reports = sorted(out.glob("*.json"))
    assert [json.loads(r.read_text())["verdict"] for r in reports] == ["pass", "not certified"]
    # a folder of candidates stands for each one; a broken one is an error line, exit 2, the others still gated
    broken = tmp / "batch" / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    code, text = run(["gate", str(cert_path), "--candidate", str(tmp / "batch"), "--out", str(out), "--quiet"], capsys)
    assert code == 2, text
    verdicts = [ln.split("  ")[0].strip() for ln in text.splitlines() if ln.strip()]
    assert verdicts == ["ERROR", "NOT CERTIFIED", "PASS"]  # sorted by folder name: broken, far, near
    assert "Delta" not in text.split("\n")[0] and "sigma*sqrt(d)" not in text  # --quiet: the lines only


def test_recertify_removes_its_merged_copy(world, capsys, monkeypatch, tmp_path):
    import tempfile

    import peft

    import auditor.audit.job

    model, base, cert_path, tmp = world
    pm = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.fill_(0.5)
    pm.save_pretrained(tmp / "adapter2")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen = {}

    def fake_certify(loaded, model, out_dir, sequential, **progress):
        seen["model"] = Path(model)
        assert Path(model).is_dir()
        return _run(make_certificate(model_dir=Path(model), p_lower=0.9), {})

    monkeypatch.setattr(auditor.audit.job, "certify", fake_certify)
    args = ["gate", str(cert_path), "--candidate", str(tmp / "adapter2"), "--out", str(tmp / "g2.json")]
    code, text = run([*args, "--recertify", "--recertify-out", str(tmp / "rerun2")], capsys)
    assert code == 0 and "RECERTIFIED PASS" in text
    assert seen["model"].is_relative_to(scratch) and not any(scratch.iterdir())  # the merged copy is gone
    assert "Loading weights" not in text and "Warning" not in text


def _junit_cases(path: Path) -> dict[tuple[str, str], str | None]:
    """(classname, name) -> failure message (None for a passing case) of a JUnit file."""
    import xml.etree.ElementTree as ET

    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "auditor gate"
    cases = {}
    for c in suite.iter("testcase"):
        failure = c.find("failure")
        cases[(c.get("classname") or "", c.get("name") or "")] = None if failure is None else failure.get("message")
    assert suite.get("failures") == str(sum(m is not None for m in cases.values()))
    return cases


def test_json_and_junit_for_several_candidates(world, capsys):
    model, base, cert_path, tmp = world
    near = candidate(model, tmp / "near", 1e-5)
    far = candidate(model, tmp / "far", 0.01)
    outside = candidate(model, tmp / "outside", 1e-6, param="model.norm.weight")
    broken = tmp / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    junit = tmp / "junit.xml"
    args = ["gate", str(cert_path), "--out", str(tmp / "reports"), "--json", "--junit", str(junit)]
    for c in (near, far, outside, broken):
        args += ["--candidate", str(c)]
    code = main(args)
    out = capsys.readouterr()
    doc = json.loads(out.out)  # stdout is the JSON document alone; the human lines went to stderr
    assert code == 2 and doc["exit_code"] == code and doc["verdict"] == "error"
    assert "NOT CERTIFIED" in out.err and doc["certificate"]["signed"] is True
    by_name = {Path(e["candidate"]).name: e for e in doc["candidates"]}
    assert {k: (e["verdict"], e["exit_code"]) for k, e in by_name.items()} == {
        "near": ("pass", 0),
        "far": ("not certified", 1),
        "outside": ("not certifiable", 1),
        "broken": ("error", 2),
    }
    assert by_name["near"]["delta_norm"] == pytest.approx(1e-5 * 32, rel=1e-3)
    assert Path(by_name["far"]["files"]["report"]).is_file() and by_name["far"]["recertification"] is None
    assert [t["certified"] for t in by_name["far"]["tasks"]] == [False] and by_name["outside"]["blockers"]
    assert doc["files"]["junit"] == str(junit)
    cases = _junit_cases(junit)
    task = f"{by_name['near']['tasks'][0]['name']}: bound >= {by_name['near']['tasks'][0]['target']:g}"
    failed = sorted(k for k, m in cases.items() if m is not None)
    assert failed == [
        ("auditor.gate.broken", "gate"),
        ("auditor.gate.far", task),
        ("auditor.gate.outside", "certifiable"),
    ]
    assert {k for k in cases if k[0] == "auditor.gate.near"} == {
        ("auditor.gate.near", "certifiable"),
        ("auditor.gate.near", task),
    }
    assert "certified smoothed score >=" in (cases[("auditor.gate.far", task)] or "")


def test_json_and_junit_of_a_recertified_pass(world, capsys, monkeypatch):
    import auditor.audit.job

    model, base, cert_path, tmp = world
    far = candidate(model, tmp / "far", 0.01)

    def fake_certify(loaded, model, out_dir, sequential, **progress):
        return _run(make_certificate(model_dir=Path(model), p_lower=0.9), {"certificate": out_dir / "certificate.json"})

    monkeypatch.setattr(auditor.audit.job, "certify", fake_certify)
    junit = tmp / "junit.xml"
    args = ["gate", str(cert_path), "--candidate", str(far), "--out", str(tmp / "g.json"), "--json", "--junit"]
    code = main([*args, str(junit), "--recertify", "--recertify-out", str(tmp / "rerun"), "--quiet"])
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert code == 0 and doc["exit_code"] == 0 and doc["verdict"] == "recertified pass"
    (entry,) = doc["candidates"]
    assert entry["gate_verdict"] == "not certified" and entry["recertification"]["verdict"] == "pass"
    cases = _junit_cases(junit)
    assert all(m is None for m in cases.values())  # the final verdict decides: no failure, exit 0
    assert ("auditor.gate.far", "recertify") in cases and len(cases) == 3
    # the same candidate whose recertification fails: the gate check and the recertification fail
    monkeypatch.setattr(
        auditor.audit.job,
        "certify",
        lambda loaded, model, out_dir, sequential, **kw: _run(
            make_certificate(model_dir=Path(model), p_lower=0.3).model_copy(update={"verdict": "fail"}), {}
        ),
    )
    code = main([*args, str(junit), "--recertify", "--recertify-out", str(tmp / "rerun2"), "--quiet"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["exit_code"] == 1 and doc["verdict"] == "recertified fail"
    failed = sorted(name for (_, name), m in _junit_cases(junit).items() if m is not None)
    assert len(failed) == 2 and "recertify" in failed
