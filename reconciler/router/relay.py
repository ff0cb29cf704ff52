"""Passing an instance's answer back as it arrives, metering the usage it reports."""

from __future__ import annotations

import time
from typing import Any

from reconciler.router.h1 import BodyError, Response
from reconciler.router.metrics import RouterMetrics
from reconciler.router.requests import EVENT_END, event_data, json_body, usage_of
from reconciler.router.types import Send
from reconciler.router.usage import UsageBuffer

DROPPED_RESPONSE_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"trailer", b"proxy-authenticate"}
)
USAGE_BODY_LIMIT = 4 * 1024 * 1024  # answers larger than this are passed through without metering
EVENT_LIMIT = 1024 * 1024  # an SSE event still open past this is passed through as it is, unmetered


# What a client reads when the instance fails mid-stream: the OpenAI SDK raises it as an
# APIError, where a cut connection would surface as a transport error of its HTTP library.
BROKEN_EVENT = (
    b'data: {"error": {"message": "the instance failed mid-answer; the answer is incomplete", '
    b'"type": "server_error", "code": "upstream_error"}}\n\n'
)


class StreamBroken(Exception):
    """The instance failed after the answer had started: too late to retry or to answer an error
    status. An event stream has been ended with an error event; any other body is left cut."""


class Relay:
    """Streams answers to the client: SSE cut only at event boundaries, other bodies as they come."""

    def __init__(self, metrics: RouterMetrics, usage: UsageBuffer) -> None:
        self.metrics = metrics
        self.usage = usage

    async def relay(
        self, send: Send, response: Response, model: str, key: str, strip_usage: bool, started: float
    ) -> None:
        """Pass the answer through as it arrives; meter usage on the way."""
        content_type = response.content_type
        events = content_type.startswith("text/event-stream")
        drop = {b"content-length"} if events else set()
        headers = [(k, v) for k, v in response.headers if k not in DROPPED_RESPONSE_HEADERS | drop]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        kept = bytearray() if content_type.startswith("application/json") else None
        try:
            await self._pump(send, response, model, key, strip_usage, started, events, kept)
        except (BodyError, TimeoutError) as exc:
            if events:  # the event cut short is dropped; a blank line first ends one passed through open
                await send({"type": "http.response.body", "body": b"\n\n" + BROKEN_EVENT, "more_body": False})
            raise StreamBroken(str(exc)) from exc

    async def _pump(
        self,
        send: Send,
        response: Response,
        model: str,
        key: str,
        strip_usage: bool,
        started: float,
        events: bool,
        kept: bytearray | None,
    ) -> None:
        first = True
        pending = b""
        # With a known length the last chunk ends the answer: one write less per request.
        remaining = None if events else response.content_length
        async for chunk in response.chunks():
            if first:
                self.metrics.of(self.metrics.ttft, model).observe(time.perf_counter() - started)
                first = False
            if events:
                chunk, pending = self._events(pending, chunk, model, key, strip_usage)
                if not chunk:
                    continue
            elif kept is not None:
                if len(kept) + len(chunk) <= USAGE_BODY_LIMIT:
                    kept += chunk
                else:
                    kept = None
            if remaining is not None:
                remaining -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": remaining is None or remaining > 0})
        if remaining is None or remaining > 0:
            await send({"type": "http.response.body", "body": pending, "more_body": False})
        if kept:
            document = json_body(bytes(kept))
            if document is not None:
                self.meter(document, model, key)

    def _events(self, pending: bytes, chunk: bytes, model: str, key: str, strip_usage: bool) -> tuple[bytes, bytes]:
        """Split complete SSE events off ``pending + chunk``; meter and maybe drop the usage-only one.

        Only the new bytes are searched (an event end may straddle the two), so a long event
        costs linear time."""
        data = pending + chunk
        out: list[bytes] = []
        start = 0
        for match in EVENT_END.finditer(data, max(0, len(pending) - 3)):
            event = data[start : match.end()]
            start = match.end()
            if b'"usage"' in event:
                document = event_data(event)
                metered = document is not None and self.meter(document, model, key)
                if metered and strip_usage and document is not None and not document.get("choices"):
                    continue  # the usage-only chunk the client did not ask for
            out.append(event)
        if len(data) - start > EVENT_LIMIT:
            return b"".join(out) + data[start:], b""
        return b"".join(out), data[start:]

    def meter(self, document: dict[str, Any], model: str, key: str) -> bool:
        counted = usage_of(document)
        if counted is None:
            return False
        prompt, completion = counted
        self.usage.add(key, model, prompt, completion)
        self.metrics.of(self.metrics.tokens, model, "prompt").inc(prompt)
        self.metrics.of(self.metrics.tokens, model, "completion").inc(completion)
        return True
