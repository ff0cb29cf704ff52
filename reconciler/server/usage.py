"""Usage per API key, model and day, read from the store's ``usage`` table.

The router writes the table (one row per key, model and UTC day); this module only sums it,
grouped by whichever of key, model and day the caller asks for.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

import sqlalchemy as sa

Group = Literal["key", "model", "day"]
GROUPS: tuple[Group, ...] = ("key", "model", "day")
ANONYMOUS = "anonymous"
# What routers without keys recorded before the name was spelled out.
_UNNAMED = ("-", "")
COUNTERS = ("requests", "promptTokens", "completionTokens", "errors")
DATE_FORMAT_HELP = "YYYY-MM-DD (a UTC day, e.g. 2026-01-31)"


def parse_day(value: str, what: str) -> str:
    """``value`` as an ISO day; ValueError naming ``what`` and the accepted format."""
    try:
        if len(value) == 10:
            return date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise ValueError(f"{what}: {value!r} is not a date; use {DATE_FORMAT_HELP}")


def query_usage(
    engine: sa.Engine, by: tuple[Group, ...] = GROUPS, since: str | None = None, until: str | None = None
) -> list[dict[str, Any]]:
    """Summed counters per group, ordered by the group columns; days are inclusive bounds."""
    table = sa.Table("usage", sa.MetaData(), autoload_with=engine)
    key = sa.case((table.c.api_key_name.in_(_UNNAMED), ANONYMOUS), else_=table.c.api_key_name)
    columns = {"key": key, "model": table.c.model, "day": table.c.day}
    errors = sa.func.sum(table.c.errors) if "errors" in table.c else sa.literal(0)
    grouped = [columns[g].label(g) for g in by]
    query = sa.select(
        *grouped,
        sa.func.sum(table.c.requests).label("requests"),
        sa.func.sum(table.c.prompt_tokens).label("promptTokens"),
        sa.func.sum(table.c.completion_tokens).label("completionTokens"),
        errors.label("errors"),
    )
    if since is not None:
        query = query.where(table.c.day >= since)
    if until is not None:
        query = query.where(table.c.day <= until)
    if grouped:
        query = query.group_by(*(columns[g] for g in by)).order_by(*(columns[g] for g in by))
    with engine.connect() as db:
        rows = db.execute(query).mappings().all()
    return [
        {**{g: row[g] for g in by}, **{c: int(row[c] or 0) for c in COUNTERS}}
        for row in rows
        if row["requests"] is not None
    ]
