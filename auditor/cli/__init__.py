"""Command line: parse, call, map the outcome to an exit code.

Exit codes: 0 pass / valid, 1 fail (policy violated, invalid signature), 2 error (bad usage, bad
policy, unreadable checkpoint or data), 130 interrupted (after the per-draw log is flushed).
Heavy libraries (torch, transformers) are imported inside commands so `--help` stays instant.
"""

from __future__ import annotations

import sys

import click

from auditor.cli.app import cli
from auditor.errors import EXIT_ERROR, EXIT_INTERRUPTED, AuditorError

__all__ = ["cli", "main", "resume_command"]


def _register() -> None:
    # Each module adds its commands to `cli`; heavy imports happen inside the commands themselves.
    from auditor.cli import audit_cmds, gate_cmds, landscape_cmds, run_cmds, sign_cmds  # noqa: F401


def resume_command(args: list[str], run_dir: object) -> str:
    """The command line that continues an interrupted run: the same one, with --out RUN_DIR --resume."""
    import shlex

    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in ("--out", "--resume") or a.startswith("--out="):
            skip = a == "--out"
        else:
            out.append(a)
    return shlex.join(["auditor", *out, "--out", str(run_dir), "--resume"])


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn errors into one line and an exit code."""
    _register()
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        rc = cli.main(args=args, prog_name="auditor", standalone_mode=False)
    except AuditorError as exc:
        if debug:
            raise
        for line in str(exc).splitlines() or [""]:  # a policy can report several problems, one a line
            click.echo(f"error: {line}", err=True)
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        # click turns Ctrl-C into Abort; the interrupted run (if any) rides on its cause
        run_dir = getattr(exc, "run_dir", None) or getattr(exc.__cause__, "run_dir", None)
        if run_dir is None:
            click.echo("interrupted", err=True)
        else:
            click.echo(f"interrupted: per-draw log flushed; resume with: {resume_command(args, run_dir)}", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return EXIT_ERROR
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
