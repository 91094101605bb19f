"""`auditor gate` (fine-tuned checkpoints or LoRA adapters vs a base certificate) and `auditor tokens`."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import click

from auditor.cli.app import cli
from auditor.cli.gate_output import (
    VERDICT_EXIT,
    candidate_entry,
    candidate_line,
    error_entry,
    gate_cases,
    gate_summary,
    print_summary,
    signer_for,
    write_report,
)
from auditor.errors import EXIT_FAIL, EXIT_PASS, AuditorError
from auditor.model.checkpoint import model_source_dir


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def _looks_like_a_model(path: Path) -> bool:
    return (path / "config.json").exists() or (path / "adapter_config.json").exists() or any(path.glob("*.safetensors"))


def expand_candidates(paths: tuple[Path, ...]) -> list[Path]:
    """Each --candidate, a folder of candidates standing for its sub-folders; each candidate once."""
    out: list[Path] = []
    for p in paths:
        subs = (
            []
            if not p.is_dir() or _looks_like_a_model(p)
            else sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
        )
        for c in subs or [p]:
            if c not in out:
                out.append(c)
    if not out:
        raise click.UsageError("give at least one --candidate")
    return out


def _quiet_libraries() -> None:
    import os
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", module="(transformers|peft|torch)")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _recertify(
    cert: Any, cert_path: Path, result: Any, base: Path | None, run_dir: Path, show: bool, console: Any
) -> dict[str, Any]:
    """Audit the candidate itself under the certificate's policy (sequential: a clear case stops early).

    An adapter is merged into a temporary full copy, removed afterwards. Progress and the verdict
    table are shown as `certify` shows them (unless quiet).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from auditor.audit import job
    from auditor.cli.audit_cmds import _verdict_table
    from auditor.policy.schema import parse_policy

    policy_path = Path(cert.policy.path) if cert.policy.path else None
    loaded = parse_policy(
        cert.policy.text,
        origin=f"{cert_path}:policy",
        path=policy_path if policy_path and policy_path.exists() else None,
    ).at_sigma(cert.perturbation.sigma)  # a sigma search recertifies at the certificate's own sigma
    _quiet_libraries()
    progress = Progress(
        TextColumn("[bold]recertify draws"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[scores]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
    )
    bar: dict[str, Any] = {}

    def on_start(total: int, names: list[str]) -> None:
        bar["id"] = progress.add_task("draws", total=total, scores="scoring clean model…")

    def on_draw(draw: int, means: dict[str, float]) -> None:
        progress.update(bar["id"], advance=1, scores="  ".join(f"{k} {v:.2f}" for k, v in means.items()))

    with tempfile.TemporaryDirectory(prefix="auditor-merged-") as tmp:
        model_dir = result.candidate
        if result.kind == "lora":
            from auditor.gate.lora import merge_adapter

            if base is None:
                raise AuditorError("--recertify of an adapter needs the base model (--base)")
            model_dir = merge_adapter(base, result.candidate, Path(tmp) / "merged")
        if show:
            console.print(f"recertifying {result.candidate} under the certificate's policy (sequential) …")
        with progress:
            run = job.certify(
                loaded, model=str(model_dir), out_dir=run_dir, sequential=True, on_start=on_start, on_draw=on_draw
            )
        assert run is not None, "recertification runs in a single process (not under torchrun)"
    new_cert, files = run.certificate, run.files
    if show:
        console.print(_verdict_table(new_cert))
    return {
        "verdict": new_cert.verdict,
        "run_id": new_cert.run_id,
        "reasons": list(new_cert.reasons),
        "files": {k: str(v) for k, v in files.items()},
        "tasks": [
            {"name": t.name, "p_lower": t.p_lower, "radius": t.radius, "verdict": t.verdict} for t in new_cert.tasks
        ],
    }


@cli.command()
@click.argument("certificate", type=click.Path(path_type=Path))
@click.option(
    "--candidate",
    "candidates",
    required=True,
    multiple=True,
    type=click.Path(path_type=Path),
    help="Fine-tuned checkpoint or PEFT LoRA adapter folder; repeatable; a folder of candidates means each one.",
)
@click.option(
    "--base",
    type=click.Path(file_okay=False, path_type=Path),
    help="The certified base model directory (default: the certificate's model.source).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Report path (default reports/gate-<timestamp>.json); a folder of reports for several candidates.",
)
@click.option(
    "--key",
    type=click.Path(path_type=Path),
    envvar="AUDITOR_SIGNING_KEY",
    help="Ed25519 key (or keygen directory) to sign the report; unsigned otherwise.",
)
@click.option(
    "--trusted-key",
    type=click.Path(path_type=Path),
    envvar="AUDITOR_TRUSTED_KEY",
    help="Ed25519 public key (PEM) the certificate's signature must verify against (env AUDITOR_TRUSTED_KEY).",
)
@click.option(
    "--allow-unsigned",
    is_flag=True,
    help="Gate against a certificate that is not signed (or no trusted key); the report says so.",
)
@click.option("--allow-failed-base", is_flag=True, help="Gate against a base whose own verdict is not pass.")
@click.option(
    "--recertify", is_flag=True, help="Certify each candidate the gate cannot pass under the certificate's policy."
)
@click.option(
    "--recertify-out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder of the recertification (default reports/recertify-<timestamp>[/<candidate>]).",
)
@click.option("--quiet", is_flag=True, help="Only one line per candidate (and errors).")
@click.option("--no-progress", is_flag=True, help="No progress bar during --recertify.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout (human output goes to stderr).")
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a JUnit XML report: per candidate one test case per gate check (and the recertification).",
)
def gate(
    certificate: Path,
    candidates: tuple[Path, ...],
    base: Path | None,
    out: Path | None,
    key: Path | None,
    trusted_key: Path | None,
    allow_unsigned: bool,
    allow_failed_base: bool,
    recertify: bool,
    recertify_out: Path | None,
    quiet: bool,
    no_progress: bool,
    as_json: bool,
    junit: Path | None,
) -> int:
    """Pass/fail fine-tunes against a base certificate from ||theta_ft - theta0|| alone (no evaluation).

    Pass iff every task's certified smoothed score Phi(Phi^-1(p_lower) - ||Delta||/sigma) reaches its
    target q. The certificate is trusted only when its signature verifies against --trusted-key, and
    every derived number in it is recomputed. Each report's verdict is one of pass, not certified, not
    certifiable, recertified pass, recertified fail (error: exit 2). Exit code: the worst candidate's
    (0 pass, 1 not certified / not certifiable / recertified fail / certificate refused, 2 error).
    """
    from rich.console import Console

    from auditor.gate.check import certified_base_dir, gate_folder, trusted_base

    console = Console(stderr=as_json)  # with --json stdout carries the JSON document alone
    signer = signer_for(key)  # a bad key fails before any hashing
    # before any candidate is read
    trusted = trusted_base(certificate, trusted_key, allow_unsigned=allow_unsigned, allow_failed_base=allow_failed_base)
    cert, certificate = trusted.cert, trusted.path
    base = certified_base_dir(cert, base)
    todo = expand_candidates(candidates)
    several = len(todo) > 1
    stamp = _stamp()
    out_root = out or (Path("reports") / (f"gate-{stamp}" if several else f"gate-{stamp}.json"))
    worst = EXIT_PASS
    lines = []
    entries: list[dict[str, Any]] = []
    for i, cand in enumerate(todo):
        report_path = out_root / f"{i:02d}-{cand.name}.json" if several else out_root
        try:
            result = gate_folder(cert, cand, base)
        except AuditorError as exc:
            if not several:
                raise
            worst = max(worst, exc.exit_code)
            lines.append(candidate_line("error", cand, str(exc)))
            entries.append(error_entry(cand, str(exc), exc.exit_code))
            continue
        if not quiet and not several:
            print_summary(result, console)
        report = result.to_json(str(certificate))
        report["certificate"]["trust"] = trusted.trust
        verdict = result.verdict
        again = None
        if recertify and not result.passed:
            run_dir = recertify_out or Path("reports") / f"recertify-{stamp}"
            run_dir = run_dir / cand.name if several else run_dir
            again = _recertify(cert, certificate, result, base, run_dir, not (quiet or no_progress), console)
            report["gate_verdict"] = verdict
            report["recertification"] = again
            verdict = "recertified pass" if again["verdict"] == "pass" else "recertified fail"
        report["verdict"] = verdict if trusted.signed else f"{verdict} (unsigned certificate)"
        worst = max(worst, VERDICT_EXIT[verdict])
        subjects = [{"name": f.path, "digest": {"sha256": f.sha256}} for f in result.candidate_files]
        written = write_report(report, report_path, signer, subjects)
        detail = f"||Delta|| = {result.delta.norm:.4g}  report {written[0]}" + ("" if signer else " (unsigned)")
        lines.append(candidate_line(report["verdict"], cand, detail))
        entries.append(candidate_entry(result, verdict, written, again))
    if not trusted.signed:
        console.print("[yellow]the certificate is unsigned: these verdicts are only as good as the file[/]")
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    summary = gate_summary(cert, certificate, trusted.trust, trusted.signed, entries)
    assert summary["exit_code"] == worst, "the document's exit code is the process's"
    if junit is not None:
        from auditor.certificate.report_formats import write_junit

        summary["files"]["junit"] = str(write_junit(junit, "auditor gate", gate_cases(entries)))
    if as_json:
        from auditor.certificate.report_formats import dumps

        click.echo(dumps(summary))
    return worst


