"""`reconcile usage` (requests and tokens per key, model and day) and `reconcile token` (read-only tokens)."""

from __future__ import annotations

import csv
import io
import json
from enum import StrEnum
from typing import Annotated, Any

import typer

from reconciler.cli import app
from reconciler.cli.server import DataDir, ServerUrl, TokenFile, die, request_json, target_of, when

COLUMNS = {"requests": "requests", "promptTokens": "prompt", "completionTokens": "completion", "errors": "errors"}


class UsageGroup(StrEnum):
    key = "key"
    model = "model"
    day = "day"


class UsageOutput(StrEnum):
    text = "text"
    json = "json"
    csv = "csv"


def _day(value: str | None, flag: str) -> str | None:
    from reconciler.server.usage import parse_day

    if value is None:
        return None
    try:
        return parse_day(value, flag)
    except ValueError as exc:
        raise die(str(exc)) from exc


def _print_text(rows: list[dict[str, Any]], groups: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        typer.echo("no usage recorded in that range")
        return
    table = Table(box=None)
    for group in groups:
        table.add_column(group, no_wrap=True)
    for label in COLUMNS.values():
        table.add_column(label, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*(str(row[g]) for g in groups), *(f"{row[c]:,}" for c in COLUMNS))
    totals = [f"{sum(r[c] for r in rows):,}" for c in COLUMNS]
    table.add_row(*(["total"] + [""] * (len(groups) - 1) if groups else []), *totals)
    Console(width=200).print(table)


@app.command("usage")
def usage_command(
    since: Annotated[str | None, typer.Option("--since", help="First UTC day, YYYY-MM-DD (inclusive).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Last UTC day, YYYY-MM-DD (inclusive).")] = None,
    by: Annotated[
        list[UsageGroup] | None, typer.Option("--by", help="key, model and/or day (repeatable; default: all three).")
    ] = None,
    output: Annotated[UsageOutput, typer.Option("--output", "-o", help="text, json or csv.")] = UsageOutput.text,
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token_file: TokenFile = None,
) -> None:
    """Requests, prompt and completion tokens and errors through the router, per API key, model and day.

    Streamed requests and embeddings count; requests without a key count as `anonymous`.
    """
    first, last = _day(since, "--since"), _day(until, "--until")
    groups = [g.value for g in UsageGroup if by is None or g in by]
    params: dict[str, Any] = {"by": groups}
    if first:
        params["since"] = first
    if last:
        params["until"] = last
    rows = request_json(target_of(data_dir, server, token_file), "GET", "/api/usage", params=params)
    if output is UsageOutput.json:
        typer.echo(json.dumps(rows, indent=2))
    elif output is UsageOutput.csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[*groups, *COLUMNS], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        typer.echo(buffer.getvalue(), nl=False)
    else:
        _print_text(rows, groups)


token_app = typer.Typer(help="Read-only API tokens: they read status and observed state, nothing else.")
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name for it (lower case, digits, . _ -), e.g. ci.")],
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token_file: TokenFile = None,
) -> None:
    """Create a read-only token and print it once (only its hash is stored); needs the server token."""
    body = request_json(target_of(data_dir, server, token_file), "POST", f"/api/tokens/{name}")
    typer.echo(body["token"])


@token_app.command("list")
def token_list(data_dir: DataDir = None, server: ServerUrl = None, token_file: TokenFile = None) -> None:
    """The read-only tokens by name (never their values)."""
    for entry in request_json(target_of(data_dir, server, token_file), "GET", "/api/tokens"):
        typer.echo(f"{entry['name']}  {entry['kind']}  created {when(entry['createdAt'])}")


@token_app.command("delete")
def token_delete(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    data_dir: DataDir = None,
    server: ServerUrl = None,
    token_file: TokenFile = None,
) -> None:
    """Revoke a read-only token at once."""
    request_json(target_of(data_dir, server, token_file), "DELETE", f"/api/tokens/{name}")
    typer.echo(f"deleted the token {name}")
