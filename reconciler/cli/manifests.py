"""Commands over manifests alone: validate, schemas, plan."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reconciler.cli import app
from reconciler.cli._common import AGENT_HELP, collect_facts, fail, observe_named, read_token

if TYPE_CHECKING:
    from reconciler.errors import Diagnostic


class ValidateOutput(StrEnum):
    text = "text"
    json = "json"


def _escape_data(text: str) -> str:
    # As the runner's toolkit does (actions/toolkit, core/src/command.ts: escapeData).
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    # escapeProperty: a property also ends at "," and the properties at "::".
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _github_annotation(diagnostic: Diagnostic) -> str:
    """One ``::error`` workflow command; whatever a file name or message holds stays data."""
    from reconciler.errors import one_line

    where = f"file={_escape_property(one_line(diagnostic.path))},line={diagnostic.line},col={diagnostic.col}"
    return f"::error {where}::{_escape_data(str(diagnostic))}"


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Manifest files or folders (read recursively: *.yaml, *.yml).")],
    output: Annotated[ValidateOutput, typer.Option("--output", "-o", help="text or json.")] = ValidateOutput.text,
) -> None:
    """Check manifests against the schema and the rules; exit 0 if valid, 1 if not.

    Every problem is reported, one line each: path:line:col: Kind/name: field: message.
    With GITHUB_ACTIONS=true each problem is also printed as a GitHub annotation.
    """
    from reconciler.spec import validate_paths

    report = validate_paths(paths)
    if output is ValidateOutput.json:
        body = {
            "valid": report.valid,
            "files": report.files,
            "documents": report.documents,
            "skipped": list(report.skipped),
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
                + (f"; skipped {len(report.skipped)} data files (YAML lists)" if report.skipped else "")
            )
        else:
            typer.echo(f"invalid: {len(report.diagnostics)} errors", err=True)
    raise typer.Exit(0 if report.valid else 1)


class PlanOutput(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"


@app.command("plan")
def plan_command(
    path: Annotated[Path, typer.Argument(help="The desired-state folder (one Cluster manifest at most).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only plan; never apply (plan never applies).")] = False,
    observed: Annotated[
        Path | None,
        typer.Option(
            "--observed", help="An observed-state snapshot (YAML/JSON list of workers) instead of asking the agents."
        ),
    ] = None,
    catalog: Annotated[
        list[Path] | None,
        typer.Option("--catalog", help="Recorded model metadata (YAML/JSON), used before the hub. Repeatable."),
    ] = None,
    output: Annotated[PlanOutput, typer.Option("--output", "-o", help="text, json or markdown.")] = PlanOutput.text,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 0 without changes, 2 with changes, 1 on error.")
    ] = False,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File holding the agent token (with --server: the server's).")
    ] = None,
    agent: Annotated[list[str] | None, typer.Option("--agent", help=AGENT_HELP)] = None,
    server: Annotated[
        str | None,
        typer.Option("--server", help="Plan against a live cluster: its server's observed state and assignments."),
    ] = None,
) -> None:
    """Show the next step, as apply and the server take it: + create, ~ replace, - delete, each with its reason.

    A rollout is paced (spec.maxSurge, spec.maxUnavailable): the plan shows its next step
    and a line for the whole rollout ("Rollout web: step 1 of 3: surge 1 new, keep 2 old").
    With --server URL the plan starts from what that cluster runs now (token from --token-file
    or RECONCILER_SERVER_TOKEN; a read-only token is enough). Without --observed or --server
    the agents listed in the Cluster manifest are asked for their state; the token
    (--token-file or RECONCILER_TOKEN) goes only to agent URLs that --agent or
    RECONCILER_AGENTS names too. Every request has a 10 s deadline.
    """
    from reconciler.cli.remote import ServerUnusable, observed_of_server
    from reconciler.errors import SpecInvalid
    from reconciler.observe import load_snapshot
    from reconciler.plan import step, to_json, to_markdown, to_text
    from reconciler.spec import load_desired

    if server and observed:
        typer.echo("give --observed or --server, not both", err=True)
        raise typer.Exit(1)
    assigned: dict[str, str] = {}
    try:
        desired = load_desired(path)
        if server:
            state, assigned = observed_of_server(server, token_file)
        else:
            state = (
                load_snapshot(observed)
                if observed
                else observe_named(desired.cluster.spec.agents, read_token(token_file), agent or [])
            )
        facts = collect_facts(desired, state, catalog or [])
    except SpecInvalid as exc:
        raise fail(exc) from exc
    except ServerUnusable as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    result = step(desired, state, assigned, facts)
    render = {PlanOutput.text: to_text, PlanOutput.json: to_json, PlanOutput.markdown: to_markdown}[output]
    typer.echo(render(result), nl=False)
    raise typer.Exit(2 if detailed_exitcode and result.has_changes else 0)


@app.command()
def schemas(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the JSON Schemas into.")] = Path("schemas"),
) -> None:
    """Write one JSON Schema per manifest kind (and one for files that mix kinds)."""
    from reconciler.spec import write_schemas

    for path in write_schemas(out):
        typer.echo(str(path))
