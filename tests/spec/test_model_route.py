"""The ModelRoute kind and Model.spec.routing: references resolve, errors carry file:line:col."""

from __future__ import annotations

from reconciler.spec import validate_paths

MODELS = """
apiVersion: reconciler/v1
kind: Model
metadata: {name: big}
spec:
  source: {localPath: /models/big.gguf}
  routing: {strategy: prefix-hash, prefixChars: 512}
---
apiVersion: reconciler/v1
kind: Model
metadata: {name: small}
spec:
  source: {localPath: /models/small.gguf}
"""

ROUTE = """
---
apiVersion: reconciler/v1
kind: ModelRoute
metadata: {name: chat}
spec:
  targets:
    - {model: big, weight: 90}
    - {model: %s, weight: 10}
  fallback: [%s]
"""


def test_valid_route_loads_into_desired(write):
    report = validate_paths([write(MODELS + ROUTE % ("small", "small"))])
    assert report.valid, [str(d) for d in report.diagnostics]
    (desired,) = report.states
    (route,) = desired.routes
    assert [(t.model, t.weight) for t in route.spec.targets] == [("big", 90), ("small", 10)]
    assert route.spec.fallback == ["small"]
    big = desired.model("big")
    assert big is not None and big.spec.routing.strategy == "prefix-hash" and big.spec.routing.prefix_chars == 512


def test_unknown_target_and_fallback_are_file_line_errors(errors):
    found = errors(MODELS + ROUTE % ("nope", "gone"))
    assert [(d.line, d.field) for d in found] == [(21, "spec.targets[1].model"), (22, "spec.fallback[0]")]
    assert all(d.resource == "ModelRoute/chat" for d in found)
    assert "no Model named 'nope' (known: big, small)" in found[0].message
    assert "no Model named 'gone'" in found[1].message


def test_route_may_not_shadow_a_model(errors):
    text = MODELS + (ROUTE % ("small", "small")).replace("name: chat", "name: big")
    (found,) = errors(text)
    assert found.field == "metadata.name" and "may not shadow" in found.message


def test_all_zero_weights_refused(errors):
    text = MODELS + (ROUTE % ("small", "small")).replace("weight: 90", "weight: 0").replace("weight: 10", "weight: 0")
    (found,) = errors(text)
    assert found.field == "spec.targets" and "weight above 0" in found.message


def test_unknown_strategy_refused(errors):
    (found,) = errors(MODELS.replace("prefix-hash", "random"))
    assert found.field == "spec.routing.strategy"
