"""`auditor landscape`: slices of every task's score along random, worst-case and fine-tune directions."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from auditor.cli.app import cli
from auditor.errors import EXIT_PASS, AuditorError


def _families(value: str) -> list[str]:
    from auditor.basin.landscape import FAMILIES

    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in FAMILIES]
    if bad or not names:
        raise AuditorError(
            f"--directions: unknown family {bad[0] if bad else value!r} (choose from {', '.join(FAMILIES)})"
        )
    return names


def _summary(result: Any) -> Any:
    from rich.table import Table

    table = Table(
        title=f"landscape of {result.model}: basin edges (tolerance {result.tolerance:g})", title_justify="left"
    )
    for col in ("task", "S(θ0)", "family", "dir", "edge −", "edge +", "cliff −", "cliff +"):
        table.add_column(col, justify="left" if col in ("task", "family") else "right")
    for e in result.edges:
        table.add_row(
            e.task,
            f"{result.clean[e.task]:.3f}",
            e.family,
            str(e.direction),
            f"{e.edge_neg:g}",
            f"{e.edge_pos:g}",
            "—" if e.cliff_neg is None else f"{e.cliff_neg:g}",
            "—" if e.cliff_pos is None else f"{e.cliff_pos:g}",
        )
    return table


@cli.command()
@click.argument("policy", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", "model", help="Slice this model instead of the policy's (built-in name or HF directory).")
@click.option(
    "--candidate",
    type=click.Path(file_okay=False, path_type=Path),
    help="Fine-tuned checkpoint or LoRA adapter folder: its direction theta_ft - theta0 is the 'sft' slice.",
)
@click.option(
    "--directions",
    default=None,
    help="Comma-separated families: random, worst, sft  [default: random,worst (+sft with --candidate)]",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    envvar="AUDITOR_THREADS",
    help="CPU threads for torch (env AUDITOR_THREADS).",
)
@click.option("--no-progress", is_flag=True, help="Print nothing per slice point.")
def landscape(
    policy: Path | None,
    model: str | None,
    candidate: Path | None,
    directions: str | None,
    out_dir: Path | None,
    threads: int | None,
    no_progress: bool,
) -> int:
    """1-D slices S(θ0 + a·δ) of every task on the policy's `landscape` grid (both signs).

    Writes landscape.json (every point, basin edges, the strict-basin test) and one PNG + SVG figure
    per task. `auditor render CERT --landscape DIR` puts the figures into a certificate.
    """
    from rich.console import Console

    from auditor.basin.landscape import run_landscape, write_result
    from auditor.cli.audit_cmds import _quiet_libraries
    from auditor.policy.schema import load_policy
    from auditor.tasks import build_tasks

    loaded = load_policy(policy)
    families = _families(directions) if directions else ["random", "worst"] + (["sft"] if candidate else [])
    if "sft" in families and candidate is None:
        raise AuditorError("--directions sft needs --candidate (a fine-tuned checkpoint or LoRA adapter folder)")
    if candidate is not None and not candidate.is_dir():
        raise AuditorError(f"{candidate}: candidate directory not found")
    tasks = build_tasks(loaded)  # bad task specs fail before the model load
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _quiet_libraries()
    from auditor.model.checkpoint import load_model

    lm = load_model(model or loaded.policy.model, loaded.policy.dtype, loaded.policy.device, base_dir=loaded.base_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = out_dir or Path("reports") / f"landscape-{stamp}-{lm.identity.name}"
    console = Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    # every point is appended and flushed as it comes: an interrupted run keeps what it measured
    log = (out / "points.jsonl").open("w", encoding="utf-8")

    def on_point(p: Any) -> None:
        log.write(json.dumps(asdict(p), sort_keys=True) + "\n")
        log.flush()
        if not no_progress:
            console.print(f"  {p.family:6s} #{p.direction:<2d} a={p.a:+.4g}  {p.task}: {p.score:.3f}", highlight=False)

    try:
        result = run_landscape(
            lm.model,
            lm.tokenizer,
            tasks,
            loaded.policy,
            families=families,
            candidate=candidate,
            model_name=lm.identity.name,
            on_point=on_point,
        )
    finally:
        log.close()
    files = write_result(result, out)
    stdout = Console()
    stdout.print(_summary(result))
    for s in result.strict:
        stdout.print(
            f"strict basin, {s.task}: {s.unchanged}/{s.directions} random directions unchanged at a={s.scale:g}; "
            f"fraction >= {s.lower_bound:.3f} with confidence {1 - s.alpha:.4g} (Clopper-Pearson) -> "
            f"{'shows' if s.holds else 'does not show'} > {s.fraction:g}"
        )
    for note in result.notes:
        stdout.print(f"note: {note}")
    stdout.print(f"{len(result.points)} points in {result.wall_seconds:.0f} s wall, {result.cpu_seconds:.0f} s CPU")
    stdout.print(f"results: {files['json']}")
    return EXIT_PASS
