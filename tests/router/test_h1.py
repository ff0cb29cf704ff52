"""The router's HTTP/1.1 client against real sockets: servers that answer as instances do, and
as broken or hostile ones do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from reconciler.router.h1 import BodyError, Pool, UpstreamError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
REQUEST = b'{"model": "m"}'


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
    )
    return head + await reader.readexactly(length)


def answer(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n%b" % (
        len(body),
        b"".join(line + b"\r\n" for line in extra),
        body,
    )


def replying(data: bytes, linger: float = 0.0) -> Handler:
    """A server that answers one request with ``data`` as it is, then waits ``linger`` s and closes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(data)
        await writer.drain()
        await asyncio.sleep(linger)

    return handler


def run(handler: Handler, scenario: Callable[[Pool, dict[str, Any]], Awaitable[Any]], **pool: Any) -> Any:
    """Serve ``handler`` on a free loopback port and run ``scenario`` against a Pool to it."""

    async def main() -> Any:
        seen: dict[str, Any] = {"connections": 0, "requests": []}

        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen["connections"] += 1
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(counted, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await scenario(Pool(f"http://127.0.0.1:{port}", **pool), seen)
        finally:
            server.close()

    return asyncio.run(main())


async def fetch(pool: Pool, method: str = "POST", target: str = "/v1/chat/completions") -> tuple[int, bytes]:
    async with pool.request(method, target, [(b"content-type", b"application/json")], REQUEST) as response:
        return response.status, b"".join([chunk async for chunk in response.chunks()])


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        request = await read_request(reader)
        writer.write(answer(b'{"n": %d}' % len(request)))
        await writer.drain()


def test_answers_are_read_and_one_connection_is_kept_for_all() -> None:
    async def scenario(pool: Pool, seen: dict[str, Any]) -> list[tuple[int, bytes]]:
        return [await fetch(pool) for _ in range(5)]

    async def counting(pool: Pool, seen: dict[str, Any]) -> int:
        await scenario(pool, seen)
        return int(seen["connections"])

    answers = run(keep_alive, scenario)
    assert all(status == 200 and body.startswith(b'{"n": ') for status, body in answers)
    assert run(keep_alive, counting) == 1


def test_the_request_carries_host_length_headers_and_body() -> None:
    got: list[bytes] = []

    async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await read_request(reader))
        writer.write(answer(b"{}"))
        await writer.drain()

    run(recording, lambda pool, _: fetch(pool, target="/model/x%20y?a=1"))
    head, body = got[0].split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /model/x%20y?a=1 HTTP/1.1"
    assert lines[1].startswith(b"host: 127.0.0.1:") and b"content-length: %d" % len(REQUEST) in lines
    assert b"content-type: application/json" in lines and body == REQUEST


def test_a_chunked_stream_arrives_as_it_is_sent() -> None:
    release = asyncio.Event()

    async def streaming(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"8\r\ndata: 1\n\r\n")
        await writer.drain()
        await release.wait()  # the client must have the first event before the second is sent
        writer.write(b"8\r\ndata: 2\n\r\n0\r\n\r\n")
        await writer.drain()

    async def scenario(pool: Pool, _: dict[str, Any]) -> list[bytes]:
        received = []
        async with pool.request("POST", "/", [], REQUEST) as response:
            assert response.content_type == "text/event-stream" and response.content_length is None
            async for chunk in response.chunks():
                received.append(chunk)
                release.set()
        return received

    assert run(streaming, scenario) == [b"data: 1\n", b"data: 2\n"]


def test_a_body_without_length_ends_with_the_connection() -> None:
    closing = replying(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")

    async def twice(pool: Pool, seen: dict[str, Any]) -> tuple[list[tuple[int, bytes]], int]:
        return [await fetch(pool), await fetch(pool)], int(seen["connections"])

    answers, connections = run(closing, twice)
    assert answers == [(200, b"all of it")] * 2 and connections == 2


def test_an_idle_connection_the_instance_closed_is_replaced_without_an_error() -> None:
    one_each = replying(answer(b"{}"))  # keep-alive announced, then closed: as an idle timeout does

    async def scenario(pool: Pool, seen: dict[str, Any]) -> tuple[list[int], int, int]:
        first = await fetch(pool)
        await asyncio.sleep(0.2)
        idle = len(pool.idle)  # the closed connection has left the pool
        return [first[0], (await fetch(pool))[0]], int(seen["connections"]), idle

    statuses, connections, idle = run(one_each, scenario)
    assert statuses == [200, 200] and connections == 2 and idle == 0


def test_a_request_given_up_closes_its_connection() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await asyncio.sleep(0.5)
            writer.write(answer(b"{}"))
            await writer.drain()

    async def scenario(pool: Pool, seen: dict[str, Any]) -> tuple[int, int]:
        await fetch(pool)  # one idle connection, reused by the next request
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fetch(pool), 0.1)  # the client left: cancelled mid-request
        await fetch(pool)
        return len(pool.idle), int(seen["connections"])

    assert run(slow, scenario) == (1, 2)


def test_a_refused_connection_is_an_upstream_error() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        await fetch(Pool(f"http://127.0.0.1:{port}"))

    with pytest.raises(UpstreamError, match="ConnectionRefused"):
        asyncio.run(scenario())


