"""The server's state store: SQLAlchemy Core over any URL (SQLite in the data dir by default).

The schema is owned by the Alembic migrations in ``migrations/``, run at open; the tables
below mirror them for queries. What it keeps: revisions (attempted, applied, errors), the
instance assignments fed back into ``plan()``, events, restart counts, router usage, and a
few values (the last generation handed to agents, the leader's last status), and the
leader lease of the servers that share it.

SQLite serves one server; PostgreSQL serves several (``postgresql+psycopg://``). Every public
method raises ``StoreUnavailable`` when the database fails: the caller retries the whole step.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from reconciler.errors import SourceUnavailable, one_line

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant both servers agree on: the key of the advisory lock held while migrating.
MIGRATION_LOCK = 0x7265636F6E63
CONNECT_TIMEOUT = 2  # seconds; an unreachable store fails the start (or a step), not hangs it
P = ParamSpec("P")
R = TypeVar("R")


class StoreUnavailable(SourceUnavailable):
    """The database did not answer or refused a statement: retry the step later."""


class SchemaTooNew(StoreUnavailable):
    """The store was migrated by a newer reconciler; this one must not write to it."""


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
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("first_at", sa.Float, nullable=True),
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
    sa.Column("errors", sa.BigInteger, nullable=False, server_default="0"),
)
meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(256), nullable=False),
    sa.Column("url", sa.String(512), nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)
LEADER = "leader"


@dataclass(frozen=True)
class Assignment:
    instance_id: str
    model: str
    worker: str
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class Holder:
    """Who holds the leader lease, and until when (the database's clock, epoch seconds)."""

    id: str
    url: str
    epoch: int
    expires: float


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'reconciler.db'}"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for any other database, or SQLite in memory)."""
    try:
        parsed = sa.make_url(url)
    except SQLAlchemyError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database)).resolve()


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the newest migration (a no-op when it is there).

    On PostgreSQL an advisory lock held for the transaction makes servers that start together
    migrate one after the other: the second finds the schema at head. A schema newer than
    every migration this code knows is refused before anything is written.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        current = MigrationContext.configure(connection).get_current_revision()
        scripts = ScriptDirectory.from_config(config)
        if current is not None:
            try:
                scripts.get_revision(current)
            except CommandError as exc:
                raise SchemaTooNew(
                    f"the store's schema is at revision {current}, newer than this reconciler knows "
                    f"(newest {scripts.get_current_head()}): upgrade reconciler before serving from it"
                ) from exc
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """Database errors leave the store as StoreUnavailable, with their first line."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"the store failed: {_first_line(exc)}") from exc

    return call


class Store:
    def __init__(self, url: str) -> None:
        try:
            options: dict[str, Any] = {"pool_pre_ping": True}
            if sa.make_url(url).get_backend_name() == "postgresql":
                options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
            self.engine = sa.create_engine(url, **options)
            self.dialect = self.engine.dialect.name
            migrate(self.engine)
        except SchemaTooNew:
            raise
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreUnavailable(f"cannot open the store {_safe(url)}: {_first_line(exc)}") from exc

    def close(self) -> None:
        self.engine.dispose()

    # --- revisions ---------------------------------------------------------------------

    @_translated
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

    @_translated
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

    @_translated
    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as db:
            rows = db.execute(revisions.select().order_by(revisions.c.id.desc()).limit(limit)).mappings().all()
        return [_revision(r) for r in rows]

    @_translated
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

    @_translated
    def assignments(self) -> dict[str, Assignment]:
        with self.engine.connect() as db:
            rows = db.execute(assignments.select()).mappings().all()
        return {
            r["instance_id"]: Assignment(r["instance_id"], r["model"], r["worker"], tuple(json.loads(r["gpus"])))
            for r in rows
        }

    @_translated
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

    @_translated
    def add_event(self, type_: str, reason: str, object_: str, message: str, now: float | None = None) -> None:
        """Record an event; one identical to the object's last event only counts up (as Kubernetes folds them)."""
        stamp = now or time.time()
        with self.engine.begin() as db:
            last = (
                db.execute(events.select().where(events.c.object == object_).order_by(events.c.id.desc()).limit(1))
                .mappings()
                .first()
            )
            if last is not None and (last["type"], last["reason"], last["message"]) == (type_, reason, message):
                db.execute(events.update().where(events.c.id == last["id"]).values(count=events.c.count + 1, at=stamp))
                return
            db.execute(
                events.insert().values(
                    at=stamp, first_at=stamp, count=1, type=type_, reason=reason, object=object_, message=message
                )
            )

    @_translated
    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.engine.connect() as db:
            rows = db.execute(events.select().order_by(events.c.id.desc()).limit(limit)).mappings().all()
        return [dict(r) for r in reversed(rows)]

    @_translated
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

    @_translated
    def restarts(self) -> dict[str, int]:
        with self.engine.connect() as db:
            return {r["instance_id"]: int(r["count"]) for r in db.execute(restarts.select()).mappings()}

    # --- router usage ------------------------------------------------------------------

    @_translated
    def add_usage(
        self,
        key_name: str,
        model: str,
        day: str,
        prompt_tokens: int,
        completion_tokens: int,
        requests: int = 1,
        errors: int = 0,
    ) -> None:
        """Count requests of an API key against a model on a day (``YYYY-MM-DD``, UTC);
        ``errors`` of them were answered with an error status."""
        where = (usage.c.api_key_name == key_name) & (usage.c.model == model) & (usage.c.day == day)
        with self.engine.begin() as db:
            updated = db.execute(
                usage.update()
                .where(where)
                .values(
                    prompt_tokens=usage.c.prompt_tokens + prompt_tokens,
                    completion_tokens=usage.c.completion_tokens + completion_tokens,
                    requests=usage.c.requests + requests,
                    errors=usage.c.errors + errors,
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
                        errors=errors,
                    )
                )

    @_translated
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

    @_translated
    def get(self, key: str) -> str | None:
        with self.engine.connect() as db:
            return db.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar()

    @_translated
    def put(self, key: str, value: str) -> None:
        with self.engine.begin() as db:
            if db.execute(meta.update().where(meta.c.key == key).values(value=value)).rowcount == 0:
                db.execute(meta.insert().values(key=key, value=value))

    @_translated
    def next_generation(self, now_ns: int | None = None) -> int:
        """A generation above every one handed out before, even across restarts and clock steps."""
        last = int(self.get("generation") or 0)
        generation = max(last + 1, now_ns or time.time_ns())
        self.put("generation", str(generation))
        return generation

    # --- the leader lease ------------------------------------------------------------------

    def _now(self, db: sa.Connection) -> float:
        """The database's clock: every server of one store measures the lease by the same one."""
        if self.dialect == "postgresql":
            return float(db.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
        return time.time()

    @_translated
    def holder(self) -> Holder | None:
        """The leader while its lease runs; None when nobody holds it."""
        with self.engine.connect() as db:
            now = self._now(db)
            row = db.execute(leases.select().where(leases.c.name == LEADER)).mappings().first()
        if row is None or not row["holder"] or row["expires"] <= now:
            return None
        return Holder(row["holder"], row["url"], int(row["epoch"]), float(row["expires"]))

    @_translated
    def acquire(self, me: str, url: str, ttl: float) -> int | None:
        """Take the lease when it has lapsed (or was ours); returns the new, strictly higher epoch.

        A compare-and-set on the epoch read: of two servers that race, one update matches.
        The epoch is at least the database's clock in seconds, so it also grows past the
        epochs of another store the agents served before (SQLite, then PostgreSQL).
        """
        with self.engine.begin() as db:
            now = self._now(db)
            row = db.execute(leases.select().where(leases.c.name == LEADER)).mappings().one()
            if row["holder"] and row["holder"] != me and row["expires"] > now:
                return None
            epoch = max(int(row["epoch"]) + 1, int(now))
            taken = db.execute(
                leases.update()
                .where((leases.c.name == LEADER) & (leases.c.epoch == row["epoch"]))
                .values(holder=me, url=url, epoch=epoch, expires=now + ttl)
            )
            return epoch if taken.rowcount == 1 else None

    @_translated
    def renew(self, me: str, epoch: int, ttl: float) -> bool:
        """Extend our lease; False when it is no longer ours (it lapsed and another took it)."""
        with self.engine.begin() as db:
            now = self._now(db)
            renewed = db.execute(
                leases.update()
                .where((leases.c.name == LEADER) & (leases.c.holder == me) & (leases.c.epoch == epoch))
                .values(expires=now + ttl)
            )
            return renewed.rowcount == 1

    @_translated
    def release(self, me: str, epoch: int) -> None:
        """End our lease now, so a follower takes over at its next try rather than after the TTL."""
        with self.engine.begin() as db:
            db.execute(
                leases.update()
                .where((leases.c.name == LEADER) & (leases.c.holder == me) & (leases.c.epoch == epoch))
                .values(expires=0.0)
            )

    @_translated
    def interrupt_attempts(self, now: float | None = None) -> int:
        """A new leader closes the revisions its predecessor left Reconciling; returns how many."""
        with self.engine.begin() as db:
            done = db.execute(
                revisions.update()
                .where(revisions.c.status == "Reconciling")
                .values(status="Interrupted", error=f"the leader changed at {now or time.time():.0f}")
            )
            return int(done.rowcount)


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


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return one_line(text.splitlines()[0]) if text else type(exc).__name__


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return "(unparsable URL)"
