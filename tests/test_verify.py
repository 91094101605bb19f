"""`auditor.verify.certificates`: a valid run passes, and every tampered byte anywhere is caught."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_signing import make_signed_run

from auditor.attest.signing import CERT_HTML, CERT_JSON, CERT_PDF, ENVELOPE, keygen, load_signer, sign_statement
from auditor.certificate.schema import canonical_json
from auditor.errors import AuditorError
from auditor.verify.certificates import Verification, verify


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    return make_signed_run(tmp_path_factory.mktemp("verify"))


def check(run: dict[str, Path], target: Path | None = None, model: bool = True) -> Verification:
    return verify(target or run["run"], run["pub"], run["model"] if model else None)


def positions(size: int, count: int = 48) -> list[int]:
    """Evenly spread byte offsets, always including the first and the last byte."""
    step = max(size // count, 1)
    return sorted({0, size - 1, *range(step // 2, size, step)})


@contextlib.contextmanager
def replaced(path: Path, data: bytes) -> Iterator[None]:
    """Put `data` in `path` for the duration, then restore the original bytes."""
    original = path.read_bytes()
    path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(original)


def flip(data: bytes, pos: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[pos] ^= mask
    return bytes(out)


def sweep(run: dict[str, Path], path: Path, masks: tuple[int, ...] = (0x01, 0x20)) -> int:
    """Flip bytes across `path` one at a time; every flip must make the run invalid."""
    original = path.read_bytes()
    caught = 0
    for pos in positions(len(original)):
        for mask in masks:
            with replaced(path, flip(original, pos, mask)):
                result = check(run)
            assert not result.valid, f"{path.name}: flip {mask:#x} at byte {pos} of {len(original)} not caught"
            assert result.reason and "\n" not in result.reason
            caught += 1
    assert check(run).valid  # restored
    return caught


def envelope_dict(run: dict[str, Path]) -> dict:
    return json.loads(run["envelope"].read_text())


def write_envelope_dict(d: dict) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def test_valid_run(run):
    result = check(run)
    assert result.valid, result.reason
    text = result.summary()
    assert text.startswith("VALID: certificate 20261129-000000-test (verdict PASS)")
    assert "model: 3 file(s)" in text and "certificate.pdf: matches" in text


def test_valid_from_envelope_or_certificate_path(run):
    assert check(run, target=run["envelope"]).valid
    assert check(run, target=run["certificate"]).valid
    no_model = check(run, model=False)
    assert no_model.valid and "not checked" in no_model.summary()


def test_tamper_envelope_file_bytes(run):
    assert sweep(run, run["envelope"]) > 90


def test_tamper_envelope_payload(run):
    # Well-formed envelopes whose payload changed: only the signature can catch these.
    env = envelope_dict(run)
    payload = base64.b64decode(env["payload"])
    for pos in positions(len(payload), 64):
        bad = dict(env, payload=base64.b64encode(flip(payload, pos)).decode())
        with replaced(run["envelope"], write_envelope_dict(bad)):
            result = check(run)
        assert not result.valid and "signature does not verify" in result.reason, (pos, result.reason)


def test_tamper_signature(run):
    env = envelope_dict(run)
    sig = base64.b64decode(env["signatures"][0]["sig"])
    assert len(sig) == 64  # Ed25519
    for pos in range(len(sig)):
        sigs = [dict(env["signatures"][0], sig=base64.b64encode(flip(sig, pos)).decode())]
        with replaced(run["envelope"], write_envelope_dict(dict(env, signatures=sigs))):
            result = check(run)
        assert not result.valid and "signature" in result.reason, (pos, result.reason)


def test_resigned_by_another_key_is_invalid(run, tmp_path):
    # An attacker edits the certificate and re-signs it consistently with their own key.
    env = envelope_dict(run)
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"]["verdict"] = "pass"
    statement["predicate"]["tasks"][0]["p_lower"] = 0.99
    forged = sign_statement(statement, load_signer(keygen(tmp_path / "mallory")["private_key"]))
    cert_bytes = canonical_json(statement["predicate"]) + b"\n"
    with (
        replaced(run["envelope"], write_envelope_dict(forged.to_dict())),
        replaced(run["certificate"], cert_bytes),
    ):
        result = check(run)
    assert not result.valid and "signature does not verify" in result.reason


def _resign(run: dict[str, Path], statement: dict) -> tuple[bytes, bytes]:
    """Envelope and certificate bytes for `statement`, signed with the run's own key."""
    envelope = sign_statement(statement, load_signer(run["private_key"]))
    return write_envelope_dict(envelope.to_dict()), canonical_json(statement["predicate"]) + b"\n"


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda st: st["subject"].pop(0), "do not match the certificate's model files"),
        (
            lambda st: st["subject"][0]["digest"].update(sha256="0" * 64),
            "do not match the certificate's model files",
        ),
        (lambda st: st["predicate"]["policy"].update(text="tasks: []\n"), "policy text in the certificate"),
        (lambda st: st["subject"][-2]["digest"].update(sha256="0" * 64), "differs from the signed subject"),
        (lambda st: st.update(predicateType="https://example.org/other"), "predicateType"),
        (lambda st: st.update(_type="https://in-toto.io/Statement/v0.1"), "not an in-toto Statement"),
    ],
)
def test_inconsistent_statement_signed_by_the_right_key(run, edit, reason):
    # Even a genuine signature over a self-contradictory statement is not a valid certificate.
    env = envelope_dict(run)
    statement = json.loads(base64.b64decode(env["payload"]))
    assert [s["name"] for s in statement["subject"]][-2:] == [CERT_HTML, CERT_PDF]
    edit(statement)
    envelope_bytes, cert_bytes = _resign(run, statement)
    with replaced(run["envelope"], envelope_bytes), replaced(run["certificate"], cert_bytes):
        result = check(run)
    assert not result.valid and reason in result.reason, result.reason


