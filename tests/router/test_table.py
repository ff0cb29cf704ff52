"""build_table: Running main instances of desired models, routing settings, routes and key hashes."""

from __future__ import annotations

from reconciler.observe import ObservedInstance, ObservedState, Worker
from reconciler.router import Endpoint, RouteEntry, build_table
from reconciler.spec import validate_paths

MANIFESTS = """
apiVersion: reconciler/v1
kind: Cluster
metadata: {name: c}
spec:
  router:
    apiKeys: [{name: ci, sha256: "%s"}]
---
apiVersion: reconciler/v1
kind: Model
metadata: {name: chat}
spec:
  source: {localPath: /m/chat.gguf}
  routing: {strategy: prefix-hash, prefixChars: 100, sessionHeader: X-User}
---
apiVersion: reconciler/v1
kind: Model
metadata: {name: embed}
spec:
  source: {localPath: /m/embed.gguf}
  genericProxy: true
---
apiVersion: reconciler/v1
kind: ModelRoute
metadata: {name: default}
spec:
  targets: [{model: chat, weight: 3}, {model: embed}]
  fallback: [embed]
""" % ("ab" * 32)


def instance(model: str, port: int, state: str = "Running", role: str = "main") -> ObservedInstance:
    return ObservedInstance(
        id=f"{model}-{port}", model=model, backend="llama-cpp", argv=[], port=port, state=state, role=role
    )


def test_table_from_desired_and_observed(write):
    (desired,) = validate_paths([write(MANIFESTS)]).states
    observed = ObservedState.of(
        [
            Worker(
                name="w1",
                ip="10.0.0.1",
                memory_total=1,
                instances=[
                    instance("chat", 40000),
                    instance("chat", 40001, state="Starting"),
                    instance("chat", 40002, role="rpc-server"),
                    instance("retired", 40003),
                ],
            ),
            Worker(name="w2", ip="10.0.0.2", memory_total=1, instances=[instance("chat", 40000)]),
            Worker(name="w3", ip="10.0.0.3", memory_total=1, state="Unreachable", instances=[instance("embed", 1)]),
        ]
    )
    table = build_table(desired, observed)
    chat = table.models["chat"]
    assert chat.endpoints == (
        Endpoint("chat-40000", "http://10.0.0.1:40000", "/v1/models"),
        Endpoint("chat-40000", "http://10.0.0.2:40000", "/v1/models"),
    )
    assert (chat.strategy, chat.prefix_chars, chat.session_header, chat.generic_proxy) == (
        "prefix-hash",
        100,
        "x-user",
        False,
    )
    assert table.models["embed"].endpoints == () and table.models["embed"].generic_proxy
    assert "retired" not in table.models
    assert table.routes == {"default": RouteEntry("default", (("chat", 3), ("embed", 1)), ("embed",))}
    assert table.api_keys == {"ab" * 32: "ci"}
    assert table.names() == ["chat", "default"]
    assert table.knows("embed") and not table.knows("retired")
