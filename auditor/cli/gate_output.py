"""What `auditor gate` prints and writes: the summary panel, one line per candidate, signed JSON reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditor.errors import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, AuditorError
from auditor.signing import GATE_PREDICATE_TYPE as GATE_PREDICATE

# The one verdict field of a gate report, and the exit code each maps to.
VERDICT_EXIT = {
    "pass": EXIT_PASS,
    "not certified": EXIT_FAIL,
    "not certifiable": EXIT_FAIL,
    "recertified pass": EXIT_PASS,
    "recertified fail": EXIT_FAIL,
    "error": EXIT_ERROR,
}
_COLOUR = {"pass": "green", "recertified pass": "green", "not certified": "yellow", "error": "red"}


def signer_for(key: Path | None) -> Any:
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


def print_summary(result: Any, console: Any) -> None:
    from rich.panel import Panel
    from rich.table import Table

    p, norm = result.cert.perturbation, result.delta.norm
    colour = _COLOUR.get(result.verdict, "red")
    head = Table.grid(padding=(0, 2))
    head.add_row("certificate", f"{result.cert.run_id} ({result.cert.model.name}, {len(p.parameters)} tensors)")
    checked = f"sha256 of {len(result.base_files)} file(s) matches the certificate"
    head.add_row("base", f"{result.base} ({checked})" if result.base else "not given")
    head.add_row("candidate", f"{result.candidate} ({result.kind})")
    if p.scale == "absolute":
        head.add_row("||Delta||_2", f"{_fmt(norm)}   ||Delta||/sigma = {_fmt(norm / p.sigma)}")
    else:
        head.add_row(
            "||Sigma^-1/2 Delta||_2",
            f"{_fmt(result.certified_norm)}   (relative noise: sigma_k = sigma*RMS_k; ||Delta||_2 = {_fmt(norm)})",
        )
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
            f"{t.radius / p.radius_unit:.3f}",
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


def candidate_line(verdict: str, candidate: Path, detail: str) -> str:
    """One line per candidate: what a platform greps."""
    from rich.markup import escape

    colour = _COLOUR.get(verdict.split(" (")[0], "red")
    return f"[{colour}]{verdict.upper():<18}[/] {escape(str(candidate))}  {escape(detail)}"
