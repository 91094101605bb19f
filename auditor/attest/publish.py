"""Publish a certificate: write its JSON, HTML and PDF into a run folder and, with a key, sign them.

One straight pass, each step once and in order: load the keys (before any rendering work, so a bad
key fails fast), render and write the HTML, render the PDF (and sign it), hash both renders into the
certificate, write certificate.json, and sign the in-toto statement over all of it into the envelope.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.attest.signing import (
    CERT_HTML,
    CERT_JSON,
    CERT_PDF,
    ENVELOPE,
    PDF_CERT,
    PDF_KEY,
    build_statement,
    load_signer,
    sign_pdf,
    sign_statement,
    write_envelope,
)
from auditor.certificate.render import render_html, render_pdf, write_html
from auditor.certificate.schema import Certificate, write_certificate
from auditor.errors import AuditorError
from auditor.model.checkpoint import sha256_file


@dataclass(frozen=True)
class SigningKeys:
    """The Ed25519 signer of the envelope and, next to its key file, the PDF key and its certificate."""

    signer: Any
    pdf_key: Path
    pdf_cert: Path


def load_signing_keys(key_path: Path) -> SigningKeys:
    """Both keys `auditor keygen` wrote, or an error naming the one that is missing."""
    key_path = Path(key_path)
    signer = load_signer(key_path)
    keys = SigningKeys(signer, key_path.parent / PDF_KEY, key_path.parent / PDF_CERT)
    for p in (keys.pdf_key, keys.pdf_cert):
        if not p.is_file():
            raise AuditorError(f"{p}: PDF signing key missing next to {key_path.name} (run `auditor keygen`)")
    return keys


def _write_pdf(html: str, path: Path, keys: SigningKeys | None) -> None:
    if keys is None:
        render_pdf(html, path)
        return
    unsigned = path.with_name(path.name + ".unsigned")
    try:
        render_pdf(html, unsigned)
        sign_pdf(unsigned, path, keys.pdf_key, keys.pdf_cert)
    finally:
        unsigned.unlink(missing_ok=True)


def publish(cert: Certificate, out_dir: Path, key_path: Path | None) -> dict[str, Path]:
    """Write certificate.json, .html and .pdf into `out_dir`; signed when `key_path` is given.

    Signed: the PDF carries a PAdES signature, `cert.artifacts` records the sha256 of the HTML and
    the signed PDF, and `certificate.intoto.jsonl` holds the DSSE envelope. Unsigned: the HTML and
    PDF are marked UNSIGNED and no envelope is written.
    """
    keys = load_signing_keys(key_path) if key_path is not None else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"certificate": out_dir / CERT_JSON, "html": out_dir / CERT_HTML, "pdf": out_dir / CERT_PDF}
    (out_dir / ENVELOPE).unlink(missing_ok=True)  # an envelope from an earlier publish would not match these files

    html = render_html(cert, signed=keys is not None)
    write_html(html, files["html"])
    _write_pdf(html, files["pdf"], keys)
    artifacts = {CERT_HTML: sha256_file(files["html"]), CERT_PDF: sha256_file(files["pdf"])}
    cert = cert.model_copy(update={"artifacts": artifacts})
    write_certificate(cert, files["certificate"])
    if keys is not None:
        files["envelope"] = out_dir / ENVELOPE
        write_envelope(sign_statement(build_statement(cert, artifacts), keys.signer), files["envelope"])
    return files
