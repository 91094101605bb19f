"""`auditor certify` and `auditor validate`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from auditor.cli.app import cli
from auditor.errors import EXIT_FAIL, EXIT_PASS


def _quiet_libraries() -> None:
    # transformers' own progress bars and warnings would interleave with ours
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _log_to(console: Any) -> None:
    # placement decisions (device map, where the pristine copy lives, its cost) are logged at INFO
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("auditor")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=console, show_time=False, show_path=False))
        logger.setLevel(logging.INFO)


@cli.command()
@click.argument("policy", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--smoke", is_flag=True, help="Also load the model and score one example of every task (no noise).")
@click.option("--model", "model", help="With --smoke: this model instead of the policy's.")
def validate(policy: Path | None, smoke: bool, model: str | None) -> int:
    """Check a policy file (default: policies/default.yaml): fields, data files, scorers; --smoke runs one example."""
    from auditor.audit.run import check_design
    from auditor.policy.schema import load_policy
    from auditor.tasks import build_tasks

    loaded = load_policy(policy)
    check_design(loaded)  # too few draws to ever meet a requirement is a policy error
    tasks = build_tasks(loaded)  # reads every data file and imports every scorer (checking its signature)
    p = loaded.policy
    click.echo(
        f"{loaded.path}: valid (schema {p.schema_version}, {len(tasks)} task(s): "
        f"{', '.join(f'{t.name} [{len(t.examples)}]' for t in tasks)}; sigma={_sigma_words(p.perturbation)}, "
        f"design={p.sampling.design}, bound={p.sampling.bound}, sha256={loaded.sha256[:16]}…)"
    )
    if smoke:
        import time

        from auditor.model.checkpoint import load_model

        _quiet_libraries()
        t0 = time.perf_counter()
        lm = load_model(model or p.model, p.dtype, p.device, base_dir=loaded.base_dir)
        click.echo(f"smoke: loaded {lm.identity.name} in {time.perf_counter() - t0:.1f} s")
        for task in tasks:
            t0 = time.perf_counter()
            score = int(task.evaluate(lm.model, lm.tokenizer, [0], 1)[0])
            click.echo(f"smoke: {task.name}: example 0 scored {score} ({time.perf_counter() - t0:.1f} s)")
    return EXIT_PASS


def _sigma_words(pert: Any) -> str:
    auto = pert.auto
    if auto is None:
        return str(pert.sigma)
    return f"auto over {auto.auto} ({auto.candidates} candidates, {auto.pilot_draws} pilot draws each)"


def _verdict_table(cert: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"auditor certificate — verdict: {cert.verdict.upper()}", title_justify="left")
    for col in (
        "task",
        "clean S(θ0)",
        "p̂",
        "p_lower",
        "slack p̂−p_lower",
        "loss S(θ0)−p̂",
        f"R(q={cert.tasks[0].target})",
        "R/σ",
        "draws",
        "verdict",
    ):
        table.add_column(col, justify="right" if col not in ("task", "verdict") else "left")
    colour = {"pass": "green", "fail": "red", "inconclusive": "yellow", "measured": "dim"}
    for t in cert.tasks:
        table.add_row(
            t.name,
            f"{t.clean_score:.3f}",
            f"{t.p_hat:.3f}",
            f"{t.p_lower:.3f}",
            f"{t.statistical_slack:.3f}",
            f"{t.loss_under_noise:.3f}",
            f"{t.radius:.3g}",
            f"{t.radius_over_sigma:.2f}",
            str(t.draws),
            f"[{colour[t.verdict]}]{t.verdict}[/]",
        )
    return table


def _search_summary(search: Any) -> str:
    """σ* per task (grid) or the pilot's choice (auto), one line each."""
    if search.mode == "auto":
        pilot = ", ".join(f"σ={c.sigma:.4g}: R≈{c.min_radius:.3g}" for c in search.pilot)
        return f"σ chosen by the pilot ({search.pilot_draws} draws each, own seed): {search.chosen:.4g}  ({pilot})"
    lines = ["certified basin edge (fixed-sequence over the σ grid; ✗ = below the task's threshold):"]
    for e in search.edges:
        curve = ", ".join(f"{s.sigma:g}: {s.p_lower:.3f}{'' if s.certified else ' ✗'}" for s in e.steps)
        star = "none (the first σ failed)" if e.sigma_star is None else f"{e.sigma_star:g}"
        if e.stopped_at is None and e.sigma_star is not None:
            star += " (the whole grid)"
        radius = "" if e.radius_at_star is None else f", radius at σ* {e.radius_at_star:.3g}"
        lines.append(f"  {e.task}: σ* = {star}{radius}; p_lower by σ: {curve}")  # no [..]: rich markup
    return "\n".join(lines)


