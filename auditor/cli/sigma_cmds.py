"""`auditor sigma-grid`: the largest sigma certified, by fixed-sequence testing over an ascending grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from auditor.cli import cli
from auditor.errors import EXIT_FAIL, EXIT_PASS, AuditorError


def _load(policy: Path | None, model: str | None, threads: int | None, kind: str, out_dir: Path | None) -> Any:
    """(loaded policy, tasks, loaded model, output folder): the set-up both commands share."""
    import datetime as dt

    from auditor.checkpoint import load_model
    from auditor.cli.audit_cmds import _quiet_libraries
    from auditor.policy import load_policy
    from auditor.tasks import build_tasks

    loaded = load_policy(policy)
    tasks = build_tasks(loaded)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _quiet_libraries()
    p = loaded.policy
    lm = load_model(model or p.model, p.dtype, p.device, base_dir=loaded.base_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return loaded, tasks, lm, out_dir or Path("reports") / f"{kind}-{stamp}-{lm.identity.name}"


@cli.command("sigma-grid")
@click.argument("policy", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sigmas", required=True, help="Ascending comma-separated grid, e.g. 0.002,0.004,0.008,0.016.")
@click.option("--model", "model", help="Audit this model instead of the policy's.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--threads", type=click.IntRange(min=1), envvar="AUDITOR_THREADS", help="CPU threads for torch.")
def sigma_grid(policy: Path | None, sigmas: str, model: str | None, out_dir: Path | None, threads: int | None) -> int:
    """Certify each sigma in ascending order with fresh draws; each task stops at its first failure.

    Fixed-sequence testing keeps each task's family-wise error at its alpha without a split: the
    claim is "p_A(sigma) >= the task's threshold for every sigma up to sigma*". Exit 0 when every
    task certifies at least the first sigma, 1 otherwise.
    """
    from auditor.landscape_plot import save_sigma_curve
    from auditor.sigma_grid import check_grid, run_sigma_grid

    try:
        grid = check_grid([float(s) for s in sigmas.split(",") if s.strip()])
    except ValueError as exc:
        raise AuditorError(f"--sigmas: {exc}") from exc
    loaded, tasks, lm, out = _load(policy, model, threads, "sigma-grid", out_dir)
    try:
        edges = run_sigma_grid(
            lm.model,
            lm.tokenizer,
            tasks,
            loaded,
            lm.identity,
            grid,
            out,
            on_sigma=lambda s: click.echo(f"auditing sigma = {s:g}", err=True),
        )
    except ValueError as exc:
        raise AuditorError(f"{loaded.path}: {exc}") from exc
    save_sigma_curve(edges, out / "sigma-grid.png")
    for e in edges:
        star = "none (the first sigma failed)" if e.sigma_star is None else f"{e.sigma_star:g}"
        curve = ", ".join(f"{s.sigma:g}: {s.p_lower:.3f}{'' if s.certified else ' (fail)'}" for s in e.steps)
        radius = "" if e.radius_at_star is None else f"; radius at sigma* from the threshold {e.radius_at_star:.3g}"
        click.echo(f"{e.task}: sigma* = {star}{radius}  [p_lower by sigma: {curve}]")
    click.echo(f"results: {out / 'sigma_grid.json'}")
    return EXIT_PASS if all(e.sigma_star is not None for e in edges) else EXIT_FAIL


@cli.command("sigma-auto")
@click.argument("policy", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--range", "span", required=True, help="lo,hi: the sigma range to choose from, e.g. 0.002,0.016.")
@click.option("--pilot-draws", type=click.IntRange(min=1), default=8, show_default=True, help="n0 per candidate.")
@click.option(
    "--candidates", type=click.IntRange(min=2), default=5, show_default=True, help="Sigmas tried (geometric)."
)
@click.option("--model", "model", help="Audit this model instead of the policy's.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--threads", type=click.IntRange(min=1), envvar="AUDITOR_THREADS", help="CPU threads for torch.")
def sigma_auto(
    policy: Path | None,
    span: str,
    pilot_draws: int,
    candidates: int,
    model: str | None,
    out_dir: Path | None,
    threads: int | None,
) -> int:
    """Choose sigma from pilot draws, then certify it with fresh draws (Cohen et al.'s n0 / n split).

    The pilot (own seed, --pilot-draws per candidate) picks the sigma with the largest certified radius
    at the policy's gate target; the policy's own draws then certify that sigma. Exit 0 pass, 1 fail.
    """
    from auditor.sigma_grid import candidate_sigmas, run_sigma_auto

    try:
        lo, hi = (float(v) for v in span.split(","))
        candidate_sigmas(lo, hi, candidates)
    except ValueError as exc:
        raise AuditorError(f"--range: expected lo,hi with 0 < lo < hi ({exc})") from exc
    loaded, tasks, lm, out = _load(policy, model, threads, "sigma-auto", out_dir)
    doc = run_sigma_auto(lm.model, lm.tokenizer, tasks, loaded, lm.identity, lo, hi, pilot_draws, out, candidates)
    pilot = ", ".join(f"{s}: R={r:.3g}" for s, r in doc["pilot_min_radius"].items())
    click.echo(f"pilot ({pilot_draws} draws each): {pilot}")
    click.echo(f"chosen sigma = {doc['chosen_sigma']:.4g}; certified with fresh draws: {doc['verdict']}")
    for name, r in doc["radius"].items():
        click.echo(f"  {name}: p_lower {doc['p_lower'][name]:.3f}, radius {r:.3g}")
    click.echo(f"results: {out / 'sigma_auto.json'}")
    return EXIT_PASS if doc["verdict"] == "pass" else EXIT_FAIL
