"""The router's client for instances: plain HTTP/1.1, keep-alive pools, streamed bodies.

The hot path of every request. aiohttp's ClientSession cost about 145 µs of CPU per request
here: a bare forwarder on it used 225 µs a request, the same forwarder on this client 80 µs
(docs/router.md, "Speed"). Instances speak plain HTTP/1.1 on loopback or the cluster network,
which needs little: Content-Length, chunked or close-delimited bodies (httptools parses them,
as it does for uvicorn), keep-alive, a connect and a read timeout, and a cap on header size.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import cast
from urllib.parse import urlsplit

import httptools

MAX_HEADER_BYTES = 64 * 1024  # an instance's response headers, all together
MAX_HEADERS = 256
HIGH_WATER = 256 * 1024  # body bytes buffered before the instance's socket stops being read
LOW_WATER = 64 * 1024
# An idle connection older than this is closed, not reused: below the 5 s after which uvicorn
# (llama-cpp-python, vLLM, SGLang) closes one, so the instance rarely closes it as it is reused.
KEEPALIVE_S = 4.0
RESEND_WITHIN_S = 0.5  # a reused connection lost this soon after the request: sent again, once

Headers = Sequence[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The instance failed before its answer began: nothing reached the client, a retry is safe."""


class BodyError(Exception):
    """The instance failed after its answer began."""