def test_tamper_weight_files(run):
    for shard in sorted(run["model"].glob("*.safetensors")):
        assert sweep(run, shard, masks=(0x01,)) > 40
    assert sweep(run, run["model"] / "config.json", masks=(0x01,)) > 30


def test_missing_or_extra_model_file_is_invalid(run):
    shard = run["model"] / "model-00002-of-00002.safetensors"
    moved = run["model"].parent / "moved.safetensors"
    shard.rename(moved)
    try:
        result = check(run)
    finally:
        moved.rename(shard)
    assert not result.valid and "model file missing: model-00002-of-00002.safetensors" in result.reason
    extra = run["model"] / "model-00003-of-00002.safetensors"
    extra.write_bytes(b"\0" * 16)
    try:
        result = check(run)
    finally:
        extra.unlink()
    assert not result.valid and "not in the certificate: model-00003-of-00002.safetensors" in result.reason
    assert check(run).valid


def test_tamper_policy_text_in_certificate(run):
    original = run["certificate"].read_bytes()
    cert = json.loads(original)
    text = cert["policy"]["text"]
    for pos in positions(len(text), 24):
        changed = text[:pos] + ("X" if text[pos] != "X" else "Y") + text[pos + 1 :]
        edited = dict(cert, policy=dict(cert["policy"], text=changed))
        with replaced(run["certificate"], canonical_json(edited) + b"\n"):
            result = check(run)
        assert not result.valid and "differs from the signed predicate" in result.reason, pos


def test_tamper_certificate_json_bytes(run):
    assert sweep(run, run["certificate"]) > 90


def test_tamper_html_and_pdf(run):
    for name in (CERT_HTML, CERT_PDF):
        path = run["run"] / name
        assert sweep(run, path, masks=(0x01,)) > 40
        with replaced(path, path.read_bytes() + b"\n"):
            assert "sha256 differs" in check(run).reason


def test_other_public_key_is_invalid(run, tmp_path):
    other = keygen(tmp_path / "other")["public_key"]
    result = verify(run["run"], other, run["model"])
    assert not result.valid and "signature does not verify" in result.reason


def test_unsigned_run_is_invalid(run, tmp_path):
    folder = tmp_path / "unsigned"
    folder.mkdir()
    shutil.copy(run["certificate"], folder / CERT_JSON)
    result = verify(folder, run["pub"])
    assert not result.valid and "UNSIGNED" in result.reason


def test_usage_errors(run, tmp_path):
    with pytest.raises(AuditorError, match="public key is required"):
        verify(run["run"], None)
    with pytest.raises(AuditorError, match="not found"):
        verify(tmp_path / "nowhere", run["pub"])
    with pytest.raises(AuditorError, match="public key not readable"):
        verify(run["run"], tmp_path / "missing.pub")
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key")
    with pytest.raises(AuditorError):
        verify(run["run"], garbage)
    with pytest.raises(AuditorError, match="model directory not found"):
        verify(run["run"], run["pub"], tmp_path / "no-model")
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run["envelope"], lone / ENVELOPE)
    with pytest.raises(AuditorError, match="certificate not found"):
        verify(lone, run["pub"])
