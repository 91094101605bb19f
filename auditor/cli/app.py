"""The `auditor` click group that every command module adds its commands to.

It lives apart from `auditor.cli` (which imports the command modules and runs them) so that the
command modules import the group without importing their own importer.
"""

from __future__ import annotations

import click

from auditor.version import __version__

EPILOG = "Exit codes: 0 pass/valid, 1 fail/invalid, 2 error (bad input; one line on stderr), 130 interrupted."


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditor")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Certify how robust an LLM's capabilities are to changes of its weights."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
