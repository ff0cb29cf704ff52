"""The ``reconcile`` command line.

One module per group of commands. Each imports what only it needs inside the command,
so `reconcile --version` and `validate` start without FastAPI, httpx or the planner.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from reconciler import __version__

app = typer.Typer(
    name="reconcile",
    help="GitOps for LLM inference clusters: validate manifests, plan and apply them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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


def run() -> None:
    """The console entry point: a user mistake exits 1, a bug in reconciler exits 3 with one line."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # anything not turned into a clean error is our bug, not the user's
        print(
            f"reconcile: internal error (a bug in reconciler {__version__}, please report it): "
            f"{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        sys.exit(3)


# Registering the commands; each module defers its heavy imports to the command body.
from reconciler.cli import cluster, local, manifests, router, server, usage  # noqa: E402

__all__ = ["app", "cluster", "local", "manifests", "router", "run", "server", "usage"]
