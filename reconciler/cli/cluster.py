"""Commands that talk to node agents: agent, apply, observe."""

from __future__ import annotations

import json
import socket
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli import app
from reconciler.cli._common import collect_facts, fail, read_token


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
    from reconciler.errors import SpecInvalid
    from reconciler.observe import observe_agents, put_instances
    from reconciler.plan import plan, to_text
    from reconciler.spec import load_desired

    token = read_token(token_file)
    try:
        desired = load_desired(path)
        state = observe_agents(desired.cluster.spec.agents, token)
        facts = collect_facts(desired, state, catalog or [])
    except SpecInvalid as exc:
        raise fail(exc) from exc
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
    from ruamel.yaml import YAML

    from reconciler.errors import SpecInvalid
    from reconciler.observe import observe_agents
    from reconciler.spec import load_desired

    try:
        desired = load_desired(path)
    except SpecInvalid as exc:
        raise fail(exc) from exc
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
            help="State, logs and binaries; made 0700, one agent each "
            "\\[default: /var/lib/reconciler as root, else ~/.local/share/reconciler].",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Model files \\[default: <data-dir>/cache].")
    ] = None,
    worker_name: Annotated[str | None, typer.Option("--worker-name", help="\\[default: the host name]")] = None,
    worker_ip: Annotated[str | None, typer.Option("--worker-ip", help="\\[default: the host's address]")] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file", help="File holding the token clients must send \\[default: <data-dir>/token, created]."
        ),
    ] = None,
    labels: Annotated[str, typer.Option("--labels", help="Extra worker labels: k=v,k2=v2.")] = "",
    port_range: Annotated[
        str | None,
        typer.Option(
            "--port-range",
            help="Ports for this worker's instances, LOW-HIGH; wins over the Cluster's portRange. "
            "Agents on one host need ranges that do not overlap \\[default: the Cluster's portRange].",
        ),
    ] = None,
    allow_exec: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-exec",
            help="Glob of executables instances may run (repeatable), e.g. '/usr/local/bin/llama-*'; "
            "others end in Error \\[default: any].",
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Debug logging (change later with PUT /v1/log-level).")
    ] = False,
) -> None:
    """Run the node agent: report this machine, and run the instances the reconciler hands it."""
    from reconciler.agent import (
        AgentConfig,
        StartRefused,
        default_data_dir,
        default_ip,
        read_or_create_token,
        run_agent,
    )

    if port_range is not None:
        _check_port_range(port_range)
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
        allow_exec=allow_exec or [],
    )
    typer.echo(f"agent {config.name}: data {data}, cache {config.cache_dir}, token in {token_path}", err=True)
    try:
        run_agent(config, host, debug)
    except StartRefused as exc:
        typer.echo(f"reconcile agent: {exc}", err=True)
        raise typer.Exit(1) from exc


def _check_port_range(text: str) -> None:
    from reconciler.observe import port_span

    try:
        port_span(text)
    except ValueError:
        typer.echo(f"--port-range: {text!r} is not LOW-HIGH with 1 <= LOW <= HIGH <= 65535", err=True)
        raise typer.Exit(1) from None
