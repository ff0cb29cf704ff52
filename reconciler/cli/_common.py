"""Helpers shared by several commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from reconciler.errors import SpecInvalid
    from reconciler.observe import ObservedState
    from reconciler.plan import Facts
    from reconciler.spec import Desired


def fail(diagnostics: SpecInvalid) -> typer.Exit:
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
    from reconciler.estimate import gather_cached
    from reconciler.plan import Facts

    found, failed = gather_cached(desired.models, observed, catalogs, desired.cluster.spec.huggingface.endpoint)
    return Facts(found, failed)
