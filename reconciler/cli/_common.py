"""Helpers shared by several commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from reconciler.errors import SpecInvalid
    from reconciler.estimate import Facts
    from reconciler.observe import ObservedState
    from reconciler.spec import Agent, Desired


AGENT_HELP = "An agent URL the token may go to (repeatable; also RECONCILER_AGENTS, comma-separated)."


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
    """The models' facts for one plan: catalogs, the disk cache, local files, agents' reports, the hubs."""
    from reconciler.estimate import FactBook, cache_file

    book = FactBook(catalogs, disk=cache_file())
    return book.gather(desired.models, observed, desired.cluster.spec.huggingface.endpoint)


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def observe_named(agents: Sequence[Agent], token: str | None, named: Sequence[str]) -> ObservedState:
    """Every agent's state; the token goes only to the agents this machine names.

    A manifest is not trusted to choose where a credential goes (a pull request can change
    it): an agent URL gets the token only when ``--agent`` or ``RECONCILER_AGENTS``
    (comma-separated URLs) names it too. The others are asked without it.
    """
    from reconciler.observe import ObservedState, observe_agents

    confirmed = {_origin(u) for u in [*named, *os.environ.get("RECONCILER_AGENTS", "").split(",")] if u.strip()}
    trusted = [a for a in agents if _origin(a.url) in confirmed]
    others = [a for a in agents if _origin(a.url) not in confirmed]
    if token is not None:
        for agent in others:
            typer.echo(
                f"reconcile: {agent.name}: {agent.url} is not named by --agent or RECONCILER_AGENTS; "
                "asked without the token",
                err=True,
            )
    found = {w.name: w for part in (observe_agents(trusted, token), observe_agents(others, None)) for w in part.workers}
    return ObservedState.of([found[a.name] for a in agents])
