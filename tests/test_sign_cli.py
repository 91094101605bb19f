"""`auditor keygen`, `auditor verify`, `auditor render`: exit codes 0 / 1 / 2 and their messages."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
from test_signing import make_signed_run

from auditor.attest.signing import CERT_HTML, CERT_JSON, CERT_PDF, ENVELOPE, PDF_KEY, PUBLIC_KEY, SIGNING_KEY
from auditor.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    return make_signed_run(tmp_path_factory.mktemp("cli"))


@pytest.fixture(autouse=True)
def _no_key_env(monkeypatch):
    monkeypatch.delenv("AUDITOR_VERIFY_KEY", raising=False)
    monkeypatch.delenv("AUDITOR_SIGNING_KEY", raising=False)


def verify_args(run: dict[str, Path], *extra: str, model: bool = True) -> list[str]:
    args = ["verify", str(run["run"]), "--key", str(run["pub"])]
    return args + (["--model", str(run["model"])] if model else []) + list(extra)


def test_keygen(tmp_path, capsys):
    out = tmp_path / "keys"
    assert main(["keygen", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "keyid" in printed and str(out / SIGNING_KEY) in printed
    assert stat.S_IMODE((out / SIGNING_KEY).stat().st_mode) == 0o600
    assert stat.S_IMODE((out / PDF_KEY).stat().st_mode) == 0o600
    assert (out / PUBLIC_KEY).is_file()
    before = (out / SIGNING_KEY).read_bytes()
    assert main(["keygen", "--out", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / SIGNING_KEY).read_bytes() == before


def test_verify_valid(run, capsys):
    assert main(verify_args(run)) == 0
    out = capsys.readouterr().out
    assert out.startswith("VALID") and "verdict PASS" in out and "model: 3 file(s)" in out


def test_verify_key_from_env(run, monkeypatch, capsys):
    monkeypatch.setenv("AUDITOR_VERIFY_KEY", str(run["pub"]))
    assert main(["verify", str(run["envelope"])]) == 0
    assert "VALID" in capsys.readouterr().out


def test_verify_invalid_is_exit_1_with_one_line(run, capsys):
    html = run["run"] / CERT_HTML
    original = html.read_bytes()
    html.write_bytes(original.replace(b"PASS", b"FAIL", 1))
    try:
        rc = main(verify_args(run))
    finally:
        html.write_bytes(original)
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err == "INVALID: certificate.html: sha256 differs from the signed digest"


def test_verify_changed_model_is_exit_1(run, capsys):
    extra = run["model"] / "adapter.safetensors"
    extra.write_bytes(b"\0" * 8)
    try:
        assert main(verify_args(run)) == 1
    finally:
        extra.unlink()
    assert "not in the certificate: adapter.safetensors" in capsys.readouterr().err
    assert main(verify_args(run)) == 0


def test_verify_wrong_key_is_exit_1(run, tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    assert main(["verify", str(run["run"]), "--key", str(tmp_path / "k" / PUBLIC_KEY)]) == 1
    assert "signature does not verify" in capsys.readouterr().err


def test_verify_unsigned_is_exit_1(run, tmp_path, capsys):
    shutil.copy(run["certificate"], tmp_path / CERT_JSON)
    assert main(["verify", str(tmp_path), "--key", str(run["pub"])]) == 1
    assert "UNSIGNED" in capsys.readouterr().err


def test_verify_usage_errors_are_exit_2(run, tmp_path, capsys):
    assert main(["verify", str(run["run"])]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: a public key is required: pass --key PUB or set AUDITOR_VERIFY_KEY"
    )
    assert main(["verify", str(tmp_path / "missing"), "--key", str(run["pub"])]) == 2
    assert main(["verify", str(run["run"]), "--key", str(tmp_path / "missing.pub")]) == 2
    assert main(verify_args(run, "--model", str(tmp_path / "no-model"), model=False)) == 2
    (tmp_path / "bad.pub").write_text("-----BEGIN PUBLIC KEY-----\nxx\n")
    assert main(["verify", str(run["run"]), "--key", str(tmp_path / "bad.pub")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4 and all(e.startswith("error: ") for e in errors)
    assert main(["verify"]) == 2  # click usage error


def test_render_rerenders_unsigned(run, tmp_path, capsys):
    out = tmp_path / "again"
    assert main(["render", str(run["certificate"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "signature envelope next to the certificate: yes" in printed
    html = (out / CERT_HTML).read_text()
    assert "UNSIGNED" in html and "not covered by it" in html
    assert (out / CERT_PDF).read_bytes().startswith(b"%PDF-")
    assert not (out / ENVELOPE).exists()


def test_render_refuses_to_overwrite_a_signed_run(run, capsys):
    before = (run["run"] / CERT_HTML).read_bytes()
    assert main(["render", str(run["run"])]) == 2
    assert "would break its signature" in capsys.readouterr().err
    assert (run["run"] / CERT_HTML).read_bytes() == before


def test_render_missing_certificate_is_exit_2(tmp_path, capsys):
    assert main(["render", str(tmp_path / "nope.json")]) == 2
    assert "certificate not found" in capsys.readouterr().err
