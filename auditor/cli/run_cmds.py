"""`auditor plan` (size an audit before running it) and `auditor replay` (re-run recorded draws)."""

from __future__ import annotations

from pathlib import Path

import click

from auditor.cli.app import cli
from auditor.errors import EXIT_FAIL, EXIT_PASS

# likely outcome per task, in the table's task order
DECISION_MARKS = {"pass": "pass", "undecided": "open", "fail/undecided": "FAIL?", "measured": "—"}
THREADS = click.option(
    "--threads",
    type=click.IntRange(min=1),
    envvar="AUDITOR_THREADS",
    help="CPU threads for torch (env AUDITOR_THREADS).",
)


def _threads(threads: int | None) -> None:
    from auditor.cli.audit_cmds import _quiet_libraries

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _quiet_libraries()


@cli.command()
@click.argument("policy", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), help="Wall-time budget for the audit.")
@click.option("--pilot-draws", type=click.IntRange(min=2), default=4, show_default=True, help="Pilot noise draws.")
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True, help="Candidates shown.")
@click.option(
    "--cpu-clock",
    is_flag=True,
    help="Time the pilot in CPU seconds (what one uncontended thread takes) instead of wall seconds.",
)
@click.option(
    "--pilot-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Reuse this pilot if the file exists, else run one and save it there (JSON).",
)
@THREADS
def plan(
    policy: Path | None,
    minutes: float | None,
    pilot_draws: int,
    top: int,
    cpu_clock: bool,
    pilot_file: Path | None,
    threads: int | None,
) -> int:
    """Run a short pilot and predict wall time and slack p̂ − p_lower for (draws, subset) pairs.

    The pilot uses its own seed: its draws are independent of the audit's and never enter a
    certificate. Predictions resample the pilot's per-example outcomes: an estimate, not a bound.
    """
    import json
    import time

    from rich.console import Console
    from rich.table import Table

    from auditor.audit import plan as planner
    from auditor.audit.run import check_design
    from auditor.audit.sample import clean_run
    from auditor.model.checkpoint import load_model
    from auditor.policy.schema import load_policy
    from auditor.tasks import build_tasks

    out, err = Console(), Console(stderr=True)
    loaded = load_policy(policy)
    check_design(loaded)
    searched = loaded.policy.perturbation.search_sigmas()
    if len(searched) > 1:  # a grid or auto: size one audit, at the first sigma it will run
        loaded = loaded.at_sigma(searched[0])
        err.print(f"planning one audit at sigma = {searched[0]:g}: a sigma search runs up to {len(searched)} of them")
    p = loaded.policy
    tasks = build_tasks(loaded)
    if pilot_file is not None and pilot_file.exists():
        pilot = planner.pilot_from_json(json.loads(pilot_file.read_text(encoding="utf-8")))
    else:
        _threads(threads)
        clock = time.process_time if cpu_clock else time.perf_counter
        t0 = clock()
        lm = load_model(p.model, p.dtype, p.device, base_dir=loaded.base_dir)
        clean_run(lm.model, lm.tokenizer, tasks, p.sampling.batch_size)
        setup = clock() - t0
        err.print(f"pilot: {pilot_draws} draws of {', '.join(f'{t.name} [{len(t.examples)}]' for t in tasks)}…")
        pilot = planner.run_pilot(lm.model, lm.tokenizer, tasks, loaded, pilot_draws, setup, cpu_clock=cpu_clock)
        if pilot_file is not None:
            pilot_file.write_text(json.dumps(planner.pilot_to_json(pilot)), encoding="utf-8")
    budget = minutes * 60 if minutes is not None else None
    cands = planner.candidates(pilot, loaded, budget)
    chosen = planner.best(cands)
    names = sorted(pilot.outcomes)
    shown = sorted((c for c in cands if c.fits), key=lambda c: (round(c.worst_slack, 3), c.seconds))[:top]
    table = Table(
        title=f"candidates{f' within {minutes:g} min' if minutes else ''} (predicted from the pilot)",
        title_justify="left",
    )
    for col in ("draws", "subset", "time", *[f"{n} p̂−p_lower" for n in names], "likely verdicts"):
        table.add_column(col, justify="right" if col != "likely verdicts" else "left")
    for c in shown:
        mark = " ←" if c is chosen else ""
        table.add_row(
            str(c.draws),
            "all" if c.subset is None else str(c.subset),
            f"{c.seconds / 60:.1f} min",
            *[f"{c.slack[n]:.3f}" for n in names],
            " ".join(DECISION_MARKS[c.decided[n]] for n in names) + mark,
        )
    unit = "CPU s" if cpu_clock else "s"
    out.print(
        f"pilot, in {unit}: setup (load + clean pass) {pilot.setup_seconds:.1f}, "
        f"noise {pilot.noise_seconds:.2f} per draw, "
        + ", ".join(f"{n} {pilot.eval_seconds[n]:.2f} per draw" for n in names)
    )
    out.print(table)
    if chosen is None:
        out.print("no candidate fits the budget: raise --minutes, or perturb fewer parameters")
        return EXIT_FAIL
    out.print(
        f"suggested: sampling: {{draws: {chosen.draws}"
        + (f", subset: {chosen.subset}" if chosen.subset else "")
        + f"}} (≈{chosen.seconds / 60:.1f} min, worst p̂ − p_lower ≈ {chosen.worst_slack:.3f})"
    )
    return EXIT_PASS


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--draws", "k", type=click.IntRange(min=1), default=3, show_default=True, help="Draws to replay.")
@click.option("--draw", "listed", type=click.IntRange(min=0), multiple=True, help="Replay this draw (repeatable).")
@click.option("--model", help="The audited model, if not where the policy says (built-in name or HF directory).")
@click.option(
    "--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path), help="Where data paths resolve."
)
@click.option("--no-clean", is_flag=True, help="Skip re-checking the clean pass.")
@THREADS
def replay(
    run_dir: Path,
    k: int,
    listed: tuple[int, ...],
    model: str | None,
    policy_path: Path | None,
    no_clean: bool,
    threads: int | None,
) -> int:
    """Re-run recorded draws of RUN_DIR and compare every per-example outcome with its log.

    Without --draw, K draws are picked from the certificate's seed. Exit 0 when identical, 1 naming
    the draws and examples that differ, 2 when the run cannot be replayed (another model, no log).
    """
    from auditor.audit.replay import replay as run_replay

    _threads(threads)
    report = run_replay(
        run_dir, draws=k, listed=list(listed) or None, model=model, policy_path=policy_path, check_clean=not no_clean
    )
    for line in report.lines():
        click.echo(line)
    return EXIT_PASS if report.identical else EXIT_FAIL
