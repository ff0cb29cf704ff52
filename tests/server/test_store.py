"""The store against a real SQLite file: migrations, revisions, assignments, usage."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from reconciler.server.store import Assignment, Store, default_url


def test_migrations_create_every_table_and_rerun_cleanly(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    Store(url).close()
    store = Store(url)  # a second open finds the schema at head
    names = set(sa.inspect(store.engine).get_table_names())
    assert {"revisions", "assignments", "events", "restarts", "usage", "meta", "alembic_version"} <= names


def test_revisions_applied_only_on_success(tmp_path: Path) -> None:
    store = Store(default_url(tmp_path))
    good = store.attempt("aaa", now=1.0)
    store.finish(good, "Applied", summary={"create": 1}, applied_at=2.0)
    bad = store.attempt("bbb", now=3.0)
    store.finish(bad, "Invalid", error="m.yaml:3:5: bad", diagnostics=[{"file": "m.yaml", "line": 3}])
    applied = store.applied()
    assert applied is not None and applied["revision"] == "aaa"
    history = store.history()
    assert [h["revision"] for h in history] == ["bbb", "aaa"]
    assert history[0]["diagnostics"] == [{"file": "m.yaml", "line": 3}]


def test_assignments_survive_reopen(tmp_path: Path) -> None:
    url = default_url(tmp_path)
    store = Store(url)
    store.set_assignments([Assignment("gemma-0", "gemma", "a", (0, 1))])
    store.set_assignments([Assignment("gemma-0", "gemma", "b", ()), Assignment("qwen-0", "qwen", "a", (1,))])
    again = Store(url)
    assert again.assignments() == {
        "gemma-0": Assignment("gemma-0", "gemma", "b", ()),
        "qwen-0": Assignment("qwen-0", "qwen", "a", (1,)),
    }


def test_usage_accumulates_per_key_model_day(tmp_path: Path) -> None:
    store = Store(default_url(tmp_path))
    store.add_usage("ci", "gemma", "2026-01-01", 10, 5)
    store.add_usage("ci", "gemma", "2026-01-01", 1, 2)
    store.add_usage("ci", "gemma", "2026-01-02", 7, 7)
    store.add_usage("web", "qwen", "2026-01-02", 3, 3)
    rows = store.usage(key_name="ci", since="2026-01-01", until="2026-01-01")
    assert rows == [
        {
            "api_key_name": "ci",
            "model": "gemma",
            "day": "2026-01-01",
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "requests": 2,
            "errors": 0,
        }
    ]
    assert len(store.usage()) == 3
    assert [r["model"] for r in store.usage(model="qwen")] == ["qwen"]


def test_generation_only_grows(tmp_path: Path) -> None:
    store = Store(default_url(tmp_path))
    first = store.next_generation(now_ns=1000)
    assert store.next_generation(now_ns=10) == first + 1  # a clock step back still moves forward
    assert store.next_generation(now_ns=5000) == 5000


def test_events_and_restarts(tmp_path: Path) -> None:
    store = Store(default_url(tmp_path))
    store.add_event("Warning", "Invalid", "revision/abc", "m.yaml:1:1: bad", now=1.0)
    store.add_event("Normal", "Applied", "revision/def", "1 to create", now=2.0)
    assert [e["reason"] for e in store.events()] == ["Invalid", "Applied"]
    store.set_restarts({"a-0": 2})
    store.set_restarts({"a-0": 3, "b-0": 0})
    assert store.restarts() == {"a-0": 3, "b-0": 0}
