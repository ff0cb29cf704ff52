"""The server's state store: SQLAlchemy Core over any URL (SQLite in the data dir by default).

The schema is owned by the Alembic migrations in ``migrations/``, run at open; the tables
below mirror them for queries. What it keeps: revisions (attempted, applied, errors), the
instance assignments fed back into ``plan()``, events, restart counts, router usage, and a
few values (the last generation handed to agents).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.exc import SQLAlchemyError

from reconciler.errors import SourceUnavailable

MIGRATIONS = Path(__file__).parent / "migrations"

metadata = sa.MetaData()
revisions = sa.Table(
    "revisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("revision", sa.String(128), nullable=False),
    sa.Column("attempted_at", sa.Float, nullable=False),
    sa.Column("applied_at", sa.Float, nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("diagnostics", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
)
assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("instance_id", sa.String(256), primary_key=True),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("worker", sa.String(256), nullable=False),
    sa.Column("gpus", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("object", sa.String(256), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)
restarts = sa.Table(
    "restarts",
    metadata,
    sa.Column("instance_id", sa.String(256), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
usage = sa.Table(
    "usage",
    metadata,
    sa.Column("api_key_name", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(128), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
)
meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class Assignment:
    instance_id: str
    model: str
    worker: str
    gpus: tuple[int, ...] = ()


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'reconciler.db'}"


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is there)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


class Store:
    def __init__(self, url: str) -> None:
        try:
            self.engine = sa.create_engine(url)
            migrate(self.engine)
        except (SQLAlchemyError, ImportError) as exc:
            raise SourceUnavailable(f"cannot open the store {_safe(url)}: {exc}") from exc

    def close(self) -> None:
        self.engine.dispose()

    # --- revisions ---------------------------------------------------------------------

    def attempt(self, revision: str, now: float | None = None) -> int:
        """Record that a revision is being tried; returns the row to finish."""
        with self.engine.begin() as db:
            result = db.execute(
                revisions.insert().values(
                    revision=revision,
                    attempted_at=now or time.time(),
                    status="Reconciling",
                    error="",
                    diagnostics="[]",
                    summary="{}",
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def finish(
        self,
        row: int,
        status: str,
        *,
        error: str = "",
        diagnostics: Iterable[Mapping[str, object]] = (),
        summary: Mapping[str, int] | None = None,
        applied_at: float | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status, "error": error, "diagnostics": json.dumps(list(diagnostics))}
        if summary is not None:
            values["summary"] = json.dumps(dict(summary))
        if applied_at is not None:
            values["applied_at"] = applied_at
        with self.engine.begin() as db:
            db.execute(revisions.update().where(revisions.c.id == row).values(**values))

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as db:
            rows = db.execute(revisions.select().order_by(revisions.c.id.desc()).limit(limit)).mappings().all()
        return [_revision(r) for r in rows]

    def applied(self) -> dict[str, Any] | None:
        """The last revision applied with success, if any."""
        with self.engine.connect() as db:
            row = (
                db.execute(
                    revisions.select()
                    .where(revisions.c.applied_at.is_not(None))
                    .order_by(revisions.c.applied_at.desc(), revisions.c.id.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return _revision(row) if row else None

    # --- assignments -------------------------------------------------------------------

    def assignments(self) -> dict[str, Assignment]:
        with self.engine.connect() as db:
            rows = db.execute(assignments.select()).mappings().all()
        return {
            r["instance_id"]: Assignment(r["instance_id"], r["model"], r["worker"], tuple(json.loads(r["gpus"])))
            for r in rows
        }

    def set_assignments(self, current: Iterable[Assignment], now: float | None = None) -> None:
        """Replace every assignment with ``current`` (the instances the last apply placed)."""
        stamp = now or time.time()
        rows = [
            {
                "instance_id": a.instance_id,
                "model": a.model,
                "worker": a.worker,
                "gpus": json.dumps(list(a.gpus)),
                "updated_at": stamp,
            }
            for a in current
        ]
        with self.engine.begin() as db:
            db.execute(assignments.delete())
            if rows:
                db.execute(assignments.insert(), rows)

    # --- events and restarts -----------------------------------------------------------

    def add_event(self, type_: str, reason: str, object_: str, message: str, now: float | None = None) -> None:
        with self.engine.begin() as db:
            db.execute(
                events.insert().values(
                    at=now or time.time(), type=type_, reason=reason, object=object_, message=message
                )
            )

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as db:
            rows = db.execute(events.select().order_by(events.c.id.desc()).limit(limit)).mappings().all()
        return [dict(r) for r in reversed(rows)]

    def set_restarts(self, counts: Mapping[str, int], now: float | None = None) -> None:
        """Keep the highest restart count seen per instance (an agent's count resets once Running)."""
        known = self.restarts()
        changed = {k: v for k, v in counts.items() if known.get(k) != v}
        if not changed:
            return
        stamp = now or time.time()
        with self.engine.begin() as db:
            for instance_id, count in changed.items():
                if instance_id in known:
                    db.execute(
                        restarts.update()
                        .where(restarts.c.instance_id == instance_id)
                        .values(count=count, updated_at=stamp)
                    )
                else:
                    db.execute(restarts.insert().values(instance_id=instance_id, count=count, updated_at=stamp))

    def restarts(self) -> dict[str, int]:
        with self.engine.connect() as db:
            return {r["instance_id"]: int(r["count"]) for r in db.execute(restarts.select()).mappings()}

    # --- router usage ------------------------------------------------------------------

    def add_usage(
        self, key_name: str, model: str, day: str, prompt_tokens: int, completion_tokens: int, requests: int = 1
    ) -> None:
        """Count ``requests`` requests of an API key against a model on a day (``YYYY-MM-DD``, UTC)."""
        where = (usage.c.api_key_name == key_name) & (usage.c.model == model) & (usage.c.day == day)
        with self.engine.begin() as db:
            updated = db.execute(
                usage.update()
                .where(where)
                .values(
                    prompt_tokens=usage.c.prompt_tokens + prompt_tokens,
                    completion_tokens=usage.c.completion_tokens + completion_tokens,
                    requests=usage.c.requests + requests,
                )
            )
            if updated.rowcount == 0:
                db.execute(
                    usage.insert().values(
                        api_key_name=key_name,
                        model=model,
                        day=day,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        requests=requests,
                    )
                )

    def usage(
        self, key_name: str | None = None, model: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[dict[str, Any]]:
        """Usage rows, filtered; days are inclusive ``YYYY-MM-DD`` bounds."""
        query = usage.select().order_by(usage.c.day, usage.c.api_key_name, usage.c.model)
        if key_name is not None:
            query = query.where(usage.c.api_key_name == key_name)
        if model is not None:
            query = query.where(usage.c.model == model)
        if since is not None:
            query = query.where(usage.c.day >= since)
        if until is not None:
            query = query.where(usage.c.day <= until)
        with self.engine.connect() as db:
            return [dict(r) for r in db.execute(query).mappings()]

    # --- values ------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        with self.engine.connect() as db:
            return db.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar()

    def put(self, key: str, value: str) -> None:
        with self.engine.begin() as db:
            if db.execute(meta.update().where(meta.c.key == key).values(value=value)).rowcount == 0:
                db.execute(meta.insert().values(key=key, value=value))

    def next_generation(self, now_ns: int | None = None) -> int:
        """A generation above every one handed out before, even across restarts and clock steps."""
        last = int(self.get("generation") or 0)
        generation = max(last + 1, now_ns or time.time_ns())
        self.put("generation", str(generation))
        return generation


def _revision(row: sa.RowMapping) -> dict[str, Any]:
    return {
        "revision": row["revision"],
        "attemptedAt": row["attempted_at"],
        "appliedAt": row["applied_at"],
        "status": row["status"],
        "error": row["error"],
        "diagnostics": json.loads(row["diagnostics"]),
        "summary": json.loads(row["summary"]),
    }


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return "(unparsable URL)"
