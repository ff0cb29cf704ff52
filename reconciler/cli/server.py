"""Commands of the GitOps server: serve, and the clients status, logs, files, history, events,
usage and token.

Client commands reach ``--server URL`` (token from ``--token-file`` or
``RECONCILER_SERVER_TOKEN``), else the local server of ``--data-dir`` (its
``<data-dir>/server.json`` and ``<data-dir>/token``), else the current cluster that
``reconcile up`` recorded (see ``reconciler.cli.context``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from reconciler.cli import app

if TYPE_CHECKING:
    from reconciler.cli.remote import Target

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="RECONCILER_DATA_DIR",
        help="State of the server (and of `up`'s agent and repo). Default: for client commands the cluster "
        "`up` last started, else ~/.local/share/reconciler.",
    ),
]


class Output(StrEnum):
    text = "text"
    json = "json"


def data_dir_of(given: Path | None) -> Path:
    from reconciler.agent import default_data_dir

    return (given or default_data_dir()).expanduser().resolve()


def die(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


def _read_file_or_die(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise die(f"{path}: cannot read the {what}: {exc.strerror}") from exc


@app.command("serve")
def serve_command(
    git_url: Annotated[str | None, typer.Argument(help="The desired-state repository (file://, ssh or https).")] = None,
    branch: Annotated[str, typer.Option("--branch", help="Branch to follow.")] = "main",
    path: Annotated[str, typer.Option("--path", help="Folder inside the repository.")] = ".",
    watch: Annotated[
        Path | None, typer.Option("--watch", help="Follow a local folder instead of git (fast edit loop).")
    ] = None,
    watch_refs: Annotated[
        bool,
        typer.Option(
            "--watch-refs",
            help="With a file:// GIT_URL: fetch as soon as its refs change (a commit), not only at sync.interval.",
        ),
    ] = False,
    data_dir: DataDir = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option("--port", help="Port of the server API.")] = 10160,
    store_url: Annotated[
        str | None, typer.Option("--store-url", help="SQLAlchemy URL [default: sqlite:///<data-dir>/reconciler.db].")
    ] = None,
    webhook_secret_file: Annotated[
        Path | None,
        typer.Option("--webhook-secret-file", help="Secret of POST /api/webhook/git (GitHub, GitLab, Gitea)."),
    ] = None,
    agent_token_file: Annotated[
        Path | None, typer.Option("--agent-token-file", help="Token of the agents [default: $RECONCILER_TOKEN].")
    ] = None,
    worker_poll: Annotated[float, typer.Option("--worker-poll", help="Seconds between polls of the agents.")] = 10.0,
    router_port: Annotated[
        int, typer.Option("--router-port", help="Port of the OpenAI-compatible router (0: no router; up uses 10170).")
    ] = 0,
    router_host: Annotated[
        str, typer.Option("--router-host", help="Address of the router (loopback unless API keys are configured).")
    ] = "127.0.0.1",
    server_id: Annotated[
        str | None,
        typer.Option("--id", help="This server's name among those of one store, unique (default: hostname:port)."),
    ] = None,
    lease_renew: Annotated[
        float,
        typer.Option(
            "--lease-renew",
            min=0.2,
            max=60.0,
            help="Seconds between renewals of the leader lease; it lapses after five missed ones.",
        ),
    ] = 2.0,
) -> None:
    """Run the GitOps server: follow a git branch (or a folder), converge the agents, serve status.

    A push is picked up at the Cluster's sync.interval, or at once through the webhook.
    Several servers may share one PostgreSQL store (--store-url postgresql+psycopg://...):
    one leads (changes the cluster), the others serve reads and take over within seconds.
    """
    from reconciler.cli._common import read_token
    from reconciler.errors import SourceUnavailable
    from reconciler.server import ServerConfig, run_server
    from reconciler.server.locks import InUse
    from reconciler.source import DirSource, GitSource

    if (git_url is None) == (watch is None):
        raise die("give either a GIT_URL or --watch DIR")
    data = data_dir_of(data_dir)
    secret = _read_file_or_die(webhook_secret_file, "webhook secret").encode() if webhook_secret_file else None
    try:
        source: DirSource | GitSource = (
            DirSource(watch)
            if watch is not None
            else GitSource(str(git_url), branch, path, data / "source", watch_refs=watch_refs)
        )
    except SourceUnavailable as exc:
        raise die(str(exc)) from exc
    config = ServerConfig(
        data_dir=data,
        host=host,
        port=port,
        store_url=store_url,
        webhook_secret=secret,
        agent_token=read_token(agent_token_file),
        worker_poll=worker_poll,
        server_id=server_id,
        lease_renew=lease_renew,
    )
    hosted, on_state, on_store = None, None, None
    if router_port:
        from reconciler.cli.router import hosted_router

        hosted, on_state, on_store = hosted_router(router_port, router_host)
    try:
        run_server(config, source, on_state=on_state, router=hosted, on_store=on_store)
    except (SourceUnavailable, InUse) as exc:
        raise die(str(exc)) from exc


# --- clients of a running server ---------------------------------------------------------

ServerUrl = Annotated[
    str | None,
    typer.Option(
        "--server", envvar="RECONCILER_SERVER", help="A server's URL, instead of the local cluster (needs a token)."
    ),
]
TokenFile = Annotated[
    Path | None,
    typer.Option(
        "--token-file", help="With --server: its token or a read-only one (default: $RECONCILER_SERVER_TOKEN)."
    ),
]


def target_of(data_dir: Path | None, server: str | None, token_file: Path | None) -> Target:
    from reconciler.cli.remote import ServerUnusable, resolve

    if token_file is not None and not server:
        raise die("--token-file goes with --server (a local cluster's token is read from its data dir)")
    try:
        return resolve(data_dir, server, token_file)
    except ServerUnusable as exc:
        raise die(str(exc)) from exc


def request_json(target: Target, method: str, path: str, **kwargs: Any) -> Any:
    from reconciler.cli.remote import ServerUnusable, call

    try:
        return call(target, method, path, 30.0, **kwargs)
    except ServerUnusable as exc:
        raise die(str(exc)) from exc


def when(stamp: float | None) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S") if stamp else "-"


def _gib(value: int | None) -> str:
    return f"{value / 1024**3:.2f}" if value is not None else "-"


def _pair(claim: int | None, measured: int | None) -> str:
    return f"{_gib(claim)} / {_gib(measured)}"


def _vram(per_gpu: dict[str, int] | None) -> int | None:
    return sum(per_gpu.values()) if per_gpu else None


@app.command("status")
def status_command(
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token_file: TokenFile = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="text or json.")] = Output.text,
) -> None:
    """Models (desired / ready), instances (claim and measured memory), workers, the revision, the last error."""
    from rich.console import Console
    from rich.table import Table

    body = request_json(target_of(data_dir, server, token_file), "GET", "/api/status")
    if output is Output.json:
        typer.echo(json.dumps(body, indent=2))
        return
    console = Console()
    revision = body["revision"] or "none applied yet"
    console.print(f"revision [bold]{revision}[/] (applied {when(body['appliedAt'])}); source {body['source']['url']}")
    if body["routerUrl"]:
        console.print(f"router {body['routerUrl']}")
    if body["error"]:
        console.print(f"[red]{body['error']['reason']}[/] at {body['error']['revision'][:12]}:")
        console.print(body["error"]["message"], markup=False)
    models = Table("model", "ready", "rollout / pending", box=None)
    for m in body["models"]:
        notes = [m["rollout"]["message"]] if m["rollout"] else []
        notes += [f"replica {p['replica']}: {p['reason']}" for p in m["pending"]]
        models.add_row(m["name"], f"{m['ready']}/{m['desired']}", "; ".join(notes))
    console.print(models)
    instances = Table(
        "instance", "worker", "GPUs", "state", "restarts", "pid", "RAM GiB claim / measured",
        "VRAM GiB claim / measured", "reason", box=None,
    )  # fmt: skip
    for i in body["instances"]:
        measured = i["measured"] or {}
        instances.add_row(
            i["id"],
            i["worker"],
            ",".join(map(str, i["gpus"])) or "-",
            i["state"],
            str(i["restarts"]),
            str(i["pid"] or "-"),
            _pair(i["claim"]["ram"], measured.get("ram")),
            _pair(_vram(i["claim"]["vram"]), _vram(measured.get("vram"))),
            i["reason"][:80],
        )
    console.print(instances)
    workers = Table("worker", "state", "free RAM GiB", "instances", box=None)
    for w in body["workers"]:
        workers.add_row(w["name"], w["state"], _gib(w["memoryFree"]), str(w["instances"]))
    console.print(workers)


@app.command("logs")
def logs_command(
    instance: Annotated[str, typer.Argument(help="Instance id, as `reconcile status` shows it.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[int, typer.Option("--tail", help="Lines from the end to start with.")] = 100,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token_file: TokenFile = None,
) -> None:
    """Print an instance's log, read from its agent through the server."""
    import httpx

    target = target_of(data_dir, server, token_file)
    params: dict[str, int] = {"tail": tail, "follow": int(follow)}
    try:
        with httpx.stream(
            "GET", f"{target.url}/api/instances/{instance}/logs", params=params, headers=target.headers, timeout=None
        ) as response:
            if response.status_code != 200:
                response.read()
                raise die(f"{instance}: HTTP {response.status_code}: {response.text}")
            for chunk in response.iter_bytes():
                typer.echo(chunk.decode(errors="replace"), nl=False)
    except httpx.HTTPError as exc:
        raise die(target.unreachable(type(exc).__name__)) from exc


@app.command("files")
def files_command(
    action: Annotated[str | None, typer.Argument(help="`rm` to delete a file.")] = None,
    identifier: Annotated[str | None, typer.Argument(help="File id (first column of the list).")] = None,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token_file: TokenFile = None,
) -> None:
    """List the model files on every Ready worker; `files rm ID` deletes one (refused while in use)."""
    target = target_of(data_dir, server, token_file)
    if action is None:
        for entry in request_json(target, "GET", "/api/files"):
            typer.echo(f"{entry['id']}  {entry['worker']}  {_gib(entry.get('size'))} GiB  {entry['path']}")
        return
    if action != "rm" or identifier is None:
        raise die("usage: reconcile files [rm ID]")
    for entry in request_json(target, "DELETE", f"/api/files/{identifier}")["deleted"]:
        typer.echo(f"deleted {entry['deleted']} on {entry['worker']}")


@app.command("history")
def history_command(
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token_file: TokenFile = None,
    limit: Annotated[int, typer.Option("--limit")] = 20,
) -> None:
    """Revisions tried, newest first, with their outcome and plan summary."""
    for row in request_json(target_of(data_dir, server, token_file), "GET", "/api/history", params={"limit": limit}):
        summary = ", ".join(f"{v} {k}" for k, v in row["summary"].items()) or row["error"].splitlines()[0:1] or ""
        typer.echo(f"{when(row['attemptedAt'])}  {row['revision'][:12]}  {row['status']:<11} {''.join(summary)}")


@app.command("events")
def events_command(
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token_file: TokenFile = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
) -> None:
    """What the server saw and did, oldest first."""
    for event in request_json(target_of(data_dir, server, token_file), "GET", "/api/events", params={"limit": limit}):
        typer.echo(
            f"{when(event['at'])}  {event['type']:<7} {event['reason']:<12} {event['object']}: {event['message']}"
        )
