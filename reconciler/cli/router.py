"""Commands of the OpenAI-compatible router: router, keys new."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reconciler.cli import app
from reconciler.cli._common import read_token

if TYPE_CHECKING:
    from collections.abc import Callable

    from reconciler.server import HostedApp
    from reconciler.server.loop import OnState
    from reconciler.server.store import Store

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
    server: Annotated[
        list[str],
        typer.Option("--server", help="URL of a reconciler server; repeat for several (tried in turn)."),
    ],
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File holding the server's token [default: $RECONCILER_TOKEN].")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the OpenAI-compatible API.", min=1, max=65535)] = 10170,
    allow_anonymous: Annotated[
        bool,
        typer.Option(
            "--allow-anonymous",
            help="Serve clients beyond loopback even while the Cluster has no API keys.",
        ),
    ] = False,
    max_inflight: Annotated[
        int, typer.Option("--max-inflight", help="Requests in flight per instance before 429.", min=1)
    ] = 256,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds an instance may stay silent: 504.", min=1)
    ] = 1800,
    max_body_mib: Annotated[
        int, typer.Option("--max-body-mib", help="Largest request body, in MiB: 413 above.", min=1, max=4096)
    ] = 32,
    max_connections: Annotated[
        int, typer.Option("--max-connections", help="Client connections at once: 503 above.", min=1)
    ] = 4096,
    table_file: Annotated[
        Path | None,
        typer.Option("--table-file", help="Keep the last table here; start from it while no server answers."),
    ] = None,
) -> None:
    """Run a router: follow the servers' routing table and serve the OpenAI API on it.

    Any number of routers can run. Each keeps routing on its last table while no server
    answers (/healthz says "stale"), and routes to the instances that pass their own health
    checks. While the Cluster has no API keys, only loopback clients are served (403 for
    others) unless --allow-anonymous.
    """
    from reconciler.router.process import RouterSettings, run_router_process

    for url in server:
        if not url.startswith(("http://", "https://")):
            typer.echo(f"--server {url}: not an http(s) URL", err=True)
            raise typer.Exit(1)
    settings = RouterSettings(
        servers=tuple(server),
        token=read_token(token_file),
        host=host,
        port=port,
        allow_anonymous=allow_anonymous,
        timeout_s=timeout,
        max_inflight=max_inflight,
        max_body_bytes=max_body_mib * 1024 * 1024,
        max_connections=max_connections,
        table_file=table_file,
    )
    typer.echo(f"router: http://{host}:{port}/v1, following {', '.join(server)}", err=True)
    run_router_process(settings)


def hosted_router(port: int, host: str) -> tuple[HostedApp, OnState, Callable[[Store], None]]:
    """The router inside `serve`'s process (``--router-port``): its table rebuilt after every
    observation, usage written straight to the server's store once it is open. It dies with the server."""
    from collections.abc import Sequence

    from reconciler.router import build_table, create_router_app
    from reconciler.router.listener import limits
    from reconciler.router.usage import UsageSum
    from reconciler.server import HostedApp
    from reconciler.server.routing import write_usage

    opened: list[Store] = []

    class StoreUsage:
        def record(self, rows: Sequence[UsageSum]) -> None:
            if opened:
                write_usage(opened[0], rows)

    app, update_table = create_router_app(usage=StoreUsage())

    def on_state(desired: Any, observed: Any) -> None:
        update_table(build_table(desired, observed))

    return HostedApp(app, port, host, limits()), on_state, opened.append