@cli.command()
@click.argument("policy", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", "model", help="Audit this model instead of the policy's (built-in name or HF directory).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
@click.option(
    "--reports",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Where run folders go.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue an interrupted run (its --out, or the newest run of this policy).",
)
@click.option("--sequential", is_flag=True, help="Stop as soon as every task is decided (betting bound only).")
@click.option(
    "--key",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="AUDITOR_SIGNING_KEY",
    help="Ed25519 private key to sign with (or env AUDITOR_SIGNING_KEY); unsigned otherwise.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    envvar="AUDITOR_THREADS",
    help="CPU threads for torch (env AUDITOR_THREADS). On a shared machine 1 avoids oversubscription.",
)
@click.option(
    "--device-map",
    type=click.Choice(["auto", "balanced", "balanced_low_0", "sequential"]),
    help="Spread a model too large for one GPU over several (accelerate big-model loading).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar or progress lines.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout (human output goes to stderr).")
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a JUnit XML report: one test case per task requirement.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress and no table; errors (and --json) only.")
@click.option(
    "--progress-every",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="When stderr is not a terminal (CI): a progress line every this many seconds (and every tenth of the draws).",
)
def certify(
    policy: Path | None,
    model: str | None,
    out_dir: Path | None,
    reports: Path,
    resume: bool,
    sequential: bool,
    key: Path | None,
    threads: int | None,
    device_map: str | None,
    no_progress: bool,
    as_json: bool,
    junit: Path | None,
    quiet: bool,
    progress_every: float,
) -> int:
    """Audit a model under a policy (default: the built-in SmolLM2 with policies/default.yaml).

    Under `torchrun --nproc_per_node N -m auditor certify ...` (or `accelerate launch`) the draws are
    shared by the N processes; rank 0 writes the log and the certificate, the others print nothing.
    """
    import contextlib
    import sys

    from rich.console import Console

    from auditor.attest.signing import resolve_key
    from auditor.audit.distributed import launched_rank
    from auditor.audit.job import certify as run_certify
    from auditor.cli.progress import LineProgress, rich_bar
    from auditor.policy.schema import load_policy

    console = Console(stderr=True, quiet=quiet)
    loaded = load_policy(policy)
    key = resolve_key(key)  # a bad key fails now, not after the audit
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _quiet_libraries()
    worker = launched_rank() != 0
    show_progress = not (no_progress or quiet or worker)  # only rank 0 reports
    if show_progress:
        _log_to(console)
    bar = rich_bar(console) if show_progress and sys.stderr.isatty() else None
    lines = LineProgress(sys.stderr, every_seconds=progress_every) if show_progress and bar is None else None
    state: dict[str, Any] = {}

    def on_start(total: int, names: list[str]) -> None:
        label = f"auditing {model or loaded.policy.model}: {len(names)} task(s)"
        if lines is not None:
            lines.start(total, label)
        elif bar is not None:
            console.print(f"{label}, up to {total} draws")
            state["id"] = bar.add_task("draws", total=total, scores="scoring clean model…")

    def on_draw(draw: int, means: dict[str, float]) -> None:
        if lines is not None:
            lines.draw(draw, means)
        elif bar is not None:
            bar.update(state["id"], advance=1, scores="  ".join(f"{k} {v:.2f}" for k, v in means.items()))

    with bar if bar is not None else contextlib.nullcontext():
        run = run_certify(
            loaded,
            model=model,
            out_dir=out_dir,
            reports=reports,
            resume=resume,
            sequential=sequential,
            key=key,
            on_start=on_start,
            on_draw=on_draw,
            device_map=device_map,
        )
    if run is None:  # a worker rank: its draws went to rank 0
        return EXIT_PASS
    cert = run.certificate
    rc = EXIT_PASS if cert.verdict == "pass" else EXIT_FAIL
    files = dict(run.files)
    if junit is not None:
        from auditor.certificate.report_formats import certificate_cases, write_junit

        files["junit"] = write_junit(junit, "auditor certify", certificate_cases(cert))
    # with --json stdout carries the JSON document alone; the human report moves to stderr
    out = Console(stderr=as_json, quiet=quiet)
    out.print(_verdict_table(cert))
    for t in cert.tasks:
        out.print(f"  {t.name}: " + "; ".join(t.reasons))
    p = cert.perturbation
    radii = (
        "radii are L2 distances of order σ"
        if p.scale == "absolute"
        else "relative noise σ_k = σ·RMS(θ0_k): radii are in the whitened norm ‖Σ^-½Δ‖ = √(Σ_k ‖Δ_k‖²/σ_k²)"
    )
    out.print(
        f"σ={p.sigma} on {p.dimension:,} parameters "
        f"(one draw has norm ≈ {p.typical_noise_norm:.3g}; {radii}). "
        f"The guarantee is on the smoothed score E_ε S(θ+ε), not the raw score."
    )
    other = max(run.seconds_total - run.seconds_noise - run.seconds_eval, 0.0)
    out.print(
        f"{run.draws_used} draws ({run.resumed_draws} resumed) in {run.seconds_total:.1f} s: "
        f"noise {run.seconds_noise:.1f} s, evaluation {run.seconds_eval:.1f} s, setup/clean/report {other:.1f} s"
    )
    if cert.sigma_search is not None:
        out.print(_search_summary(cert.sigma_search))
    for kind, path in files.items():
        out.print(f"{kind}: {path}")
    slack = ", ".join(f"{t.name} {t.statistical_slack:.3f}" for t in cert.tasks)
    out.print(f"statistical slack p̂ − p_lower: {slack}; certify took {run.seconds_total:.0f} s")
    if cert.verdict == "measured":
        out.print("verdict MEASURED: the policy sets no requirement, so nothing passed (exit 1)")
    if as_json:
        from auditor.certificate.report_formats import certify_summary, dumps

        seconds = {"total": run.seconds_total, "noise": run.seconds_noise, "evaluation": run.seconds_eval}
        click.echo(dumps(certify_summary(cert, files, rc, {"seconds": seconds, "resumed_draws": run.resumed_draws})))
    return rc
