"""The router as a plain ASGI app: authenticate, pick an instance, stream the answer through.

A plain ASGI callable rather than a framework app: the router adds its overhead to every
request, and routing a dozen fixed paths needs no framework. Instances are reached through
``h1``, a keep-alive HTTP/1.1 client a third the CPU cost of aiohttp's (see docs/router.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import quote

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reconciler.router.balance import Balancer
from reconciler.router.h1 import Pool, UpstreamError
from reconciler.router.membership import Key, Membership, key_of
from reconciler.router.metrics import RouterMetrics
from reconciler.router.probe import probe_forever
from reconciler.router.relay import Relay, StreamBroken
from reconciler.router.requests import TooDeep, error_body, form_model, json_body, key_name, query_model
from reconciler.router.table import Endpoint, ModelEntry, RoutingTable
from reconciler.router.types import Receive, Scope, Send
from reconciler.router.usage import ANONYMOUS, UsageBuffer, UsageRecorder

OPENAI_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/rerank",
        "/v1/audio/speech",
        "/v1/audio/transcriptions",
        "/v1/images/generations",
        "/v1/responses",
    }
)
USAGE_STREAMS = frozenset({"/v1/chat/completions", "/v1/completions"})  # the paths with stream_options
PROXY_PREFIX = "/model/proxy/"
DROPPED_REQUEST_HEADERS = frozenset(
    {"host", "authorization", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
    | {"content-length", "proxy-authorization", "x-model", "expect"}  # the body is read whole: no 100-continue
)
PATH_SAFE = "/:@!$&'()*+,;=-._~"  # kept as they are when the path is encoded again
RETRY_STATUSES = frozenset({502, 503})
JSON = [(b"content-type", b"application/json")]
MAX_BODY_BYTES = 32 * 1024 * 1024


class Refusal(Exception):
    """An answer the router gives itself, in OpenAI's error shape."""

    def __init__(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


class Router:
    """The ASGI app. ``update_table`` may be called from any thread; requests see whole tables.

    ``table`` holds only the instances that pass their health checks (``membership``); the
    table as the server sent it is ``listed``. Each instance has its own connection pool,
    closed once the instance has left the table and its last request is done, so a draining
    instance sees its connections go.
    """

    def __init__(
        self,
        usage: UsageRecorder | None = None,
        *,
        timeout_s: float = 1800.0,
        connect_timeout_s: float = 5.0,
        cooldown_s: float = 10.0,
        max_inflight_per_instance: int = 256,
        max_body_bytes: int = MAX_BODY_BYTES,
        allow_anonymous: bool = False,
        probe_interval_s: float | None = None,
        health: Callable[[], dict[str, object]] | None = None,
        companions: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
        metrics: RouterMetrics | None = None,
        first_table_wait_s: float = 0.0,
    ) -> None:
        self.table = RoutingTable()
        self.tabled = False  # a table arrived (from a server or the kept file)
        self.first_table_wait_s = first_table_wait_s
        self.listed = RoutingTable()
        self._listed_keys: frozenset[Key] = frozenset()
        self.membership = Membership()
        self._seen: RoutingTable | None = None
        self.balancer = Balancer(cooldown_s=cooldown_s)
        self.usage = UsageBuffer(usage)
        self.metrics = metrics or RouterMetrics()
        self.relay = Relay(self.metrics, self.usage)
        self.max_inflight_per_instance = max_inflight_per_instance
        self.max_body_bytes = max_body_bytes
        self.allow_anonymous = allow_anonymous
        self.probe_interval_s = probe_interval_s
        self.health = health
        self.companions = companions  # more work to run on the router's loop (the table watch)
        self.connect_timeout_s, self.timeout_s = connect_timeout_s, timeout_s
        # Per member (id, URL, spec hash: a replacement on the same port is another member):
        self._pools: dict[Key, Pool] = {}  # its connection pool
        self._open: dict[Key, int] = {}  # its requests in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False

    def update_table(self, table: RoutingTable) -> None:
        """Take the server's table: admit and forget members, drop pools of departed instances.

        Called on the router's loop (the watch, the hosted server's pass) or, in tests, from
        another thread: the tables swap atomically and pools are closed on the loop."""
        self.listed = table
        self.tabled = True
        self._listed_keys = listed = frozenset(key_of(e) for m in table.models.values() for e in m.endpoints)
        self.membership.offer(table)
        self.refresh()
        for key in [k for k in self._pools if k not in listed and not self._open.get(k)]:
            self._close_pool(key)

    def refresh(self) -> None:
        """Swap in the table of healthy members (one reference swap: requests see whole tables)."""
        self.table = self.membership.live(self.listed)
        for name, entry in self.table.models.items():
            self.metrics.members.labels(name).set(len(entry.endpoints))

    # --- lifecycle ---------------------------------------------------------------------

    def _pool(self, key: Key) -> Pool:
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(key[1], connect_timeout=self.connect_timeout_s, read_timeout=self.timeout_s)
        return pool

    def _close_pool(self, key: Key) -> None:
        pool = self._pools.pop(key, None)
        if pool is not None:
            self._on_loop(pool.close)

    def _on_loop(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the router's loop (update_table may come from another thread)."""
        loop = self._loop
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or loop is here or loop.is_closed():
            work()
        else:
            loop.call_soon_threadsafe(work)

    def _spawn(self, work: Any) -> None:
        """Run ``work`` on the router's loop, also when called from another thread."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        loop = self._loop or here
        if loop is None or loop.is_closed():
            work.close()  # no loop ever ran it: nothing to run it on
            return
        if here is not loop:
            loop.call_soon_threadsafe(self._spawn, work)
            return
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start(self) -> None:
        """Start the background work on the running loop: usage flushing, health probes."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._spawn(self.usage.run())
        for companion in self.companions:
            self._spawn(companion())
        if self.probe_interval_s:
            self._spawn(probe_forever(self, self.probe_interval_s))

    async def _first_table(self) -> None:
        """Listen only once a table is in (for at most ``first_table_wait_s``): until then a
        client's connection is refused and it tries another router, rather than getting a 404
        for a model this router has not heard of yet."""
        deadline = time.monotonic() + self.first_table_wait_s
        while not self.tabled and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._started = False

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await self._first_table()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- dispatch ----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        table = self.table
        if table is not self._seen:
            self.balancer.forget_stale(table)
            self._seen = table
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            if path == "/metrics" and method == "GET":
                body = generate_latest(self.metrics.registry)
                await _answer(send, 200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())])
                return
            if path == "/healthz":
                health = self.health() if self.health is not None else {"status": "ok"}
                await _answer(send, 200, json.dumps(health).encode(), JSON)
                return
            if not self.tabled:  # neither keys nor models known: any answer but this one would mislead
                raise Refusal(
                    503, "this router has no routing table yet (see /healthz)", "server_error", "no_routing_table"
                )
            headers = _headers(scope)
            key = self._authenticate(table, headers, scope)
            if path in ("/v1/models", "/v1/models/") and method == "GET":
                await self._models(table, send)
            elif path in OPENAI_PATHS and method == "POST":
                await self._watched(scope, receive, send, table, headers, key, path)
            elif path.startswith(PROXY_PREFIX):
                await self._watched(scope, receive, send, table, headers, key, "/" + path[len(PROXY_PREFIX) :])
            else:
                raise Refusal(404, f"no route {method} {path}", "invalid_request_error", "not_found")
        except Refusal as refusal:
            await _answer(send, refusal.status, error_body(refusal.message, refusal.kind, refusal.code), JSON)

    def _authenticate(self, table: RoutingTable, headers: dict[str, bytes], scope: Scope) -> str:
        if not table.api_keys:
            if not (self.allow_anonymous or _loopback(scope)):
                raise Refusal(
                    403,
                    "this router has no API keys, so it serves loopback clients only "
                    "(add keys with `reconcile keys new NAME`, or start it with --allow-anonymous)",
                    "permission_error",
                    "no_api_keys",
                )
            return ANONYMOUS
        name = key_name(headers.get("authorization"), table.api_keys)
        if name is None:
            raise Refusal(401, "invalid or missing API key", "invalid_request_error", "invalid_api_key")
        return name

    async def _models(self, table: RoutingTable, send: Send) -> None:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "reconciler"} for name in table.names()]
        await _answer(send, 200, json.dumps({"object": "list", "data": data}).encode(), JSON)

    async def _watched(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        table: RoutingTable,
        headers: dict[str, bytes],
        key: str,
        upstream_path: str,
    ) -> None:
        """Forward, and cancel the upstream request if the client goes away first."""
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            raise Refusal(413, f"a request body is at most {self.max_body_bytes} bytes", "invalid_request_error")
        body = await _read_body(receive, self.max_body_bytes)
        if body is None:
            return  # the client left before sending its whole request
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await self._forward(scope, send, table, headers, key, upstream_path, body)
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()
        finally:
            watcher.cancel()

    # --- forwarding --------------------------------------------------------------------

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        table: RoutingTable,
        headers: dict[str, bytes],
        key: str,
        upstream_path: str,
        body: bytes,
    ) -> None:
        proxied = scope["path"].startswith(PROXY_PREFIX)
        content_type = headers.get("content-type", b"")
        try:
            parsed = json_body(body) if content_type.startswith(b"application/json") or not content_type else None
        except TooDeep as exc:
            raise Refusal(400, str(exc), "invalid_request_error", "invalid_json") from exc
        name = await _model_name(scope, headers, parsed, content_type, body, proxied)
        if not name:
            raise Refusal(400, "the request names no model", "invalid_request_error", "model_required")
        if not table.knows(name):
            raise Refusal(404, f"the model {name!r} does not exist", "invalid_request_error", "model_not_found")
        entries = self.balancer.models_for(table, name)
        if proxied:
            entries = [e for e in entries if e.generic_proxy]
            if not entries:
                raise Refusal(
                    404, f"the model {name!r} does not allow the generic proxy", "invalid_request_error", "not_found"
                )
        strip_usage = False
        if parsed is not None and parsed.get("stream") is True and upstream_path in USAGE_STREAMS:
            options = parsed.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage")):
                parsed["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
                body = json.dumps(parsed).encode()
                strip_usage = True
        started = time.perf_counter()
        status = 502
        try:
            status = await self._attempts(
                scope, send, entries, headers, key, name, upstream_path, body, parsed or {}, strip_usage, started
            )
        except Refusal as refusal:
            status = refusal.status
            raise
        except asyncio.CancelledError:
            status = 499  # nginx's "client closed request"
            raise
        finally:
            self.usage.count(key, name, status)
            self.metrics.of(self.metrics.requests, name, str(status)).inc()
            self.metrics.of(self.metrics.latency, name).observe(time.perf_counter() - started)

    async def _attempts(
        self,
        scope: Scope,
        send: Send,
        entries: list[ModelEntry],
        headers: dict[str, bytes],
        key: str,
        name: str,
        upstream_path: str,
        body: bytes,
        parsed: dict[str, Any],
        strip_usage: bool,
        started: float,
    ) -> int:
        """Send to one instance; on a connect error or 502/503 before any byte went out, once more elsewhere."""
        if not any(e.endpoints for e in entries):
            raise Refusal(503, self._unavailable(name, entries), "server_error", "model_not_ready")
        if all(self._full(e) for e in entries if e.endpoints):
            raise Refusal(429, f"the queue of model {name!r} is full", "rate_limit_error", "queue_full")
        session_header = next((e.session_header for e in entries if e.session_header), None)
        session = headers.get(session_header) if session_header else None
        query = scope.get("query_string", b"")
        target = quote(upstream_path, safe=PATH_SAFE) + ("?" + query.decode("latin-1") if query else "")
        # One value per name, the one the router read too (the last): the instance sees what it decided on.
        forward = [(k.encode("latin-1"), v) for k, v in headers.items() if k not in DROPPED_REQUEST_HEADERS]
        tried: set[str] = set()
        last = Refusal(502, f"no instance of {name!r} answered", "server_error", "bad_gateway")
        for attempt in range(2):
            picked = self._pick(entries, parsed, session.decode("latin-1") if session else None, tried)
            if picked is None:
                break
            entry, endpoint = picked
            tried.add(endpoint.id)
            self.balancer.started(endpoint)
            self.metrics.of(self.metrics.decisions, entry.name, endpoint.id).inc()
            gauge = self.metrics.of(self.metrics.inflight, endpoint.id)
            gauge.inc()
            member = key_of(endpoint)
            self._open[member] = self._open.get(member, 0) + 1
            try:
                payload = body
                if entry.name != name and parsed:  # a route: the instance knows its model by its own name
                    payload = json.dumps({**parsed, "model": entry.name}).encode()
                async with self._pool(member).request(scope["method"], target, forward, payload) as response:
                    if response.status in RETRY_STATUSES and attempt == 0:
                        self.balancer.failed(endpoint, time.monotonic())
                        last = Refusal(
                            response.status,
                            f"instance {endpoint.id} answered {response.status}",
                            "server_error",
                            "upstream_error",
                        )
                        continue
                    try:
                        await self.relay.relay(send, response, entry.name, key, strip_usage, started)
                    except StreamBroken:
                        # Too late for a status: an event stream got an error event, any other body is cut.
                        self.balancer.failed(endpoint, time.monotonic())
                        return 502
                    if response.status >= 500:
                        self.balancer.failed(endpoint, time.monotonic())
                    return response.status
            except UpstreamError as exc:
                self.balancer.failed(endpoint, time.monotonic())
                last = Refusal(502, f"instance {endpoint.id} failed: {exc}", "server_error", "bad_gateway")
            except TimeoutError as exc:
                raise Refusal(504, f"instance {endpoint.id} timed out", "server_error", "timeout") from exc
            finally:
                self.balancer.finished(endpoint)
                gauge.dec()
                self._done(member)
        raise last

    def _done(self, member: Key) -> None:
        left = self._open.get(member, 1) - 1
        if left > 0:
            self._open[member] = left
            return
        self._open.pop(member, None)
        if member not in self._listed_keys:
            self._close_pool(member)  # it left the table: its last request is done

    def _unavailable(self, name: str, entries: list[ModelEntry]) -> str:
        """Why no instance can take a request for ``name``: the health of each listed one."""
        reasons = [
            self.membership.why_down(listed)
            for e in entries
            if (listed := self.listed.models.get(e.name)) is not None and listed.endpoints
        ]
        if not any(reasons):
            return f"the model {name!r} has no Running instance"
        return f"the model {name!r} has no healthy instance: {'; '.join(r for r in reasons if r)}"

    def _full(self, entry: ModelEntry) -> bool:
        busy = sum(self.balancer.inflight.get(e.id, 0) for e in entry.endpoints)
        return busy >= self.max_inflight_per_instance * len(entry.endpoints)

    def _pick(
        self, entries: list[ModelEntry], parsed: dict[str, Any], session: str | None, tried: set[str]
    ) -> tuple[ModelEntry, Endpoint] | None:
        now = time.monotonic()
        for entry in entries:
            if self._full(entry):
                continue
            endpoint = self.balancer.pick(entry, parsed, session, tried, now)
            if endpoint is not None:
                return entry, endpoint
        return None


def create_router_app(
    usage: UsageRecorder | None = None, **settings: Any
) -> tuple[Router, Callable[[RoutingTable], None]]:
    """The ASGI app and the function that swaps its routing table in (after each observation)."""
    router = Router(usage, **settings)
    return router, router.update_table


def _headers(scope: Scope) -> dict[str, bytes]:
    return {k.decode("latin-1"): v for k, v in scope["headers"]}


def _loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False  # a Unix socket or an unknown peer: not known to be local
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


async def _model_name(
    scope: Scope,
    headers: dict[str, bytes],
    parsed: dict[str, Any] | None,
    content_type: bytes,
    body: bytes,
    proxied: bool,
) -> str | None:
    if proxied and "x-model" in headers:
        return headers["x-model"].decode("latin-1")
    if parsed is not None and isinstance(parsed.get("model"), str):
        return str(parsed["model"])
    if content_type.startswith(b"multipart/form-data"):
        found = await form_model(content_type, body)
        if found:
            return found
    return query_model(scope.get("query_string", b""))


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refusal(413, f"a request body is at most {limit} bytes", "invalid_request_error")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
