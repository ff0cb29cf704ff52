"""Properties of the loader: valid manifests round-trip; mutated ones fail cleanly."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from reconciler.spec import KINDS, validate_paths

from .strategies import desired_documents

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def dump(documents: list[dict[str, Any]]) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    stream = io.StringIO()
    yaml.dump_all(documents, stream)
    return stream.getvalue()


def validate_text(data: bytes) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.yaml"
        path.write_bytes(data)
        return validate_paths([path])


@PROPERTY_SETTINGS
@given(desired_documents())
def test_valid_manifests_round_trip(documents):
    report = validate_text(dump(documents).encode())
    assert report.valid, [str(d) for d in report.diagnostics]
    [state] = report.states if documents else [None]
    if state is None:
        return
    loaded = [
        *([state.cluster] if any(d["kind"] == "Cluster" for d in documents) else []),
        *state.selectors,
        *state.models,
    ]
    expected = sorted(
        (KINDS[d["kind"]].model_validate(d) for d in documents),
        key=lambda r: (["Cluster", "WorkerSelector", "Model"].index(r.kind), r.metadata.name),
    )
    assert loaded == expected
    again = [r.model_dump(by_alias=True, mode="json") for r in loaded]
    [reloaded] = validate_text(dump(again).encode()).states
    assert (reloaded.cluster, reloaded.selectors, reloaded.models) == (state.cluster, state.selectors, state.models)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_paths(value, (*prefix, index)))
    return found


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


@PROPERTY_SETTINGS
@given(desired_documents().filter(bool), st.data())
def test_unknown_key_or_wrong_type_is_reported(documents, data):
    doc = data.draw(st.sampled_from(documents))
    target = data.draw(st.sampled_from([p for p in _paths(doc) if p]))
    parent, key = _get(doc, target[:-1]), target[-1]
    if isinstance(_get(doc, target), dict):
        _get(doc, target)["zzUnknown"] = 1
    else:
        parent[key] = {"zzUnknown": 1}
    report = validate_text(dump(documents).encode())
    assert not report.valid
    assert all(d.line >= 1 and d.col >= 1 for d in report.diagnostics)


def _mutations() -> st.SearchStrategy[Any]:
    return st.sampled_from(
        ["truncate", "empty", "duplicate-line", "huge-int", "huge-string", "bytes", "tabs", "deep", "alias-bomb"]
    )


@PROPERTY_SETTINGS
@given(desired_documents().filter(bool), _mutations(), st.data())
def test_mutated_text_never_raises(documents, mutation, data):
    text = dump(documents)
    raw = text.encode()
    if mutation == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif mutation == "empty":
        raw = b""
    elif mutation == "duplicate-line":
        lines = text.splitlines(keepends=True)
        index = data.draw(st.integers(0, len(lines) - 1))
        raw = "".join([*lines[: index + 1], lines[index], *lines[index + 1 :]]).encode()
    elif mutation == "huge-int":
        raw = (
            text.replace("reconciler/v1\n", "reconciler/v1\n", 1).encode()
            + b"\n---\n"
            + dump([{**documents[-1], "metadata": {"name": "huge"}, "spec": {"replicas": 10**40}}]).encode()
        )
    elif mutation == "huge-string":
        raw = raw + b"\n---\n" + dump([{**documents[-1], "metadata": {"name": "x" * 100_000}}]).encode()
    elif mutation == "bytes":
        position = data.draw(st.integers(0, len(raw)))
        raw = raw[:position] + data.draw(st.binary(min_size=1, max_size=8)) + raw[position:]
    elif mutation == "tabs":
        raw = text.replace("  ", "\t").encode()
    elif mutation == "deep":
        raw = b"a: " + b"[" * 5000 + b"]" * 5000
    elif mutation == "alias-bomb":
        raw = b"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n"
    report = validate_text(raw)
    for diagnostic in report.diagnostics:
        assert diagnostic.line >= 1 and diagnostic.col >= 1 and diagnostic.message
