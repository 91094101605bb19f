"""Keys, the in-toto statement, the DSSE envelope, the PAdES PDF signature and `publish`."""

from __future__ import annotations

import json
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest
from factories import make_certificate

from auditor.attest.publish import publish
from auditor.attest.signing import (
    CERT_HTML,
    CERT_JSON,
    CERT_PDF,
    ENVELOPE,
    PAYLOAD_TYPE,
    PDF_CERT,
    PDF_KEY,
    PREDICATE_TYPE,
    PUBLIC_KEY,
    SIGNING_KEY,
    STATEMENT_TYPE,
    keygen,
    load_public_key,
    resolve_key,
)
from auditor.certificate.schema import canonical_json, read_certificate
from auditor.errors import AuditorError
from auditor.model.checkpoint import sha256_file


def safetensors_bytes(name: str, values: list[float]) -> bytes:
    """A small valid safetensors file (header + little-endian float32 data), built without torch."""
    data = struct.pack(f"<{len(values)}f", *values)
    header = json.dumps({name: {"dtype": "F32", "shape": [len(values)], "data_offsets": [0, len(data)]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def make_model_dir(path: Path) -> Path:
    """A two-shard 'checkpoint': two safetensors files and a config."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model-00001-of-00002.safetensors").write_bytes(safetensors_bytes("a.weight", [0.5 * i for i in range(64)]))
    (path / "model-00002-of-00002.safetensors").write_bytes(
        safetensors_bytes("b.weight", [-0.25 * i for i in range(48)])
    )
    (path / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}\n')
    return path


def make_signed_run(base: Path) -> dict[str, Path]:
    """Model dir, keys and a signed run under `base`."""
    model = make_model_dir(base / "model")
    keys = keygen(base / "keys")
    files = publish(make_certificate(model_dir=model), base / "run", keys["private_key"])
    return {"model": model, "run": base / "run", "pub": keys["public_key"], **keys, **files}


def pdfsig(path: Path) -> str:
    if shutil.which("pdfsig") is None:
        pytest.skip("pdfsig (poppler-utils) is not installed: `apt-get install poppler-utils`")
    proc = subprocess.run(["pdfsig", str(path)], capture_output=True, text=True, check=False)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> dict[str, Path]:
    return make_signed_run(tmp_path_factory.mktemp("signed"))


@pytest.fixture(scope="module")
def unsigned(signed, tmp_path_factory) -> dict[str, Path]:
    # Published unsigned over a copy of a signed run: the old envelope must not survive.
    run = tmp_path_factory.mktemp("unsigned") / "run"
    shutil.copytree(signed["run"], run)
    files = publish(make_certificate(model_dir=signed["model"]), run, None)
    return {"model": signed["model"], **files}


def _statement(envelope_path: Path) -> tuple[dict, dict]:
    import base64

    env = json.loads(envelope_path.read_text())
    return env, json.loads(base64.b64decode(env["payload"]))


def test_keygen_modes_and_certificate(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    paths = keygen(tmp_path / "k")
    assert stat.S_IMODE(paths["private_key"].stat().st_mode) == 0o600
    assert stat.S_IMODE(paths["pdf_private_key"].stat().st_mode) == 0o600
    assert paths["private_key"].name == SIGNING_KEY and paths["public_key"].name == PUBLIC_KEY
    assert b"PRIVATE KEY" not in paths["public_key"].read_bytes()
    cert = x509.load_pem_x509_certificate(paths["pdf_certificate"].read_bytes())
    pdf_key = load_pem_private_key(paths["pdf_private_key"].read_bytes(), None)
    assert isinstance(pdf_key, ec.EllipticCurvePrivateKey) and pdf_key.curve.name == "secp256r1"
    assert cert.public_key().public_numbers() == pdf_key.public_key().public_numbers()
    assert cert.issuer == cert.subject  # self-signed
    cert.verify_directly_issued_by(cert)
    # The PDF certificate names the Ed25519 key id, tying the two keys together.
    assert load_public_key(paths["public_key"]).keyid in cert.subject.rfc4514_string()


def test_keygen_refuses_to_overwrite(tmp_path):
    keygen(tmp_path)
    before = (tmp_path / SIGNING_KEY).read_bytes()
    with pytest.raises(AuditorError, match="refusing to overwrite"):
        keygen(tmp_path)
    assert (tmp_path / SIGNING_KEY).read_bytes() == before


def test_publish_signed_writes_all_files(signed):
    for kind in ("certificate", "html", "pdf", "envelope"):
        assert signed[kind].is_file(), kind
    assert {signed[k].name for k in ("certificate", "html", "pdf", "envelope")} == {
        CERT_JSON,
        CERT_HTML,
        CERT_PDF,
        ENVELOPE,
    }
    assert not list(signed["run"].glob("*.tmp")) and not list(signed["run"].glob("*.unsigned"))
    cert = read_certificate(signed["certificate"])
    assert cert.artifacts == {CERT_HTML: sha256_file(signed["html"]), CERT_PDF: sha256_file(signed["pdf"])}
    html = signed["html"].read_text()
    assert "SIGNED." in html and ">UNSIGNED<" not in html


def test_statement_subjects_and_predicate(signed):
    env, statement = _statement(signed["envelope"])
    assert env["payloadType"] == PAYLOAD_TYPE
    assert statement["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    # The predicate is exactly certificate.json, byte for byte once canonical.
    assert canonical_json(statement["predicate"]) + b"\n" == signed["certificate"].read_bytes()
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    on_disk = {p.name: sha256_file(p) for p in signed["model"].iterdir()}
    assert len(on_disk) == 3
    for name, digest in on_disk.items():
        assert subjects[name] == digest
    cert = read_certificate(signed["certificate"])
    assert subjects["policy:policy.yaml"] == cert.policy.sha256
    assert subjects[CERT_HTML] == sha256_file(signed["html"])
    assert subjects[CERT_PDF] == sha256_file(signed["pdf"])
    assert len(subjects) == len(on_disk) + 3


def test_envelope_verifies_with_securesystemslib(signed, tmp_path):
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    env = Envelope.from_dict(json.loads(signed["envelope"].read_text()))
    key = load_public_key(signed["pub"])
    assert key.keytype == "ed25519"
    assert key.keyid in env.verify([key], 1)
    other = load_public_key(keygen(tmp_path / "other")["public_key"])
    with pytest.raises(VerificationError):
        env.verify([other], 1)


def test_pdfsig_validates_signed_pdf(signed, tmp_path):
    out = pdfsig(signed["pdf"])
    assert "Signature is Valid" in out, out
    assert "ETSI.CAdES.detached" in out and "Total document signed" in out, out
    # A byte changed inside the signed range must break it (the check can fail).
    data = bytearray(signed["pdf"].read_bytes())
    data[len(data) // 3] ^= 0x01
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(bytes(data))
    assert "Signature is Valid" not in pdfsig(broken)


def test_publish_unsigned(unsigned):
    assert set(unsigned) == {"model", "certificate", "html", "pdf"}
    assert not (unsigned["certificate"].parent / ENVELOPE).exists()  # the stale one was removed
    cert = read_certificate(unsigned["certificate"])
    assert cert.artifacts[CERT_HTML] == sha256_file(unsigned["html"])
    html = unsigned["html"].read_text()
    assert html.count("UNSIGNED") >= 3
    out = pdfsig(unsigned["pdf"])
    assert "does not contain any signatures" in out, out


def test_publish_rejects_a_non_ed25519_key(signed, tmp_path):
    shutil.copy(signed["pdf_private_key"], tmp_path / SIGNING_KEY)  # an ECDSA key where Ed25519 belongs
    with pytest.raises(AuditorError, match="Ed25519"):
        publish(make_certificate(), tmp_path / "run", tmp_path / SIGNING_KEY)
    assert not (tmp_path / "run" / CERT_JSON).exists()


def test_resolve_key(signed, tmp_path, monkeypatch):
    keys_dir = signed["private_key"].parent
    monkeypatch.delenv("AUDITOR_SIGNING_KEY", raising=False)
    assert resolve_key(None) is None
    assert resolve_key(signed["private_key"]) == signed["private_key"]
    assert resolve_key(str(keys_dir)) == keys_dir / SIGNING_KEY
    monkeypatch.setenv("AUDITOR_SIGNING_KEY", str(signed["private_key"]))
    assert resolve_key(None) == signed["private_key"]
    assert resolve_key(keys_dir / SIGNING_KEY) == keys_dir / SIGNING_KEY  # the option wins over the env
    monkeypatch.setenv("AUDITOR_SIGNING_KEY", str(tmp_path / "nope.pem"))
    with pytest.raises(AuditorError, match="signing key not found"):
        resolve_key(None)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(signed["private_key"], lonely / SIGNING_KEY)
    with pytest.raises(AuditorError, match="PDF signing key missing"):
        resolve_key(lonely)
    assert {PDF_KEY, PDF_CERT} <= {p.name for p in keys_dir.iterdir()}
