"""`auditor sigma-grid`: the largest sigma certified, by fixed-sequence testing over an ascending grid."""

from __future__ import annotations

from pathlib import Path

import click

from auditor.cli import cli
from auditor.errors import EXIT_FAIL, EXIT_PASS, AuditorError


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
    import datetime as dt

    from auditor.checkpoint import load_model
    from auditor.cli.audit_cmds import _quiet_libraries
    from auditor.landscape_plot import save_sigma_curve
    from auditor.policy import load_policy
    from auditor.sigma_grid import check_grid, run_sigma_grid
    from auditor.tasks import build_tasks

    try:
        grid = check_grid([float(s) for s in sigmas.split(",") if s.strip()])
    except ValueError as exc:
        raise AuditorError(f"--sigmas: {exc}") from exc
    loaded = load_policy(policy)
    tasks = build_tasks(loaded)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _quiet_libraries()
    p = loaded.policy
    lm = load_model(model or p.model, p.dtype, p.device, base_dir=loaded.base_dir)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = out_dir or Path("reports") / f"sigma-grid-{stamp}-{lm.identity.name}"
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
