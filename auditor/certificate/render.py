"""Render a certificate as a self-contained HTML page and, through WeasyPrint, as an A4 PDF.

The HTML carries everything inline (CSS, plots as SVG data URIs) so the one file can be archived,
hashed and signed on its own. Rendering is deterministic for a given certificate: the plots carry
no date and a fixed SVG id salt, so the same certificate gives the same HTML bytes.
"""

from __future__ import annotations

import base64
import io
import logging
import math
import warnings
from pathlib import Path
from typing import Any

from auditor.certificate.schema import Certificate, TaskResult
from auditor.resources import templates_dir

TEMPLATES_DIR = templates_dir()
TEMPLATE_NAME = "certificate.html.j2"

VERDICT_WORDS = {
    "pass": "Every task with a requirement met it at the stated confidence.",
    "fail": "At least one task did not meet the policy's requirement.",
    "inconclusive": "The draws could not decide at least one task either way; more draws may decide it.",
    "measured": "No task has a requirement: the numbers below were measured, nothing was tested: not a pass.",
}
VERIFY_COMMAND = "auditor verify certificate.intoto.jsonl --key signing-key.pub --model <model directory>"


def fmt_prob(x: float | None) -> str:
    """Probabilities and scores: four decimals, so 0.8 and 0.80004 are told apart."""
    return "—" if x is None else f"{x:.4f}"


def fmt_num(x: float | int | None, digits: int = 4) -> str:
    """Radii, norms and scales: significant digits, scientific only when tiny or huge."""
    if x is None:
        return "—"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}"


def fmt_size(n: int) -> str:
    """File sizes in binary units."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _scaler(factor: float) -> Any:
    def scale(x: Any) -> Any:
        return x * factor

    return scale


def plot_curve_svg(task: TaskResult, sigma: float, whitened: bool = False) -> str:
    """Certified smoothed score after a change of norm ||Delta||: both theorems, target and radius.

    `whitened` (relative noise): the x axis is ||Sigma^-1/2 Delta|| and `sigma` is 1.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    curve = task.curve
    xs = list(curve.delta_norm)
    x_max = max([*xs, task.radius * 1.15, sigma * 0.5])
    with matplotlib.rc_context(
        {
            "svg.hashsalt": f"auditor-{task.name}",
            "font.size": 8.5,
            "font.family": "DejaVu Sans",
            "svg.fonttype": "none",
        }
    ):
        fig = Figure(figsize=(6.6, 2.75), dpi=100)
        ax = fig.add_subplot(1, 1, 1)
        if task.radius > 0:
            ax.axvspan(0, task.radius, color="#2e7d32", alpha=0.07, lw=0)
        ax.plot(
            xs,
            curve.strong,
            color="#1f4e9a",
            lw=1.8,
            marker="o",
            ms=2.5,
            label="strong theorem  Φ(Φ⁻¹(p_lower) − ‖Σ^-½Δ‖)"
            if whitened
            else "strong theorem  Φ(Φ⁻¹(p_lower) − ‖Δ‖/σ)",
        )
        ax.plot(
            xs,
            [max(w, 0.0) for w in curve.weak],
            color="#7a7a7a",
            lw=1.3,
            ls="--",
            marker="o",
            ms=2,
            label="weak theorem  p_lower − ‖Σ^-½Δ‖/√(2π)" if whitened else "weak theorem  p_lower − ‖Δ‖/(√(2π)σ)",
        )
        ax.axhline(task.target, color="#b23b3b", lw=1.1, ls=":", label=f"policy target q = {task.target:g}")
        ax.axvline(task.radius, color="#2e7d32", lw=1.3, label=f"certified radius R(q) = {fmt_num(task.radius)}")
        ax.set_xlim(0, x_max)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("certified smoothed score")
        if whitened:
            ax.set_xlabel("‖Σ^-½Δ‖₂ = √(Σ_k ‖Δ_k‖² / σ_k²)  (relative noise, σ_k = σ·RMS(θ0_k))")
        else:
            ax.set_xlabel("‖Δ‖₂  (L2 norm of the change of the perturbed weights)")
            # The paper's own unit next to absolute L2: radii are O(sigma), so ||Delta||/sigma reads directly.
            top = ax.secondary_xaxis("top", functions=(_scaler(1.0 / sigma), _scaler(sigma)))
            top.set_xlabel("‖Δ‖ / σ", labelpad=3)
        ax.spines["right"].set_visible(False)
        ax.grid(True, color="#e4e4e4", lw=0.6)
        fig.tight_layout(pad=0.4, rect=(0, 0.15, 1, 1))
        # Below the axes, so the legend never hides a curve whatever the numbers.
        fig.legend(loc="lower center", ncol=2, fontsize=7.4, frameon=False, handlelength=2.6, columnspacing=2.2)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()