def test_silence_before_or_during_the_answer_is_a_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    stalling = replying(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf", 5)

    with pytest.raises(TimeoutError):
        run(silent, lambda pool, _: fetch(pool), read_timeout=0.3)
    with pytest.raises(TimeoutError):
        run(stalling, lambda pool, _: fetch(pool), read_timeout=0.3)


def test_a_connection_cut_mid_answer_is_a_body_error_and_before_it_an_upstream_error() -> None:
    cut_mid_body = replying(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")

    async def cut_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    with pytest.raises(BodyError):
        run(cut_mid_body, lambda pool, _: fetch(pool))
    with pytest.raises(UpstreamError):
        run(cut_at_once, lambda pool, _: fetch(pool))


@pytest.mark.parametrize(
    "answer_bytes",
    [
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-h%d: %b\r\n" % (n, b"v" * 100) for n in range(1000)) + b"\r\n",
        b"HTTP/1.1 200 OK\r\nx-big: " + b"v" * 70_000 + b"\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["many headers", "one huge header", "garbage"],
)
def test_oversized_or_malformed_headers_are_refused(answer_bytes: bytes) -> None:
    hostile = replying(answer_bytes, 1)

    with pytest.raises(UpstreamError):
        run(hostile, lambda pool, _: fetch(pool))


def test_head_has_no_body_whatever_its_length_says() -> None:
    head = replying(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n", 2)

    assert run(head, lambda pool, _: fetch(pool, method="HEAD"), read_timeout=1) == (200, b"")


def test_an_informational_answer_before_the_answer_is_skipped() -> None:
    hints = replying(b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + answer(b"{}"))

    assert run(hints, lambda pool, _: fetch(pool)) == (200, b"{}")


def test_a_large_answer_to_a_slow_reader_pauses_the_socket_and_arrives_whole() -> None:
    body = bytes(range(256)) * 16 * 1024  # 4 MiB

    large = replying(answer(body))

    async def scenario(pool: Pool, _: dict[str, Any]) -> tuple[bytes, bool]:
        paused = False
        parts = []
        async with pool.request("POST", "/", [], REQUEST) as response:
            async for chunk in response.chunks():
                paused = paused or response._connection.paused
                parts.append(chunk)
                await asyncio.sleep(0.001)
        return b"".join(parts), paused

    received, paused = run(large, scenario)
    assert received == body and paused


def test_only_plain_http_urls_make_a_pool() -> None:
    with pytest.raises(ValueError):
        Pool("https://127.0.0.1:1")


def test_an_answer_nobody_asked_for_never_reaches_the_next_request() -> None:
    answered = [0]

    async def twice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            answered[0] += 1
            writer.write(answer(b"for request %d" % answered[0]))
            await writer.drain()
            if answered[0] == 1:
                await asyncio.sleep(0.1)
                writer.write(answer(b"stale extra answer"))  # while the connection is idle
                await writer.drain()

    async def scenario(pool: Pool, seen: dict[str, Any]) -> tuple[list[bytes], int]:
        first = await fetch(pool)
        await asyncio.sleep(0.3)
        return [first[1], (await fetch(pool))[1], (await fetch(pool))[1]], int(seen["connections"])

    answers, connections = run(twice, scenario)
    assert answers == [b"for request 1", b"for request 2", b"for request 3"] and connections == 2


def test_two_answers_in_one_packet_give_the_first_and_drop_the_connection() -> None:
    async def doubled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer(b"one") + answer(b"two"))
            await writer.drain()

    async def scenario(pool: Pool, seen: dict[str, Any]) -> tuple[bytes, bytes, int]:
        return (await fetch(pool))[1], (await fetch(pool))[1], int(seen["connections"])

    assert run(doubled, scenario) == (b"one", b"one", 2)


def test_a_header_that_never_ends_is_refused_before_the_timeout() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-endless: ")
        for _ in range(100):
            writer.write(b"v" * 4096)
            await writer.drain()
            await asyncio.sleep(0.001)
        await asyncio.sleep(5)

    with pytest.raises(UpstreamError, match="too large"):
        run(endless, lambda pool, _: fetch(pool), read_timeout=30)


def test_a_body_with_a_coding_other_than_chunked_ends_with_the_connection() -> None:
    coded = replying(b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\nconnection: close\r\n\r\nwhole")

    assert run(coded, lambda pool, _: fetch(pool)) == (200, b"whole")


def test_an_upgrade_answer_is_an_upstream_error() -> None:
    upgrading = replying(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", 1)

    with pytest.raises(UpstreamError):
        run(upgrading, lambda pool, _: fetch(pool))


def test_idle_connections_past_the_keepalive_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("reconciler.router.h1.KEEPALIVE_S", 0.2)

    async def scenario(pool: Pool, _: dict[str, Any]) -> tuple[int, int]:
        await asyncio.gather(*(fetch(pool) for _ in range(5)))  # five connections at once
        burst = len(pool.idle)
        await asyncio.sleep(0.3)
        await fetch(pool)
        return burst, len(pool.idle)

    burst, after = run(keep_alive, scenario)
    assert burst == 5 and after == 1
