"""Markdown tables from a landscape.json: basin edges per task and family, the strict-basin test, cost.

python -m bench.landscape_report reports/landscape/landscape.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:g}"


def report(data: dict) -> str:
    lines = [
        f"model `{data['model']}`, d = {data['dimension']:,} perturbed parameters (√d = {data['unit_norm']:.4g}), "
        f"grid ±{data['grid']}, tolerance {data['tolerance']:g}",
        "",
        "| task | S(θ0) | family | dir | edge (both sides) | edge − / + | cliff − / + | score at −max / +max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    scores = {(p["family"], p["direction"], p["task"], p["a"]): p["score"] for p in data["points"]}
    amax = max(data["grid"])
    for e in data["edges"]:
        lo = scores.get((e["family"], e["direction"], e["task"], -amax))
        hi = scores.get((e["family"], e["direction"], e["task"], amax))
        lines.append(
            f"| {e['task']} | {data['clean'][e['task']]:.3f} | {e['family']} | {e['direction']} | {e['edge']:g} | "
            f"{e['edge_neg']:g} / {e['edge_pos']:g} | {_fmt(e['cliff_neg'])} / {_fmt(e['cliff_pos'])} | "
            f"{_fmt(lo)} / {_fmt(hi)} |"
        )
    if data.get("strict"):
        lines += [
            "",
            "| task | scale a | unchanged | CP lower bound on the fraction | level (per task) | > fraction shown? |",
            "|---|---|---|---|---|---|",
        ]
        for s in data["strict"]:
            lines.append(
                f"| {s['task']} | {s['scale']:g} | {s['unchanged']}/{s['directions']} | {s['lower_bound']:.3f} | "
                f"{1 - s['alpha']:.4g} | {'yes' if s['holds'] else 'no'} (> {s['fraction']:g}) |"
            )
        lines += ["", "Spread of the strict-basin scores (random directions at the strict scale):", ""]
        for s in data["strict"]:
            xs = [
                p["score"]
                for p in data["points"]
                if p["family"] == "random" and p["task"] == s["task"] and p["a"] == s["scale"]
            ]
            n = data.get("examples", {}).get(s["task"], 24)
            within1 = sum(abs(x - data["clean"][s["task"]]) <= 1.5 / n for x in xs)
            lines.append(
                f"- {s['task']}: S(θ0) = {data['clean'][s['task']]:.3f}; mean {statistics.mean(xs):.3f}, "
                f"min {min(xs):.3f}, max {max(xs):.3f}; within ±1 example of {n}: {within1}/{len(xs)}"
            )
    worst = [d for d in data.get("directions", []) if d.get("family") == "worst"]
    if worst:
        lines += ["", "Worst-case surrogate (cross-entropy of the reference answers) per PGD step:", ""]
        for d in worst:
            trace = ", ".join(f"{v:.2f}" for v in d["surrogate_trace"])
            lines.append(f"- {d['task']} at a = {d['scale']:g}: {trace}")
    sft = [d for d in data.get("directions", []) if d.get("family") == "sft"]
    for d in sft:
        lines += [
            "",
            f"Fine-tune: ‖θ_ft − θ0‖ = {d['distance']:.4g}, so θ_ft sits at a = {d['scale_of_candidate']:.3g}.",
        ]
    lines += [
        "",
        f"{len(data['points'])} points; {data['wall_seconds'] / 60:.1f} min wall, "
        f"{data['cpu_seconds'] / 60:.1f} CPU-min (1 torch thread, shared 2-core machine).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path)
    args = ap.parse_args(argv)
    print(report(json.loads(args.path.read_text(encoding="utf-8"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