@cli.command()
@click.argument("certificate", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--substitute",
    "subs",
    multiple=True,
    metavar="OLD=NEW",
    help="A token substitution (token strings, or ids as #123). Repeatable.",
)
@click.option("--k", "k", type=int, help="Worst case over any k substitutions instead.")
@click.option(
    "--candidates",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --k: file of the tokens that may be replaced (one per line; #id for ids); default any.",
)
@click.option(
    "--base",
    type=click.Path(file_okay=False, path_type=Path),
    help="Base model directory (embeddings + tokenizer; default: the certificate's model.source).",
)
@click.option("--embedding", help="Name of the input-embedding tensor (default: found by name).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON path (default reports/tokens-<timestamp>.json).",
)
def tokens(
    certificate: Path,
    subs: tuple[str, ...],
    k: int | None,
    candidates: Path | None,
    base: Path | None,
    embedding: str | None,
    out: Path | None,
) -> int:
    """Bound the smoothed score after token substitutions (embedding-row distances of the base).

    EXACT for certificates that smoothed the input embeddings; HEURISTIC (the paper's Thm 4.5) for
    weight-space certificates. Exit 0 every task certified, 1 not certified or refused, 2 error.
    """
    from rich.console import Console

    from auditor.certificate.schema import read_certificate
    from auditor.gate.tokens import token_bound

    if bool(subs) == (k is not None):
        raise click.UsageError("give either --substitute OLD=NEW (one or more) or --k K")
    if candidates is not None and k is None:
        raise click.UsageError("--candidates goes with --k")
    cert = read_certificate(certificate)
    base = base or model_source_dir(cert.model.source)
    result = token_bound(cert, base, list(subs), k=k, candidates=candidates, embedding=embedding)
    result.print(Console())
    out = out or Path("reports") / f"tokens-{_stamp()}.json"
    write_report(result.to_json(str(certificate)), out, None, [])
    Console().print(f"report: {out}")
    return EXIT_PASS if result.verdict == "pass" else EXIT_FAIL
