"""Commands that talk to node agents: agent, apply, observe."""

from __future__ import annotations

import json
import socket
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reconciler.cli import app
from reconciler.cli._common import collect_facts, fail, read_token
from reconciler.errors import SpecInvalid

if TYPE_CHECKING:
    from reconciler.observe import ObservedState
    from reconciler.plan import Plan
    from reconciler.spec import Desired


class SnapshotOutput(StrEnum):
    yaml = "yaml"
    json = "json"


@app.command("apply")
def apply_command(
    path: Annotated[Path, typer.Argument(help="The desired-state folder (one Cluster manifest).")],
    catalog: Annotated[list[Path] | None, typer.Option("--catalog", help="Recorded model metadata.")] = None,
    token_file: Annotated[Path | None, typer.Option("--token-file", help="File holding the agent token.")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Apply every step until converged: each instance Running, no rollout left.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="With --wait: give up after this many seconds (exit 1).", min=1)
    ] = 600.0,
) -> None:
    """Plan the next step against the live agents, then hand each agent whose set changes its full set.

    A rollout goes step by step (surge replicas first, then the old ones, paced by
    spec.maxSurge and spec.maxUnavailable): without --wait one step is applied, as the
    server would take it. Applying the same state twice changes nothing and restarts
    nothing. Exit 1 when any agent could not be applied to (the others are applied all
    the same), and with --wait when a rollout stops on an instance in Error or time runs out.
    """
    from reconciler.errors import SpecInvalid
    from reconciler.spec import load_desired

    token = read_token(token_file)
    try:
        desired = load_desired(path)
    except SpecInvalid as exc:
        raise fail(exc) from exc
    deadline = time.monotonic() + timeout
    while True:
        result, state, failed = _apply_step(desired, catalog or [], token)
        if failed:
            raise typer.Exit(1)
        if not wait:
            raise typer.Exit(0)
        verdict = _converged(result, state)
        if verdict is not None:
            typer.echo(verdict, err=verdict.startswith("stopped"))
            raise typer.Exit(1 if verdict.startswith("stopped") else 0)
        if time.monotonic() > deadline:
            typer.echo(f"not converged after {timeout:.0f}s", err=True)
            raise typer.Exit(1)
        time.sleep(WAIT_POLL)


WAIT_POLL = 2.0  # seconds between steps of `apply --wait`


def _apply_step(desired: Desired, catalogs: list[Path], token: str | None) -> tuple[Plan, ObservedState, bool]:
    """Observe, plan the next step, print it, send it; whether any agent failed."""
    from reconciler.observe import apply_sets, observe_agents, put_instances
    from reconciler.plan import step, to_text

    agents = desired.cluster.spec.agents
    try:
        state = observe_agents(agents, token)
        facts = collect_facts(desired, state, catalogs)
    except SpecInvalid as exc:
        raise fail(exc) from exc
    result = step(desired, state, {}, facts)
    typer.echo(to_text(result), nl=False)
    ready = {w.name for w in state.workers if w.state != "Unreachable"}
    applied = apply_sets(
        agents, result.desired_sets(), state, ready, lambda sets, gen: put_instances(sets, token, gen), time.time_ns
    )
    for outcome in (*applied.skipped, *applied.sent):
        typer.echo(f"{outcome.agent}: {outcome.detail}", err=not outcome.ok)
    for name in applied.unchanged:
        typer.echo(f"{name}: up to date (no change)")
    return result, state, bool(applied.skipped or applied.failed)


def _converged(result: Plan, state: ObservedState) -> str | None:
    """Why `apply --wait` is done: converged, or stopped on an instance in Error; None to go on."""
    stalled = next((r for r in result.rollouts if r.state == "Stalled"), None)
    if stalled is not None:
        return f"stopped: {stalled.message}"
    kept = {(a.worker, a.instance.id) for a in result.actions if a.action == "keep"}
    failed = next(
        (i for w in state.workers for i in w.instances if i.state == "Error" and (w.name, i.id) in kept), None
    )
    if failed is not None:
        return f"stopped: {failed.id} is in Error: {failed.message or 'no message'}"
    if result.has_changes or result.rollouts or any(i.state != "Running" for w in state.workers for i in w.instances):
        return None
    return f"converged: {result.count('keep')} instances Running"


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
