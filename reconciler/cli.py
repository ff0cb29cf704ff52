"""The ``reconcile`` command line."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from reconciler import __version__
from reconciler.errors import Diagnostic
from reconciler.spec import validate_paths, write_schemas

app = typer.Typer(
    name="reconcile",
    help="GitOps for LLM inference clusters: validate manifests, plan and apply them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class ValidateOutput(StrEnum):
    text = "text"
    json = "json"


def _github_annotation(diagnostic: Diagnostic) -> str:
    # GitHub's workflow-command syntax escapes these characters in the message.
    message = str(diagnostic).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return f"::error file={diagnostic.path},line={diagnostic.line},col={diagnostic.col}::{message}"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reconcile {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """GitOps for LLM inference clusters."""


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Manifest files or folders (read recursively: *.yaml, *.yml).")],
    output: Annotated[ValidateOutput, typer.Option("--output", "-o", help="text or json.")] = ValidateOutput.text,
) -> None:
    """Check manifests against the schema and the rules; exit 0 if valid, 1 if not.

    Every problem is reported, one line each: path:line:col: Kind/name: field: message.
    With GITHUB_ACTIONS=true each problem is also printed as a GitHub annotation.
    """
    report = validate_paths(paths)
    if output is ValidateOutput.json:
        body = {
            "valid": report.valid,
            "files": report.files,
            "documents": report.documents,
            "states": [
                {
                    "root": s.root,
                    "cluster": s.cluster.metadata.name,
                    "models": [m.metadata.name for m in s.models],
                    "workerSelectors": [w.metadata.name for w in s.selectors],
                }
                for s in report.states
            ],
            "errors": [d.as_dict() for d in report.diagnostics],
        }
        typer.echo(json.dumps(body, indent=2))
    else:
        for diagnostic in report.diagnostics:
            typer.echo(str(diagnostic))
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for diagnostic in report.diagnostics:
                typer.echo(_github_annotation(diagnostic))
        if report.valid:
            models = sum(len(s.models) for s in report.states)
            typer.echo(
                f"valid: {report.documents} documents in {report.files} files "
                f"({len(report.states)} desired states, {models} models)"
            )
        else:
            typer.echo(f"invalid: {len(report.diagnostics)} errors", err=True)
    raise typer.Exit(0 if report.valid else 1)


@app.command()
def schemas(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the JSON Schemas into.")] = Path("schemas"),
) -> None:
    """Write one JSON Schema per manifest kind (and one for files that mix kinds)."""
    for path in write_schemas(out):
        typer.echo(str(path))


if __name__ == "__main__":
    app()
