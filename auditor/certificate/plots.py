"""Figures of landscape slices: one per task, the three direction families told apart by colour,
line style and marker (readable in greyscale too). Drawn from the landscape JSON alone, so a
certificate can be re-rendered with a run's slices without the model.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

STYLE: dict[str, dict[str, Any]] = {
    "random": {"color": "#8a8a8a", "ls": "-", "marker": "o", "lw": 1.1, "ms": 2.5, "label": "random δ ~ N(0, I)"},
    "sft": {"color": "#1f4e9a", "ls": "-.", "marker": "s", "lw": 1.6, "ms": 3.5, "label": "fine-tune direction"},
    "worst": {"color": "#b23b3b", "ls": "--", "marker": "v", "lw": 1.6, "ms": 3.5, "label": "worst-case (PGD)"},
}


def _slices(data: dict[str, Any], task: str) -> dict[tuple[str, int], list[tuple[float, float]]]:
    n_random = sum(1 for d in data.get("directions", []) if d.get("family") == "random")
    out: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for p in data["points"]:
        if p["task"] != task or (p["family"] == "random" and p["direction"] >= max(n_random, 1)):
            continue  # strict-basin directions have one point each: not a slice
        out.setdefault((p["family"], p["direction"]), []).append((p["a"], p["score"]))
    for key in out:
        out[key] = sorted([*out[key], (0.0, data["clean"][task])])
    return out


def _figure(data: dict[str, Any], task: str) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    clean, tol = data["clean"][task], data["tolerance"]
    fig = Figure(figsize=(6.6, 3.1), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.axhspan(clean - tol, 1.02, color="#2e7d32", alpha=0.06, lw=0)
    ax.axhline(clean, color="#2e7d32", lw=1.0, ls=":", label=f"S(θ0) = {clean:.3f} (band: −{tol:g})")
    seen: set[str] = set()
    for (family, _k), pts in sorted(_slices(data, task).items()):
        style: dict[str, Any] = dict(STYLE[family])
        label = style.pop("label")
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, label=None if family in seen else label, **style)
        seen.add(family)
    for d in data.get("directions", []):
        if d.get("family") == "sft" and "scale_of_candidate" in d:
            ax.axvline(d["scale_of_candidate"], color=STYLE["sft"]["color"], lw=0.8, ls=":")
            ax.annotate("θ_ft", (d["scale_of_candidate"], 0.02), color=STYLE["sft"]["color"], fontsize=7)
    for s in data.get("strict", []):
        if s["task"] == task:
            ax.set_title(
                f"{task}: {s['unchanged']}/{s['directions']} random directions unchanged at a = {s['scale']:g}; "
                f"fraction ≥ {s['lower_bound']:.3f} at {1 - s['alpha']:.4g}",
                fontsize=8,
            )
    if not ax.get_title():
        ax.set_title(task, fontsize=9)
    unit = math.sqrt(data["dimension"])
    ax.set_xlabel(f"a  (point θ0 + a·δ, ‖δ‖ = √d ≈ {unit:.4g}: same norm as noise with σ = |a|)")
    ax.set_ylabel("score S")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, color="#e4e4e4", lw=0.6)
    ax.spines["right"].set_visible(False)
    ax.spines["top"].set_visible(False)
    fig.tight_layout(pad=0.4, rect=(0, 0.13, 1, 1))
    fig.legend(loc="lower center", ncol=4, fontsize=7, frameon=False, handlelength=2.6)
    return fig


def plot_task_svg(data: dict[str, Any], task: str) -> str:
    """The task's slices as SVG text (deterministic: no date, a fixed id salt)."""
    import matplotlib

    with matplotlib.rc_context(
        {"svg.hashsalt": f"landscape-{task}", "font.size": 8, "font.family": "DejaVu Sans", "svg.fonttype": "none"}
    ):
        fig = _figure(data, task)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()


def save_task_png(data: dict[str, Any], task: str, path: Path) -> Path:
    import matplotlib

    with matplotlib.rc_context({"font.size": 8, "font.family": "DejaVu Sans"}):
        _figure(data, task).savefig(path, format="png", dpi=110, metadata={"Software": None})
    return path


def _sigma_figure(edges: Any) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.6, 2.9), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for k, e in enumerate(edges):
        colour = f"C{k}"
        xs = [s.sigma for s in e.steps]
        ax.plot(xs, [s.p_lower for s in e.steps], color=colour, marker="o", label=f"{e.task} p_lower")
        bonf = [(s.sigma, s.p_lower_bonferroni) for s in e.steps if s.p_lower_bonferroni is not None]
        if bonf:
            ax.plot(*zip(*bonf, strict=True), color=colour, marker=".", ls="--", lw=0.8, alpha=0.7)
        ax.plot(xs, [s.threshold for s in e.steps], color=colour, ls=":", lw=1)
        if e.sigma_star is not None:
            ax.axvline(e.sigma_star, color=colour, lw=0.8, ls="-.")
    ax.set_xscale("log")
    sigmas = sorted({s.sigma for e in edges for s in e.steps})
    ax.set_xticks(sigmas, [f"{s:g}" for s in sigmas])  # the grid itself, not powers of ten
    ax.minorticks_off()
    ax.set_xlabel("σ   (dotted: each task's threshold; dash-dot: its σ*; dashed: Bonferroni p_lower)")
    ax.set_ylabel("p_lower")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, color="#e4e4e4", lw=0.6)
    ax.spines["right"].set_visible(False)
    ax.spines["top"].set_visible(False)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout(pad=0.4)
    return fig


def plot_sigma_svg(edges: Any) -> str:
    """p_lower against sigma per task (a grid's certified basin edge), thresholds and sigma* marked; SVG text."""
    import matplotlib

    with matplotlib.rc_context(
        {"svg.hashsalt": "sigma-grid", "font.size": 8, "font.family": "DejaVu Sans", "svg.fonttype": "none"}
    ):
        buf = io.StringIO()
        _sigma_figure(edges).savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()


def save_sigma_png(edges: Any, path: Path) -> Path:
    import matplotlib

    with matplotlib.rc_context({"font.size": 8, "font.family": "DejaVu Sans"}):
        _sigma_figure(edges).savefig(path, format="png", dpi=110, metadata={"Software": None})
    return path
