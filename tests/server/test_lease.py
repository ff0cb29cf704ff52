"""The leader lease and the store on a real PostgreSQL (initdb in a temp dir) and on SQLite:
one holder at a time, strictly growing epochs, release, migrations run once, a newer schema
refused, a store that goes away reported as StoreUnavailable and recovered from."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bench.postgres import Postgres, postgres, unavailable
from reconciler.server.lease import Identity, Lease
from reconciler.server.store import SchemaTooNew, Store, StoreUnavailable, default_url


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    why = unavailable()
    if why:
        pytest.skip(why)
    with postgres() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg: Postgres) -> Iterator[str]:
    """A fresh database per test in the module's cluster."""
    name = f"t{abs(hash(pg.url + str(id(object())))) % 10**9}"
    admin = sa.create_engine(pg.url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as db:
        db.execute(sa.text(f"CREATE DATABASE {name}"))
    yield pg.url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as db:
        db.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lease(store: Store, name: str, clock: Clock | None = None) -> Lease:
    return Lease(store, Identity(name, f"http://{name}"), renew=0.2, **({"clock": clock} if clock else {}))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_one_holder_and_epochs_grow(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = default_url(tmp_path) if backend == "sqlite" else request.getfixturevalue("pg_url")
    a, b = Store(url), Store(url)
    first, second = _lease(a, "a"), _lease(b, "b")
    assert first.step() == "acquired" and first.is_leader()
    assert second.step() == "following" and not second.is_leader()
    assert first.step() == "renewed"
    holder = b.holder()
    assert holder is not None and (holder.id, holder.url, holder.epoch) == ("a", "http://a", first.epoch)
    epoch = first.epoch
    assert epoch is not None
    first.release()  # a clean shutdown: the follower takes over at its next step
    assert not first.is_leader()
    assert second.step() == "acquired" and second.epoch is not None and second.epoch > epoch
    assert first.step() == "following"
    a.close()
    b.close()


def test_a_lapsed_lease_is_taken_and_the_old_holder_learns_it(tmp_path: Path) -> None:
    store = Store(default_url(tmp_path))
    clock = Clock()
    old = _lease(store, "old", clock)
    assert old.step() == "acquired"
    clock.now += old.ttl  # paused past its own trust, by its own clock
    assert not old.is_leader()
    store.engine.dispose()
    with store.engine.begin() as db:  # and past the lease in the store
        db.execute(sa.text("UPDATE leases SET expires = 0"))
    new = _lease(store, "new")
    assert new.step() == "acquired"
    assert old.step() == "lost" and old.epoch is None


def test_migrations_run_once_when_servers_start_together(pg_url: str) -> None:
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", f"from reconciler.server.store import Store; Store({pg_url!r})"],
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in starts]
    assert [p.returncode for p in starts] == [0, 0, 0, 0], errors
    engine = sa.create_engine(pg_url)
    with engine.connect() as db:
        assert db.execute(sa.text("SELECT count(*) FROM leases")).scalar() == 1
    engine.dispose()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    Store(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as db:
        db.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    with pytest.raises(SchemaTooNew, match=r"9999_future.*newer than this reconciler"):
        Store(url)


def test_a_store_that_goes_away_is_unavailable_then_recovers(pg: Postgres, pg_url: str) -> None:
    store = Store(pg_url)
    lease = _lease(store, "a")
    assert lease.step() == "acquired"
    pg.stop()
    try:
        with pytest.raises(StoreUnavailable, match="the store failed"):
            store.add_event("Normal", "X", "o", "m")
        assert lease.step() == "held" and lease.error  # trusted until its own clock runs out
    finally:
        pg.start()
    store.add_event("Normal", "X", "o", "m")  # a fresh connection, no restart
    assert [e["reason"] for e in store.events()] == ["X"]
    store.close()


def test_an_unreachable_url_fails_at_once_with_one_line() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        Store("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert "cannot open the store postgresql+psycopg://nobody@127.0.0.1:1/none" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_identical_events_fold_into_a_count(tmp_path: Path) -> None:
    store = Store(default_url(tmp_path))
    for at in (1.0, 2.0, 3.0):
        store.add_event("Warning", "AgentUnavailable", "worker/a", "cannot reach", now=at)
    store.add_event("Normal", "Ready", "worker/a", "Unreachable -> Ready", now=4.0)
    store.add_event("Warning", "AgentUnavailable", "worker/a", "cannot reach", now=5.0)
    rows = [(e["reason"], e["count"], e["first_at"], e["at"]) for e in store.events()]
    assert rows == [("AgentUnavailable", 3, 1.0, 3.0), ("Ready", 1, 4.0, 4.0), ("AgentUnavailable", 1, 5.0, 5.0)]
