"""`auditor gate` (fine-tuned checkpoint or LoRA adapter vs a base certificate) and `auditor tokens`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from auditor.checkpoint import model_source_dir
from auditor.cli import cli
from auditor.errors import EXIT_FAIL, EXIT_PASS, AuditorError

GATE_PREDICATE = "https://auditor.dev/gate-report/v1"


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def _signer(key: Path | None) -> Any:
    """The Ed25519 signer for `key` (a file, or the directory `auditor keygen` wrote), or None."""
    if key is None:
        return None
    from auditor import signing

    path = key.expanduser()
    path = path / signing.SIGNING_KEY if path.is_dir() else path
    if not path.is_file():
        raise AuditorError(f"{path}: signing key not found")
    return signing.load_signer(path)


def write_report(report: dict[str, Any], out: Path, signer: Any, subjects: list[dict[str, Any]]) -> list[Path]:
    """Canonical JSON report; with a signer also an in-toto statement in a DSSE envelope next to it."""
    from auditor.certificate import canonical_json

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(canonical_json(report) + b"\n")
    tmp.replace(out)
    if signer is None:
        return [out]
    from auditor import signing

    statement = {
        "_type": signing.STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": GATE_PREDICATE,
        "predicate": report,
    }
    envelope_path = out.with_name(out.stem + ".intoto.jsonl")
    signing.write_envelope(signing.sign_statement(statement, signer), envelope_path)
    return [out, envelope_path]


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _gate_summary(result: Any, console: Any) -> None:
    from rich.panel import Panel
    from rich.table import Table

    p, norm = result.cert.perturbation, result.delta.norm
    colour = {"pass": "green", "not certified": "yellow", "not certifiable": "red"}[result.verdict]
    head = Table.grid(padding=(0, 2))
    head.add_row("certificate", f"{result.cert.run_id} ({result.cert.model.name}, {len(p.parameters)} tensors)")
    checked = f"sha256 of {len(result.base_files)} file(s) matches the certificate"
    head.add_row("base", f"{result.base} ({checked})" if result.base else "not given")
    head.add_row("candidate", f"{result.candidate} ({result.kind})")
    head.add_row("||Delta||_2", f"{_fmt(norm)}   ||Delta||/sigma = {_fmt(norm / p.sigma)}")
    head.add_row(
        "sigma",
        f"{p.sigma:g}   sigma*sqrt(d) = {_fmt(p.typical_noise_norm)} (size of a noise draw, "
        f"not a radius; d = {p.dimension:,})",
    )
    tasks = Table(title_justify="left", box=None, pad_edge=False)
    for col in ("task", "p_lower", "target q", "R(q)", "R/sigma", "bound at ||Delta||", ""):
        tasks.add_column(col, justify="left" if col == "task" else "right")
    for t in result.tasks:
        mark = "[green]certified[/]" if t.certified else "[yellow]not certified[/]"
        tasks.add_row(
            t.name,
            f"{t.p_lower:.4f}",
            f"{t.target:g}",
            _fmt(t.radius),
            f"{t.radius / p.sigma:.3f}",
            f"{t.bound:.4f}",
            mark,
        )
    console.print(Panel(head, title=f"auditor gate — [{colour}]{result.verdict.upper()}[/]", title_align="left"))
    console.print(tasks)
    for r in result.reasons[: len(result.reasons) - len(result.tasks)]:
        console.print(f"[red]✗[/] {r}")
    for n in result.notes:
        console.print(f"[dim]note: {n}[/]")
    if result.verdict == "not certified":
        console.print(
            "Outside the certified radius means 'not certified', not 'unsafe'. Next step: certify "
            "the candidate itself (--recertify)."
        )
    elif result.verdict == "not certifiable":
        console.print(
            "The certificate does not cover these changes. Next step: certify the candidate itself (--recertify)."
        )
    console.print(
        f"[dim]digests {result.timings['digests_s']:.2f}s, ||Delta|| {result.timings['delta_s']:.2f}s "
        f"({result.delta.bytes_read / 1e9:.2f} GB read). Bounds hold for the smoothed score only.[/]"
    )


def _recertify(
    cert: Any, cert_path: Path, result: Any, base: Path | None, out_dir: Path, console: Any
) -> dict[str, Any]:
    """Audit the candidate itself under the certificate's policy (sequential: a clear case stops early)."""
    from auditor import audit
    from auditor.policy import parse_policy

    policy_path = Path(cert.policy.path) if cert.policy.path else None
    loaded = parse_policy(
        cert.policy.text,
        origin=f"{cert_path}:policy",
        path=policy_path if policy_path and policy_path.exists() else None,
    )
    model_dir = result.candidate
    if result.kind == "lora":
        from auditor.lora import merge_adapter

        if base is None:
            raise AuditorError("--recertify of an adapter needs the base model (--base)")
        model_dir = merge_adapter(base, result.candidate, out_dir / "merged-candidate")
    console.print(f"recertifying {model_dir} under the certificate's policy (sequential) …")
    run = audit.certify(loaded, model=str(model_dir), out_dir=out_dir, sequential=True)
    assert run is not None, "recertification runs in a single process (not under torchrun)"
    new_cert, files = run.certificate, run.files
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
@click.argument("certificate", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--candidate",
    required=True,
    type=click.Path(path_type=Path),
    help="Fine-tuned checkpoint directory, or a PEFT LoRA adapter directory.",
)
@click.option(
    "--base",
    type=click.Path(file_okay=False, path_type=Path),
    help="The certified base model directory (default: the certificate's model.source).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Report path (default reports/gate-<timestamp>.json).",
)
@click.option(
    "--key",
    type=click.Path(path_type=Path),
    envvar="AUDITOR_SIGNING_KEY",
    help="Ed25519 key (or keygen directory) to sign the report; unsigned otherwise.",
)
@click.option("--recertify", is_flag=True, help="Also certify the candidate itself under the certificate's policy.")
@click.option(
    "--recertify-out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder of the recertification (default reports/recertify-<timestamp>).",
)
def gate(
    certificate: Path,
    candidate: Path,
    base: Path | None,
    out: Path | None,
    key: Path | None,
    recertify: bool,
    recertify_out: Path | None,
) -> int:
    """Pass/fail a fine-tune against a base certificate from ||theta_ft - theta0|| alone (no evaluation).

    Pass iff every task's certified smoothed score Phi(Phi^-1(p_lower) - ||Delta||/sigma) reaches its
    target q. Exit 0 pass (or the recertification passes), 1 not certified / not certifiable, 2 error.
    """
    from rich.console import Console

    from auditor.certificate import read_certificate
    from auditor.gate import gate_checkpoint

    console = Console()
    cert = read_certificate(certificate)
    signer = _signer(key)  # a bad key fails before any hashing
    if base is None and model_source_dir(cert.model.source).is_dir():
        base = model_source_dir(cert.model.source)
    candidate = Path(candidate)
    if (candidate / "adapter_config.json").exists():
        from auditor.lora import gate_lora

        result = gate_lora(cert, candidate, base)
    else:
        if base is None:
            raise AuditorError(f"{cert.model.source}: certified base not found; pass --base")
        result = gate_checkpoint(cert, candidate, base)
    _gate_summary(result, console)
    report = result.to_json(str(certificate))
    code = EXIT_PASS if result.passed else EXIT_FAIL
    if recertify:
        run_dir = recertify_out or Path("reports") / f"recertify-{_stamp()}"
        report["recertification"] = _recertify(cert, certificate, result, base, run_dir, console)
        verdict = report["recertification"]["verdict"]
        console.print(f"gate: [bold]{result.verdict}[/]; recertification of the candidate: [bold]{verdict}[/]")
        code = EXIT_PASS if result.passed or verdict == "pass" else EXIT_FAIL
    subjects = [{"name": f.path, "digest": {"sha256": f.sha256}} for f in result.candidate_files]
    written = write_report(report, out or Path("reports") / f"gate-{_stamp()}.json", signer, subjects)
    console.print(f"report: {', '.join(map(str, written))}" + ("" if signer else " (unsigned)"))
    return code


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

    from auditor.certificate import read_certificate
    from auditor.tokens import token_bound

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
