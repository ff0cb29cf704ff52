"""The ``reconcile`` command line."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from ruamel.yaml import YAML

from reconciler import __version__
from reconciler.agent import AgentConfig, default_data_dir, default_ip, read_or_create_token, run_agent
from reconciler.errors import Diagnostic, SpecInvalid
from reconciler.estimate import gather_cached
from reconciler.observe import ObservedState, load_snapshot, observe_agents, put_instances
from reconciler.plan import Facts, Plan, plan, to_json, to_markdown, to_text
from reconciler.spec import Desired, load_desired, validate_paths, write_schemas

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


def _fail(diagnostics: SpecInvalid) -> typer.Exit:
    for diagnostic in diagnostics.diagnostics:
        typer.echo(str(diagnostic), err=True)
    return typer.Exit(1)


def read_token(token_file: Path | None) -> str | None:
    """The agent token from --token-file, else RECONCILER_TOKEN; never printed."""
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            typer.echo(f"{token_file}: cannot read the token file: {exc.strerror}", err=True)
            raise typer.Exit(1) from exc
    return os.environ.get("RECONCILER_TOKEN") or None


def collect_facts(desired: Desired, observed: ObservedState, catalogs: list[Path]) -> Facts:
    found, failed = gather_cached(desired.models, observed, catalogs, desired.cluster.spec.huggingface.endpoint)
    return Facts(found, failed)


def observe(desired: Desired, snapshot: Path | None, token_file: Path | None) -> ObservedState:
    if snapshot is not None:
        return load_snapshot(snapshot)
    return observe_agents(desired.cluster.spec.agents, read_token(token_file))


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
    token_file: Annotated[Path | None, typer.Option("--token-file", help="File holding the agent token.")] = None,
) -> None:
    """Show what apply would change: + create, ~ replace, - delete, each with its reason.

    Without --observed the agents listed in the Cluster manifest are asked for their state
    (token from --token-file or RECONCILER_TOKEN).
    """
    try:
        desired = load_desired(path)
        state = (
            load_snapshot(observed) if observed else observe_agents(desired.cluster.spec.agents, read_token(token_file))
        )
        facts = collect_facts(desired, state, catalog or [])
    except SpecInvalid as exc:
        raise _fail(exc) from exc
    result: Plan = plan(desired, state, {}, facts)
    render = {PlanOutput.text: to_text, PlanOutput.json: to_json, PlanOutput.markdown: to_markdown}[output]
    typer.echo(render(result), nl=False)
    raise typer.Exit(2 if detailed_exitcode and result.has_changes else 0)


class SnapshotOutput(StrEnum):
    yaml = "yaml"
    json = "json"


@app.command("apply")
def apply_command(
    path: Annotated[Path, typer.Argument(help="The desired-state folder (one Cluster manifest).")],
    catalog: Annotated[list[Path] | None, typer.Option("--catalog", help="Recorded model metadata.")] = None,
    token_file: Annotated[Path | None, typer.Option("--token-file", help="File holding the agent token.")] = None,
) -> None:
    """Plan against the live agents, then hand each agent its full set of instances (concurrently).

    Applying the same state twice changes nothing and restarts nothing. Exit 1 when any agent
    could not be applied to; the others are applied all the same.
    """
    token = read_token(token_file)
    try:
        desired = load_desired(path)
        state = observe_agents(desired.cluster.spec.agents, token)
        facts = collect_facts(desired, state, catalog or [])
    except SpecInvalid as exc:
        raise _fail(exc) from exc
    result = plan(desired, state, {}, facts)
    typer.echo(to_text(result), nl=False)
    sets = result.desired_sets()
    reachable = {w.name for w in state.workers if w.state != "Unreachable"}
    targets = [(agent, sets.get(agent.name, [])) for agent in desired.cluster.spec.agents if agent.name in reachable]
    failed = False
    for agent in desired.cluster.spec.agents:
        if agent.name not in reachable:
            typer.echo(f"{agent.name}: unreachable at {agent.url}; not applied", err=True)
            failed = True
    for outcome in put_instances(targets, token, time.time_ns()):
        typer.echo(f"{outcome.agent}: {outcome.detail}", err=not outcome.ok)
        failed |= not outcome.ok
    raise typer.Exit(1 if failed else 0)


@app.command("observe")
def observe_command(
    path: Annotated[Path, typer.Argument(help="The desired-state folder whose Cluster lists the agents.")] = Path("."),
    output: Annotated[SnapshotOutput, typer.Option("--output", "-o", help="yaml or json.")] = SnapshotOutput.yaml,
    token_file: Annotated[Path | None, typer.Option("--token-file", help="File holding the agent token.")] = None,
) -> None:
    """Print what every agent reports, as a snapshot for `reconcile plan --observed`."""
    try:
        desired = load_desired(path)
    except SpecInvalid as exc:
        raise _fail(exc) from exc
    state = observe_agents(desired.cluster.spec.agents, read_token(token_file))
    body = [w.model_dump(mode="json", by_alias=True) for w in state.workers]
    if output is SnapshotOutput.json:
        typer.echo(json.dumps(body, indent=2))
        return
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(body, sys.stdout)


def _labels(text: str) -> dict[str, str]:
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not key=value", param_hint="--labels")
        labels[key] = value
    return labels


@app.command("agent")
def agent_command(
    port: Annotated[int, typer.Option("--port", help="Port of the agent API.")] = 10150,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "0.0.0.0",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="State, logs and binaries [default: /var/lib/reconciler as root, else ~/.local/share/reconciler].",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Model files [default: <data-dir>/cache].")
    ] = None,
    worker_name: Annotated[str | None, typer.Option("--worker-name", help="[default: the host name]")] = None,
    worker_ip: Annotated[str | None, typer.Option("--worker-ip", help="[default: the host's address]")] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file", help="File holding the token clients must send [default: <data-dir>/token, created]."
        ),
    ] = None,
    labels: Annotated[str, typer.Option("--labels", help="Extra worker labels: k=v,k2=v2.")] = "",
    port_range: Annotated[str, typer.Option("--port-range", help="Ports for instances.")] = "40000-40063",
    debug: Annotated[
        bool, typer.Option("--debug", help="Debug logging (change later with PUT /v1/log-level).")
    ] = False,
) -> None:
    """Run the node agent: report this machine, and run the instances the reconciler hands it."""
    data = (data_dir or default_data_dir()).expanduser().resolve()
    try:
        token_sha256, token_path = read_or_create_token(token_file, data)
    except (OSError, ValueError) as exc:
        typer.echo(f"{token_file or data / 'token'}: cannot read the token: {exc}", err=True)
        raise typer.Exit(1) from exc
    config = AgentConfig(
        name=worker_name or socket.gethostname(),
        ip=worker_ip or default_ip(),
        port=port,
        data_dir=data,
        cache_dir=(cache_dir or data / "cache").expanduser().resolve(),
        token_sha256=token_sha256,
        labels=_labels(labels),
        port_range=port_range,
    )
    typer.echo(f"agent {config.name}: data {data}, cache {config.cache_dir}, token in {token_path}", err=True)
    run_agent(config, host, debug)


@app.command()
def schemas(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the JSON Schemas into.")] = Path("schemas"),
) -> None:
    """Write one JSON Schema per manifest kind (and one for files that mix kinds)."""
    for path in write_schemas(out):
        typer.echo(str(path))


if __name__ == "__main__":
    app()
