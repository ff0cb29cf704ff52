"""Commands of the OpenAI-compatible router: router, keys new."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli import app
from reconciler.cli._common import fail, read_token

keys_app = typer.Typer(help="API keys of the router.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Argument(help="A name for the key (DNS label): usage is metered by it.")],
) -> None:
    """Print a new API key once, and the line to add under the Cluster's spec.router.apiKeys.

    Only the SHA-256 of the key goes into git; the key itself is shown here and nowhere else.
    """
    import hashlib
    import secrets

    if not DNS_LABEL.match(name) or len(name) > 63:
        typer.echo(f"{name!r}: a key name is a DNS label: lowercase letters, digits and '-'", err=True)
        raise typer.Exit(1)
    key = f"rk-{secrets.token_urlsafe(32)}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    typer.echo(f"key (shown once, keep it secret): {key}")
    typer.echo("add to the Cluster manifest under spec.router.apiKeys:")
    typer.echo(f"  - {{name: {name}, sha256: {digest}}}")


@app.command("router")
def router_command(
    path: Annotated[Path, typer.Argument(help="The desired-state folder (one Cluster manifest).")],
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to listen on [default: 0.0.0.0 with API keys, else 127.0.0.1]."),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Port of the OpenAI-compatible API.")] = 10100,
    token_file: Annotated[Path | None, typer.Option("--token-file", help="File holding the agent token.")] = None,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls of the agents.", min=0.1)] = 5.0,
    max_inflight: Annotated[
        int, typer.Option("--max-inflight", help="Requests in flight per instance before 429.", min=1)
    ] = 256,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds an instance may stay silent: 504.", min=1)
    ] = 1800,
) -> None:
    """Run the router alone: route to the Running instances the agents report, polled every --interval.

    Without API keys in the Cluster manifest the router listens on loopback only.
    """
    from reconciler.errors import SpecInvalid
    from reconciler.router import Router
    from reconciler.router.standalone import listen_address, run_router
    from reconciler.spec import load_desired

    try:
        desired = load_desired(path)
    except SpecInvalid as exc:
        raise fail(exc) from exc
    try:
        address = listen_address(bool(desired.cluster.spec.router.api_keys), host)
    except ValueError as exc:
        typer.echo(f"--host {exc}", err=True)
        raise typer.Exit(1) from exc
    router = Router(None, timeout_s=timeout, max_inflight_per_instance=max_inflight)
    typer.echo(
        f"router: http://{address}:{port}/v1 ({len(desired.models)} models, {len(desired.routes)} routes)", err=True
    )
    run_router(router, desired, read_token(token_file), address, port, interval)
