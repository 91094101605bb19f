"""`auditor keygen`, `auditor verify` and `auditor render`."""

from __future__ import annotations

from pathlib import Path

import click

from auditor.cli.app import cli
from auditor.errors import EXIT_FAIL, EXIT_PASS, AuditorError


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("keys"),
    show_default=True,
    help="Folder for the key files (created if missing).",
)
def keygen(out_dir: Path) -> int:
    """Create signing keys: Ed25519 (envelope) and ECDSA P-256 with a self-signed X.509 certificate (PDF).

    Refuses to overwrite existing key files (exit 2).
    """
    from auditor.attest.signing import SIGNING_KEY_ENV, load_public_key
    from auditor.attest.signing import keygen as make_keys

    paths = make_keys(out_dir)
    keyid = load_public_key(paths["public_key"]).keyid
    click.echo(f"Ed25519 private key (0600, keep secret): {paths['private_key']}")
    click.echo(f"Ed25519 public key (give to verifiers):  {paths['public_key']}  keyid {keyid}")
    click.echo(f"PDF signing key (ECDSA P-256, 0600):      {paths['pdf_private_key']}")
    click.echo(f"PDF signing certificate (self-signed):    {paths['pdf_certificate']}")
    click.echo(f"Sign runs with `auditor certify --key {paths['private_key']}` or {SIGNING_KEY_ENV}.")
    return EXIT_PASS


@cli.command()
@click.argument("cert", type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    help="Model directory (or, for a gate report, the candidate) to re-hash against the signed digests.",
)
@click.option(
    "--key",
    type=click.Path(path_type=Path),
    envvar="AUDITOR_VERIFY_KEY",
    help="Ed25519 public key (PEM) of the signer (or env AUDITOR_VERIFY_KEY). Required.",
)
@click.option(
    "--policy-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder the policy's scorer and data paths are relative to (default: the recorded policy's folder).",
)
def verify(cert: Path, model_dir: Path | None, key: Path | None, policy_dir: Path | None) -> int:
    """Verify a signed certificate (a run folder, its envelope or certificate.json) or a signed gate report.

    Checks the DSSE signature, that certificate.json is the signed predicate, that the HTML/PDF,
    scorer and data files match their signed digests, that the draw log (when present) gives the
    certificate's numbers and, with --model, that every model file matches. For a gate report
    (gate-*.json or its .intoto.jsonl), --model re-hashes the candidate. Exit 0 valid, 1 invalid
    (one line saying why), 2 usage error.
    """
    from auditor.verify.certificates import verify as run_verify

    result = run_verify(cert, key, model_dir, policy_dir)
    if result.valid:
        click.echo(result.summary())
        return EXIT_PASS
    click.echo(result.summary(), err=True)
    return EXIT_FAIL


@cli.command()
@click.argument("cert", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (default: the certificate's folder, unless it holds a signed run).",
)
@click.option(
    "--landscape",
    "landscape_dir",
    type=click.Path(path_type=Path),
    help="Add the slice figures of an `auditor landscape` run (its folder or landscape.json).",
)
def render(cert: Path, out_dir: Path | None, landscape_dir: Path | None) -> int:
    """Re-render the HTML and PDF of a certificate JSON (CERT: the file or its run folder).

    The re-rendered files are marked UNSIGNED: a signature covers the files it was made over, not
    new renderings. Whether a signature envelope sits next to the certificate is reported.
    """
    from auditor.attest.signing import CERT_HTML, CERT_JSON, CERT_PDF, ENVELOPE
    from auditor.certificate.render import render_html, render_pdf, write_html
    from auditor.certificate.schema import read_certificate

    cert_path = cert / CERT_JSON if cert.is_dir() else cert
    if cert_path.name.endswith(".jsonl"):
        cert_path = cert_path.parent / CERT_JSON
    certificate = read_certificate(cert_path)
    landscape = None
    if landscape_dir is not None:
        from auditor.basin.landscape import read_result

        landscape = read_result(landscape_dir)
    src_dir = cert_path.parent
    envelope = (src_dir / ENVELOPE).exists()
    out = out_dir if out_dir is not None else src_dir
    if envelope and out.resolve() == src_dir.resolve():
        raise AuditorError(
            f"{src_dir} holds a signed run; re-rendering there would break its signature: pass --out DIR"
        )
    note = "Re-rendered from certificate.json with `auditor render`." + (
        " A signature envelope accompanies the original certificate; this copy is not covered by it. "
        "Check the original with `auditor verify`."
        if envelope
        else ""
    )
    html = render_html(certificate, signed=False, status_note=note, landscape=landscape)
    write_html(html, out / CERT_HTML)
    render_pdf(html, out / CERT_PDF)
    click.echo(f"html: {out / CERT_HTML}")
    click.echo(f"pdf: {out / CERT_PDF}")
    click.echo(
        f"signature envelope next to the certificate: {'yes' if envelope else 'no'}"
        + (" (re-rendered files are not covered by it)" if envelope else "")
    )
    return EXIT_PASS
