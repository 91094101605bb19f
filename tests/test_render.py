"""The HTML/PDF certificate: golden text, self-containment, markings, layout on A4."""

from __future__ import annotations

import base64
import html as htmllib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from factories import make_certificate
from test_signing import make_model_dir

from auditor.certificate.render import TEMPLATES_DIR, fmt_num, fmt_prob, plot_curve_svg, render_html, render_pdf
from auditor.certificate.schema import DOES_NOT_CLAIM, GUARANTEE


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("render") / "model")


@pytest.fixture(scope="module")
def cert(model_dir):
    return make_certificate(model_dir=model_dir)


@pytest.fixture(scope="module")
def unsigned_html(cert) -> str:
    return render_html(cert, signed=False)


@pytest.fixture(scope="module")
def signed_html(cert) -> str:
    return render_html(cert, signed=True)


@pytest.fixture(scope="module")
def multi_task():
    """Three tasks, three verdicts, sequential stopping, alpha split."""
    base = make_certificate(sigma=0.008, p_lower=0.62)
    t = base.tasks[0]
    fail = t.model_copy(
        update={
            "name": "refusal",
            "verdict": "fail",
            "p_lower": 0.31,
            "radius": 0.0,
            "reasons": ["p_lower 0.310 < 0.900"],
        }
    )
    undecided = t.model_copy(update={"name": "gsm8k", "verdict": "inconclusive", "reasons": ["undecided"]})
    sampling = base.sampling.model_copy(
        update={"sequential": True, "draws_used": 41, "draws_planned": 64, "alpha_per_task": 0.01 / 3}
    )
    return base.model_copy(
        update={
            "tasks": [t, fail, undecided],
            "verdict": "fail",
            "sampling": sampling,
            "reasons": ["refusal fails its requirement"],
        }
    )


def text_of(html: str) -> str:
    """Visible text, tags stripped and entities decoded, whitespace collapsed."""
    body = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_formatters():
    assert fmt_prob(0.8) == "0.8000" and fmt_prob(None) == "—"
    assert fmt_num(0.0033664) == "0.003366" and fmt_num(0) == "0" and fmt_num(1000) == "1,000"
    assert fmt_num(2.5e-7) == "2.5e-07"


def test_golden_text_unsigned(unsigned_html, cert):
    text = text_of(unsigned_html)
    assert "Verdict: PASS" in text and ">PASS<" in unsigned_html.replace(" ", "")
    assert "σ = 0.004" in text
    assert "α = 0.01" in text
    assert "0.8000" in text and "[0.8000, 0.9000]" in text  # p_lower and its interval
    assert "0.8400" in text and "0.8300" in text  # p-hat, clean score
    assert "0.003366" in text  # R(0.5) = 0.004 * Phi^-1(0.8)
    assert "0.842" in text  # radius / sigma
    assert "32 / 32" in text and "768" in text  # draws used/planned, evaluations
    assert "0.1265" in text and "size of a draw, not a radius" in text  # sigma * sqrt(1000)
    assert "UNSIGNED" in text and text.count("UNSIGNED") >= 2
    assert GUARANTEE in text
    for claim in DOES_NOT_CLAIM:
        assert claim in text
    assert "auditor verify" in text
    assert cert.model.files, "the fixture model has files"
    for f in cert.model.files:
        assert f.sha256 in text and f.path in text
    assert cert.model.root_digest in text
    assert cert.policy.sha256 in text
    assert "perturbation: {sigma: 0.004}" in text  # the policy text itself
    assert "p_lower 0.800 >= 0.600" in text  # task reasons in the verdict box


def test_signed_html_is_not_marked_unsigned(signed_html, unsigned_html):
    assert "UNSIGNED" not in signed_html
    assert "SIGNED." in text_of(signed_html) and "DSSE" in signed_html
    assert signed_html != unsigned_html


def test_self_contained(unsigned_html):
    # No external resources: stylesheets inline, plots as SVG data URIs, no scripts.
    assert "<link" not in unsigned_html and "<script" not in unsigned_html
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", unsigned_html)
    uris = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', unsigned_html)
    assert len(uris) == 1
    svg = base64.b64decode(uris[0]).decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "<style>" in unsigned_html and "@page" in unsigned_html and "size: A4" in unsigned_html


def test_rendering_is_deterministic(cert, unsigned_html):
    assert render_html(cert, signed=False) == unsigned_html


def test_plot_svg_has_axes_and_markers(cert):
    svg = plot_curve_svg(cert.tasks[0], cert.perturbation.sigma)
    assert "<svg" in svg and "<dc:date>" not in svg
    assert svg.count("<path") > 10


def test_multi_task_verdicts_bonferroni_sequential(multi_task):
    text = text_of(render_html(multi_task, signed=True))
    assert "Verdict: FAIL" in text
    for word in ("PASS", "FAIL", "INCONCLUSIVE"):
        assert word in text
    assert "41 / 64" in text and "sequential" in text
    assert "bonferroni" in text and "split across them" in text and "0.003333" in text
    assert text.count("Task ") >= 3


def test_html_escapes_certificate_text(model_dir):
    cert = make_certificate(model_dir=model_dir)
    evil = cert.policy.model_copy(update={"text": "note: <script>alert(1)</script> & more"})
    html = render_html(cert.model_copy(update={"policy": evil}), signed=False)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html


def test_templates_dir_is_top_level():
    assert TEMPLATES_DIR.name == "templates" and (TEMPLATES_DIR.parent / "auditor").is_dir()
    assert (TEMPLATES_DIR / "certificate.html.j2").is_file()


def test_pdf_is_a4_and_rasterises(unsigned_html, tmp_path):
    pdf = tmp_path / "c.pdf"
    render_pdf(unsigned_html, pdf)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    from pyhanko.pdf_utils.reader import PdfFileReader

    with open(pdf, "rb") as f:
        pages = PdfFileReader(f).root["/Pages"]
        assert 2 <= int(pages["/Count"]) <= 4
        box = [float(v) for v in pages["/Kids"][0]["/MediaBox"]]
    assert box == pytest.approx([0, 0, 595.28, 841.89], abs=0.1)  # A4 in points
    if shutil.which("pdftoppm") is None or shutil.which("pdftotext") is None:
        pytest.skip("poppler-utils (pdftoppm/pdftotext) not installed: `apt-get install poppler-utils`")
    subprocess.run(["pdftoppm", "-png", "-r", "30", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "page")], check=True)
    assert (tmp_path / "page-1.png").stat().st_size > 5000
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "UNSIGNED" in text and "PASS" in text and "0.003366" in text
