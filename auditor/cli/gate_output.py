"""What `auditor gate` prints and writes: the summary panel, one line per candidate, signed JSON reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditor.attest.signing import GATE_PREDICATE_TYPE as GATE_PREDICATE
from auditor.errors import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, AuditorError

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
    from auditor.attest import signing

    path = key.expanduser()
    path = path / signing.SIGNING_KEY if path.is_dir() else path
    if not path.is_file():
        raise AuditorError(f"{path}: signing key not found")
    return signing.load_signer(path)


def write_report(report: dict[str, Any], out: Path, signer: Any, subjects: list[dict[str, Any]]) -> list[Path]:
    """Canonical JSON report; with a signer also an in-toto statement in a DSSE envelope next to it."""
    from auditor.certificate.schema import canonical_json

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(canonical_json(report) + b"\n")
    tmp.replace(out)
    if signer is None:
        return [out]
    from auditor.attest import signing

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
    grid = result.cert.sigma_search is not None  # each task's row names the sigma of its claim
    for col in (
        "task",
        *(["sigma"] if grid else []),
        "p_lower",
        "target q",
        "R(q)",
        "R/sigma",
        "bound at ||Delta||",
        "",
    ):
        tasks.add_column(col, justify="left" if col == "task" else "right")
    for t in result.tasks:
        mark = "[green]certified[/]" if t.certified else "[yellow]not certified[/]"
        tasks.add_row(
            t.name,
            *([f"{t.sigma:g}"] if grid else []),
            f"{t.p_lower:.4f}",
            f"{t.target:g}",
            _fmt(t.radius),
            f"{t.radius / t.sigma:.3f}",
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


def candidate_entry(
    result: Any, verdict: str, written: list[Path], recertification: dict[str, Any] | None
) -> dict[str, Any]:
    """One candidate in the `gate --json` document: its final verdict, ||Delta||, per-task bounds, files."""
    sigma, norm = result.cert.perturbation.sigma, result.delta.norm
    return {
        "candidate": str(result.candidate),
        "kind": result.kind,
        "verdict": verdict,
        "exit_code": VERDICT_EXIT[verdict],
        "gate_verdict": result.verdict,
        "delta_norm": norm,
        "delta_norm_over_sigma": norm / sigma,
        "blockers": result.reasons[: len(result.reasons) - len(result.tasks)],
        "tasks": [
            {
                "name": t.name,
                "p_lower": t.p_lower,
                "target": t.target,
                "radius": t.radius,
                "radius_over_sigma": t.radius / t.sigma,
                "sigma": t.sigma,
                "bound": t.bound,
                "certified": t.certified,
            }
            for t in result.tasks
        ],
        "files": {"report": str(written[0]), **({"envelope": str(written[1])} if len(written) > 1 else {})},
        "recertification": recertification,
    }


def error_entry(candidate: Path, message: str, exit_code: int = EXIT_ERROR) -> dict[str, Any]:
    return {"candidate": str(candidate), "verdict": "error", "exit_code": exit_code, "error": message}


def gate_summary(cert: Any, cert_path: Path, trust: str, signed: bool, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The `gate --json` document: every candidate's entry; verdict and exit code are the worst candidate's."""
    from auditor.certificate.report_formats import SUMMARY_VERSION

    worst = max(entries, key=lambda e: e["exit_code"])  # the first of the worst
    return {
        "summary_version": SUMMARY_VERSION,
        "command": "gate",
        "verdict": worst["verdict"],
        "exit_code": worst["exit_code"],
        "certificate": {
            "path": str(cert_path),
            "run_id": cert.run_id,
            "model": cert.model.name,
            "verdict": cert.verdict,
            "signed": signed,
            "trust": trust,
        },
        "sigma": cert.perturbation.sigma,
        "candidates": entries,
        "files": {},
    }


def gate_cases(entries: list[dict[str, Any]]) -> list[Any]:
    """JUnit cases of the gate: per candidate 'certifiable', one per task bound, and 'recertify' when run.

    The candidate's final verdict decides, as for certify: a candidate that passes (a recertified pass
    included) fails no case; one that fails fails exactly the checks it does not meet.
    """
    from auditor.certificate.report_formats import CheckCase

    cases = []
    for e in entries:
        where = f"auditor.gate.{Path(e['candidate']).name}"
        if e["verdict"] == "error":
            cases.append(CheckCase(where, "gate", False, e["error"]))
            continue
        final_pass = e["exit_code"] == EXIT_PASS
        superseded = " (recertified pass supersedes)" if e["verdict"] == "recertified pass" else ""
        blockers = e["blockers"]
        cases.append(
            CheckCase(
                where,
                "certifiable",
                final_pass or not blockers,
                ("; ".join(blockers) + superseded) if blockers else f"{e['kind']}: the certificate covers its changes",
            )
        )
        for t in e["tasks"]:
            measured = (
                f"certified smoothed score >= {t['bound']:.4f} at ||Delta|| = {e['delta_norm']:.4g} "
                f"(R(q) = {t['radius']:.4g}, p_lower = {t['p_lower']:.4f})"
            )
            met = t["certified"]
            name = f"{t['name']}: bound >= {t['target']:g}"
            cases.append(CheckCase(where, name, final_pass or met, measured + ("" if met else superseded)))
        again = e["recertification"]
        if again is not None:
            scores = ", ".join(f"{t['name']} p_lower={t['p_lower']:.4f} {t['verdict']}" for t in again["tasks"])
            message = f"recertification {again['verdict']}: {scores}"
            cases.append(
                CheckCase(where, "recertify", again["verdict"] == "pass", message, "; ".join(again["reasons"]))
            )
    return cases
