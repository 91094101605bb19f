"""Keys, the in-toto attestation of a certificate, and the signed PDF.

A signed run is attested twice:
- an in-toto v1 Statement whose predicate is the certificate JSON and whose subjects are every
  model file, the policy and the rendered HTML/PDF (by SHA-256), in a DSSE envelope signed with
  Ed25519 (securesystemslib);
- a PAdES signature inside the PDF (pyHanko), so a PDF reader can check the document on its own.

The PDF signature uses a separate ECDSA P-256 key: poppler's `pdfsig` (NSS) rejects Ed25519 CMS
signatures as corrupted, while it validates ECDSA P-256 ones. `keygen` writes both keys and a
self-signed X.509 certificate for the PDF key that names the Ed25519 key id, tying the two together.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from auditor.certificate.schema import Certificate, canonical_json
from auditor.errors import AuditorError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://auditor.dev/certificate/v1"
GATE_PREDICATE_TYPE = "https://auditor.dev/gate-report/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"

CERT_JSON = "certificate.json"
CERT_HTML = "certificate.html"
CERT_PDF = "certificate.pdf"
ENVELOPE = "certificate.intoto.jsonl"

SIGNING_KEY = "signing-key.pem"  # Ed25519 private key: signs the DSSE envelope
PUBLIC_KEY = "signing-key.pub"  # its public key (PEM), for `auditor verify --key`
PDF_KEY = "pdf-signing-key.pem"  # ECDSA P-256 private key: signs the PDF (PAdES)
PDF_CERT = "pdf-signing-cert.pem"  # self-signed X.509 certificate of the PDF key

SIGNING_KEY_ENV = "AUDITOR_SIGNING_KEY"
CERT_VALIDITY_DAYS = 3 * 365


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def key_id(public_key: Any) -> str:
    """The securesystemslib key id of a public key (what DSSE signatures name)."""
    from securesystemslib.signer import SSlibKey

    return str(SSlibKey.from_crypto(public_key).keyid)


def keygen(out_dir: Path, common_name: str = "auditor certificate signer") -> dict[str, Path]:
    """Write an Ed25519 key pair and an ECDSA P-256 key with a self-signed X.509 certificate.

    Refuses (AuditorError) to overwrite any existing key file.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out_dir = Path(out_dir)
    paths = {
        "private_key": out_dir / SIGNING_KEY,
        "public_key": out_dir / PUBLIC_KEY,
        "pdf_private_key": out_dir / PDF_KEY,
        "pdf_certificate": out_dir / PDF_CERT,
    }
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing:
        raise AuditorError(f"refusing to overwrite existing key files: {', '.join(existing)}")
    out_dir.mkdir(parents=True, exist_ok=True)

    pem, pkcs8, none = (
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ed_key = ed25519.Ed25519PrivateKey.generate()
    pdf_key = ec.generate_private_key(ec.SECP256R1())
    ed_id = key_id(ed_key.public_key())

    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"ed25519 keyid {ed_id}"),
        ]
    )
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pdf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pdf_key.public_key()), critical=False)
        .sign(pdf_key, hashes.SHA256())
    )

    _write_private(paths["private_key"], ed_key.private_bytes(pem, pkcs8, none))
    paths["public_key"].write_bytes(
        ed_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    _write_private(paths["pdf_private_key"], pdf_key.private_bytes(pem, pkcs8, none))
    paths["pdf_certificate"].write_bytes(cert.public_bytes(pem))
    return paths


def resolve_key(option_value: Path | str | None) -> Path | None:
    """The signing key to use: the option, else env AUDITOR_SIGNING_KEY, else None (unsigned).

    A directory means the `signing-key.pem` that `auditor keygen` wrote inside it. A named key that
    does not exist is an error (exit 2), never a silent fall-back to an unsigned certificate.
    """
    value = option_value if option_value not in (None, "") else os.environ.get(SIGNING_KEY_ENV) or None
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / SIGNING_KEY
    if not path.is_file():
        raise AuditorError(f"{path}: signing key not found")
    for sibling in (PDF_KEY, PDF_CERT):
        if not (path.parent / sibling).is_file():
            raise AuditorError(f"{path.parent / sibling}: PDF signing key missing (run `auditor keygen`)")
    return path


def _load_private_key(path: Path) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        return load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AuditorError(f"{path}: not a readable unencrypted PEM private key ({exc})") from exc


def load_signer(key_path: Path) -> Any:
    """A securesystemslib CryptoSigner for the Ed25519 private key at `key_path`."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from securesystemslib.signer import CryptoSigner

    key = _load_private_key(key_path)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise AuditorError(f"{key_path}: expected an Ed25519 private key (from `auditor keygen`)")
    return CryptoSigner(key)


def load_public_key(path: Path) -> Any:
    """A securesystemslib SSlibKey from a PEM public key (or the Ed25519 private key next to it)."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise AuditorError(f"{path}: public key not readable ({exc.strerror or exc})") from exc
    try:
        public = load_pem_public_key(data)
    except (ValueError, TypeError):
        public = _load_private_key(path).public_key()
    try:
        return SSlibKey.from_crypto(public)
    except ValueError as exc:
        raise AuditorError(f"{path}: unsupported public key ({exc})") from exc


def _quiet_pyhanko() -> None:
    for name in ("pyhanko", "pyhanko_certvalidator", "pyhanko.sign"):
        logging.getLogger(name).setLevel(logging.ERROR)


def sign_pdf(src: Path, dst: Path, pdf_key: Path, pdf_cert: Path) -> None:
    """Add a PAdES (ETSI.CAdES.detached) signature to the PDF at `src`, written to `dst`."""
    _quiet_pyhanko()
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers
    from pyhanko.sign.fields import SigSeedSubFilter

    signer = signers.SimpleSigner.load(str(pdf_key), str(pdf_cert))
    if signer is None:
        raise AuditorError(f"{pdf_key}: cannot load the PDF signing key and certificate {pdf_cert}")
    meta = signers.PdfSignatureMetadata(
        field_name="AuditorSignature",
        subfilter=SigSeedSubFilter.PADES,
        md_algorithm="sha256",
        reason="auditor robustness certificate",
    )
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    with open(src, "rb") as inf, open(tmp, "wb") as out:
        signers.PdfSigner(meta, signer=signer).sign_pdf(IncrementalPdfFileWriter(inf), output=out)
    tmp.replace(dst)


def policy_subject_name(cert: Certificate) -> str:
    return f"policy:{cert.policy.path or 'policy'}"


def build_statement(cert: Certificate, artifacts: dict[str, str]) -> dict[str, Any]:
    """The in-toto v1 Statement: predicate = the certificate; subjects = model files, policy, scorer and
    data files (`scorer:PATH`, `data:PATH`), renders."""
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    subjects = [{"name": f.path, "digest": {"sha256": f.sha256}} for f in cert.model.files]
    subjects.append({"name": policy_subject_name(cert), "digest": {"sha256": cert.policy.sha256}})
    subjects += [{"name": f"{f.role}:{f.path}", "digest": {"sha256": f.sha256}} for f in cert.attested_files]
    subjects += [{"name": name, "digest": {"sha256": digest}} for name, digest in sorted(artifacts.items())]
    predicate = json.loads(cert.canonical_json())
    # The library checks the shape; the payload itself is built from plain JSON so numbers keep their
    # exact type (protobuf Structs would turn every int into a float).
    Statement(
        [ResourceDescriptor(name=s["name"], digest=s["digest"]).pb for s in subjects],
        PREDICATE_TYPE,
        predicate,
    ).validate()
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def sign_statement(statement: dict[str, Any], signer: Any) -> Any:
    """A DSSE envelope over the canonical JSON of the statement."""
    from securesystemslib.dsse import Envelope

    envelope = Envelope(payload=canonical_json(statement), payload_type=PAYLOAD_TYPE, signatures={})
    envelope.sign(signer)
    return envelope


def write_envelope(envelope: Any, path: Path) -> None:
    # JSON Lines: one envelope per line, the layout in-toto bundle tools read.
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(json.dumps(envelope.to_dict(), sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n")
    tmp.replace(path)