class Response:
    """Status and headers (names lower-cased) of an answer; its body through ``chunks()``."""

    def __init__(self, connection: _Connection, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._connection = connection
        self.status = status
        self.headers = headers
        self.content_type = ""
        self.content_length: int | None = None
        for name, value in headers:
            if name == b"content-type":
                self.content_type = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                self.content_length = int(value)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises BodyError or TimeoutError when the instance fails."""
        connection = self._connection
        while True:
            if connection.body:
                chunk = connection.take()
                yield chunk
                continue
            if connection.complete:
                return
            await connection.wait()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, read_timeout: float, on_lost: Callable[[_Connection], None]) -> None:
        self.read_timeout = read_timeout
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.used_at = time.monotonic()
        self.busy = False  # a request is out: only then may bytes arrive
        self.sent_at = 0.0
        self._reset()

    def _reset(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0  # of the headers parsed
        self.head_seen = 0  # bytes received while the headers are not complete
        self.headed = False
        self.complete = False
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.close_delimited = False
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.started = False  # a byte of the answer arrived
        self.reuse = True

    # --- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, though not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # an answer nobody asked for: this connection can be trusted no more
            self._fail(httptools.HttpParserError("the instance sent bytes while no request was out"))
            return
        self.started = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(exc)
            return
        if not self.headed:
            # httptools reports a header only once it ends: count the bytes as they come, so a
            # header that never ends cannot grow without bound.
            self.head_seen += len(data)
            if self.head_seen > MAX_HEADER_BYTES:
                self._fail(httptools.HttpParserError("the instance's response headers are too large"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headed and self.close_delimited and not self.complete and exc is None and self.error is None:
            self.complete = True  # a body without length or chunks ends with the connection
        elif not self.complete:
            self._fail(exc or ConnectionResetError("the instance closed the connection"))
        self._wake()
        self.on_lost(self)

    # --- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request
            raise httptools.HttpParserError("the instance sent more than one answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES or len(self.headers) >= MAX_HEADERS:
            raise httptools.HttpParserError("the instance's response headers are too large")
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:  # informational (103): the answer follows
            self.headers = []
            return
        self.headed = True
        length = any(name == b"content-length" for name, _ in self.headers)
        codings = [value for name, value in self.headers if name == b"transfer-encoding"]
        chunked = bool(codings) and codings[-1].rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        self.close_delimited = not length and not chunked  # its body ends with the connection
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.headed:
            # Read now: once the message is done the parser has moved on to the next one.
            self.reuse = self.reuse and self.parser.should_keep_alive()
            self.complete = True
            self._wake()

    # --- the request ----------------------------------------------------------------------

    def take(self) -> bytes:
        chunk = self.body.popleft()
        self.buffered -= len(chunk)
        if self.paused and self.buffered < LOW_WATER and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc if isinstance(exc, Exception) else ConnectionError(str(exc))
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until more of the answer arrives; raises what ended the connection, or TimeoutError."""
        if self.error is None and not self.closed:
            loop = asyncio.get_running_loop()
            self.waiter = loop.create_future()
            timer = loop.call_later(self.read_timeout, self._too_slow, self.waiter)
            try:
                await self.waiter
            finally:
                timer.cancel()
                self.waiter = None
        if self.error is not None and not self.complete:  # a whole answer stands; the error ends reuse
            failure = TimeoutError if isinstance(self.error, TimeoutError) else BodyError
            raise failure(f"{type(self.error).__name__}: {self.error}".rstrip(": ")) from self.error

    def _too_slow(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self._fail(TimeoutError(f"the instance sent nothing for {self.read_timeout:g}s"))

    async def send(self, request: bytes, head: bool) -> Response:
        assert self.transport is not None
        self.busy, self.sent_at = True, time.monotonic()
        self.transport.write(request)
        while not self.headed:
            try:
                await self.wait()
            except BodyError as exc:
                raise UpstreamError(str(exc)) from exc
        if head:  # an answer to HEAD has no body, whatever its Content-Length says
            self.complete, self.reuse = True, False
        return Response(self, self.parser.get_status_code(), self.headers)

    def reusable(self) -> bool:
        return self.reuse and self.complete and not self.closed and self.error is None and not self.body

    def recycle(self) -> None:
        self._reset()
        self.busy = False
        self.used_at = time.monotonic()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Keep-alive connections to one instance (``http://host:port``)."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0, read_timeout: float = 1800.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url}: instances are reached over plain http://host:port")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base = parts.path.rstrip("/")
        self.authority = parts.netloc.encode("latin-1")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle: collections.deque[_Connection] = collections.deque()  # the oldest first
        self.closed = False

    @asynccontextmanager
    async def request(self, method: str, target: str, headers: Headers, body: bytes) -> AsyncIterator[Response]:
        """Send a request and yield its answer; the connection goes back to the pool only when
        the answer was read to its end. Raises UpstreamError when nothing was answered."""
        head = [f"{method} {self.base}{target} HTTP/1.1\r\n".encode("latin-1"), b"host: ", self.authority, b"\r\n"]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        request = b"".join(head) + body
        connection, response = await self._exchange(request, method == "HEAD")
        try:
            yield response
        finally:
            self._release(connection)

    async def _exchange(self, request: bytes, head: bool) -> tuple[_Connection, Response]:
        connection = self._idle()
        if connection is not None:
            try:
                return connection, await connection.send(request, head)
            except UpstreamError:
                connection.close()
                if connection.started or time.monotonic() - connection.sent_at > RESEND_WITHIN_S:
                    raise  # it may have worked on the request: the router decides about a retry
                # Closed by the instance as it was reused: once more, on a new connection.
            except BaseException:
                connection.close()
                raise
        connection = await self._connect()
        try:
            return connection, await connection.send(request, head)
        except BaseException:
            connection.close()
            raise

    def _idle(self) -> _Connection | None:
        self._expire()
        while self.idle:
            connection = self.idle.pop()  # the newest: the likeliest to be open still
            if not connection.closed and connection.error is None:
                return connection
            connection.close()
        return None

    def _expire(self) -> None:
        """Close idle connections past KEEPALIVE_S, from the oldest."""
        cutoff = time.monotonic() - KEEPALIVE_S
        while self.idle and self.idle[0].used_at <= cutoff:
            self.idle.popleft().close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        read_timeout = self.read_timeout
        try:
            async with asyncio.timeout(self.connect_timeout):  # unlike wait_for, never loses a cancel
                _, connection = await loop.create_connection(
                    lambda: _Connection(read_timeout, self._forget), self.host, self.port
                )
        except OSError as exc:  # TimeoutError included: an instance that does not answer, try another
            raise UpstreamError(f"{type(exc).__name__}: {exc.strerror or exc or 'connect timed out'}") from exc
        return connection

    def _forget(self, connection: _Connection) -> None:
        """An idle connection the instance closed leaves the pool at once."""
        if connection in self.idle:
            self.idle.remove(connection)

    def _release(self, connection: _Connection) -> None:
        if self.closed or not connection.reusable():
            connection.close()
            return
        connection.recycle()
        self.idle.append(connection)
        self._expire()

    def close(self) -> None:
        """Close the idle connections now, and each busy one once its answer is done."""
        self.closed = True
        for connection in self.idle:
            connection.close()
        self.idle.clear()


__all__ = ["BodyError", "Pool", "Response", "UpstreamError"]
