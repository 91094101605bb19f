"""The fragility section, the measured badge and the replay note on the rendered certificate;
long strings wrap inside the A4 page instead of running off it."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from factories import make_certificate
from test_render import text_of

from auditor.certificate.render import render_html, render_pdf
from auditor.certificate.schema import FragileExample, Fragility

LONG = "x" * 300  # one unbroken word, wider than the page
HASH = "ab" * 32


def fragile_cert():
    base = make_certificate()
    t = base.tasks[0]
    frag = Fragility(
        flip_rate=[0.0, 0.25, None, 1.0],
        scored=[4, 4, 0, 4],
        examples_never_failing=1,
        histogram_edges=[i / 4 for i in range(5)],
        histogram_counts=[0, 1, 2, 5],
        fragile=[
            FragileExample(
                index=3,
                prompt=LONG,
                reference="Paris",
                clean_answer=HASH,
                clean_correct=True,
                scored=4,
                failures=4,
                fail_rate=1.0,
                flip_rate=1.0,
                perturbed_answer="Lyon " + LONG,
                perturbed_draw=7,
            )
        ],
    )
    measured = t.model_copy(
        update={"name": "extra", "verdict": "measured", "min_p_lower": None, "reasons": ["measured only"]}
    )
    return base.model_copy(
        update={
            "tasks": [t.model_copy(update={"fragility": frag}), measured],
            "replay": "Re-run recorded draws with auditor replay RUN_DIR --draws K.",
        }
    )


def test_fragility_section_and_measured_badge_render():
    html = render_html(fragile_cert(), signed=False)
    text = text_of(html)
    assert "Fragility of capitals" in text and "(draw 7)" in text and "4/4" in text
    assert "0.00 0.25 — 1.00" in text  # per-example flip rates in task order, never-scored as a dash
    assert 'class="pill pill-measured"' in html and "MEASURED" in text
    assert "Re-run recorded draws with auditor replay" in text
    assert "statistical slack p̂ − p_lower" in text and "loss under noise" in text


def test_measured_certificate_badge(tmp_path):
    cert = fragile_cert()
    cert = cert.model_copy(update={"verdict": "measured", "tasks": [cert.tasks[1]]})
    text = text_of(render_html(cert, signed=False))
    assert "Verdict: MEASURED" in text and "not a pass" in text


def test_long_strings_wrap_inside_the_page(tmp_path):
    if shutil.which("pdftotext") is None:
        pytest.skip("poppler-utils (pdftotext) not installed: `apt-get install poppler-utils`")
    pdf = tmp_path / "c.pdf"
    render_pdf(render_html(fragile_cert(), signed=True), pdf)  # no rotated UNSIGNED watermark
    bbox = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    pages = re.findall(r'<page width="([\d.]+)"', bbox)
    right = max(float(m) for m in re.findall(r'xMax="([\d.]+)"', bbox))
    assert pages and right <= float(pages[0]) - 20, f"text runs off the page (x = {right:.0f})"
    assert HASH[:16] in bbox.replace("\n", "") or "abababab" in bbox
