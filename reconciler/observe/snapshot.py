"""Observed-state snapshots: a YAML or JSON list of workers, as the agents report them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from reconciler.errors import Diagnostic, SpecInvalid
from reconciler.observe.state import Worker
from reconciler.spec.loader import Document, plain, read_yaml_file, value_error_message

_WORKERS = TypeAdapter(list[Worker])


@dataclass(frozen=True)
class ObservedState:
    """Every worker the agents reported, in name order."""

    workers: tuple[Worker, ...] = ()

    def worker(self, name: str) -> Worker | None:
        return next((w for w in self.workers if w.name == name), None)

    @classmethod
    def of(cls, workers: Sequence[Worker]) -> ObservedState:
        return cls(tuple(sorted(workers, key=lambda w: w.name)))


def load_snapshot(path: str | Path) -> ObservedState:
    """Read a snapshot file; raises SpecInvalid with file:line:col diagnostics."""
    name = str(path)
    documents = read_yaml_file(path, "snapshot")
    if len(documents) != 1 or not isinstance(documents[0].node, (CommentedSeq, CommentedMap)):
        raise SpecInvalid([Diagnostic(name, 1, 1, None, None, "a snapshot is one YAML/JSON list of workers")])
    document = documents[0]
    data = plain(document.node)
    if isinstance(data, dict):
        data = data.get("workers", [data])
    try:
        workers = _WORKERS.validate_python(data)
    except ValidationError as exc:
        raise SpecInvalid(
            [
                _diagnostic(
                    document,
                    error["loc"],
                    value_error_message(error) if error["type"] == "value_error" else error["msg"],
                )
                for error in exc.errors()
            ]
        ) from exc
    names = [w.name for w in workers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecInvalid([Diagnostic(name, 1, 1, None, None, f"worker names repeat: {', '.join(duplicates)}")])
    return ObservedState.of(workers)


def _diagnostic(document: Document, loc: Sequence[str | int], message: str) -> Diagnostic:
    node = document.node
    if isinstance(node, CommentedMap) and "workers" in node:
        loc = ["workers", *loc]
    line, col, field = document.position(loc)
    return Diagnostic(document.path, line, col, "snapshot", field or None, message[0].lower() + message[1:])
