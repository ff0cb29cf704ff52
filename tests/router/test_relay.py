"""SSE relaying: events pass whole whatever the chunking, the injected usage event is dropped."""

from __future__ import annotations

import asyncio
import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.router import MemoryUsage, RouterMetrics
from reconciler.router.relay import EVENT_LIMIT, Relay
from reconciler.router.requests import form_model, key_name, query_model, usage_of
from reconciler.router.usage import UsageBuffer


def event(body: dict[str, object], end: bytes) -> bytes:
    return b"data: " + json.dumps(body).encode() + end


CHUNKS = [event({"choices": [{"delta": {"content": f"t{n}"}}]}, b"\r\n\r\n") for n in range(3)]
USAGE = event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}, b"\r\n\r\n")
STREAM = b"".join(CHUNKS) + USAGE + b"data: [DONE]\r\n\r\n"


def relay_all(pieces: list[bytes], strip: bool) -> tuple[bytes, UsageBuffer]:
    buffer = UsageBuffer(MemoryUsage())
    relay = Relay(RouterMetrics(), buffer)
    out, pending = [], b""
    for piece in pieces:
        sent, pending = relay._events(pending, piece, "m", "k", strip)
        out.append(sent)
    return b"".join(out) + pending, buffer


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, len(STREAM) - 1), max_size=12, unique=True), st.booleans())
def test_any_chunking_gives_the_same_events(cuts, strip):
    bounds = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    out, buffer = relay_all(pieces, strip)
    assert out == (STREAM.replace(USAGE, b"") if strip else STREAM)
    # Tokens only: requests and errors are counted by the app.
    assert [list(v) for v in buffer._pending.values()] == [[7, 3, 0, 0]]


def test_an_event_that_never_ends_is_passed_through_past_the_limit():
    relay = Relay(RouterMetrics(), UsageBuffer(MemoryUsage()))
    piece, pending, out = b"data: " + b"x" * 65536, b"", []
    for _ in range(40):  # 2.5 MiB without an event end
        sent, pending = relay._events(pending, piece, "m", "k", True)
        out.append(sent)
        assert len(pending) <= EVENT_LIMIT
    assert b"".join(out) + pending == piece * 40


def test_lf_only_events_split_too():
    stream = STREAM.replace(b"\r\n", b"\n")
    out, _ = relay_all([stream[:50], stream[50:]], True)
    assert out == stream.replace(USAGE.replace(b"\r\n", b"\n"), b"")


def test_usage_shapes():
    assert usage_of({"usage": {"prompt_tokens": 5, "completion_tokens": 2}}) == (5, 2)
    assert usage_of({"usage": {"prompt_tokens": 5, "total_tokens": 5}}) == (5, 0)  # embeddings
    assert usage_of({"usage": {"total_tokens": 9}}) == (9, 0)  # rerank
    assert usage_of({"usage": {"input_tokens": 4, "output_tokens": 6}}) == (4, 6)  # responses
    assert usage_of({"usage": None}) is None and usage_of({}) is None


def test_model_from_form_and_query_and_keys():
    body = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n'
    body += b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n--xyz--\r\n'
    assert asyncio.run(form_model(b"multipart/form-data; boundary=xyz", body)) == "whisper"
    assert asyncio.run(form_model(b"multipart/form-data", body)) is None
    assert query_model(b"a=1&model=tts") == "tts" and query_model(b"") is None
    keys = {"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08": "ci"}  # sha256("test")
    assert key_name(b"Bearer test", keys) == "ci" and key_name(b"bearer test", keys) == "ci"
    assert key_name(b"Bearer nope", keys) is None and key_name(b"Basic test", keys) is None
    assert key_name(None, keys) is None