def _data_uri(svg: str) -> str:
    # A data URI keeps each plot's internal ids private, so several plots never clash in one page.
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _css_string(text: str) -> str:
    # Goes inside a CSS string in the page footer: drop what could close the string or the <style>.
    from markupsafe import Markup

    return Markup("".join(c for c in text if c not in '"\\<>\n\r'))


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["prob"] = fmt_prob
    env.filters["num"] = fmt_num
    env.filters["size"] = fmt_size
    return env


def render_html(
    cert: Certificate, signed: bool, status_note: str | None = None, landscape: dict[str, Any] | None = None
) -> str:
    """The certificate as one self-contained HTML document.

    `signed` says whether a DSSE envelope will accompany this rendering; an unsigned certificate is
    marked UNSIGNED on every page. `status_note` adds a line under the signature status.
    `landscape` (a landscape.json's content) adds its slice figures, one per task.
    """
    n_tasks = len(cert.tasks)
    p = cert.perturbation
    plots = {t.name: _data_uri(plot_curve_svg(t, p.radius_unit, p.scale == "relative")) for t in cert.tasks}
    context = {
        "cert": cert,
        "signed": signed,
        "status_note": status_note,
        "plots": plots,
        "landscape": _landscape_context(landscape),
        "sigma_plot": _sigma_plot(cert),
        "n_tasks": n_tasks,
        "verdict_words": VERDICT_WORDS[cert.verdict],
        "verify_command": VERIFY_COMMAND,
        "policy_name": cert.policy.path or "policy",
        "footer_text": _css_string(
            f"{cert.model.name} · run {cert.run_id} · {cert.verdict.upper()}" + ("" if signed else " · UNSIGNED")
        ),
    }
    return _environment().get_template(TEMPLATE_NAME).render(**context)


def _sigma_plot(cert: Certificate) -> str | None:
    if cert.sigma_search is None or cert.sigma_search.mode != "grid":
        return None
    from auditor.certificate.plots import plot_sigma_svg

    return _data_uri(plot_sigma_svg(cert.sigma_search.edges))


def _landscape_context(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    from auditor.certificate.plots import plot_task_svg

    return {
        "model": data.get("model", "?"),
        "tolerance": data["tolerance"],
        "plots": [(task, _data_uri(plot_task_svg(data, task))) for task in data["clean"]],
        "strict": data.get("strict", []),
    }


def _quiet_weasyprint() -> None:
    # WeasyPrint and fontTools log every unsupported CSS property and font subsetting step.
    for name in ("weasyprint", "weasyprint.progress", "fontTools", "fontTools.subset", "fontTools.ttLib"):
        logging.getLogger(name).setLevel(logging.ERROR)


def render_pdf(html: str, path: Path) -> None:
    """Lay the HTML out on A4 pages and write the PDF (atomically)."""
    _quiet_weasyprint()
    with warnings.catch_warnings():
        # Its import warns about an optional HarfBuzz build on every run; nothing a user can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        import weasyprint
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    weasyprint.HTML(string=html, base_url=str(TEMPLATES_DIR)).write_pdf(str(tmp))
    tmp.replace(path)


def write_html(html: str, path: Path) -> None:
    """Write the HTML as UTF-8 bytes exactly as rendered (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(html.encode("utf-8"))
    tmp.replace(path)
