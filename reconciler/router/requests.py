"""Reading what a client asked for: the model name, the API key, usage in answers. No network I/O."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

FORM_PARTS_MAX = 64  # parts looked at for the model field before giving up
FORM_MODEL_MAX = 256  # bytes of a model name
EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def key_name(authorization: bytes | None, keys: Mapping[str, str]) -> str | None:
    """The name of the API key in ``Authorization: Bearer KEY``, or None.

    Compares the key's SHA-256 with every configured hash in constant time, and does not
    stop at a match, so timing tells nothing about which hash is close.
    """
    if authorization is None or authorization[:7].lower() != b"bearer ":
        return None
    digest = hashlib.sha256(authorization[7:].strip()).hexdigest()
    found = None
    for known, name in keys.items():
        if hmac.compare_digest(digest, known):
            found = name
    return found


class TooDeep(ValueError):
    """A JSON body nested deeper than the parser's recursion allows."""


def json_body(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None; raises TooDeep for a body nested past the stack."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    except RecursionError as exc:
        raise TooDeep("the JSON body is nested too deeply") from exc
    return parsed if isinstance(parsed, dict) else None


class _Buffered(BaseProtocol):
    """The protocol of a stream fed from memory: there is no socket to pause."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


async def form_model(content_type: bytes, body: bytes) -> str | None:
    """The ``model`` field of a multipart/form-data body (audio transcriptions), read with
    aiohttp's multipart parser over the (already size-capped) body: linear in its size."""
    loop = asyncio.get_running_loop()
    stream = aiohttp.StreamReader(_Buffered(loop), 2**16, loop=loop)
    stream.feed_data(body)
    stream.feed_eof()
    try:
        reader = aiohttp.MultipartReader(CIMultiDict({"Content-Type": content_type.decode("latin-1")}), stream)
        for _ in range(FORM_PARTS_MAX):
            part = await reader.next()
            if part is None:
                return None
            if isinstance(part, aiohttp.BodyPartReader) and part.name == "model":
                value = await part.read_chunk(FORM_MODEL_MAX)
                return value.decode("utf-8", "replace").strip() or None
            await part.release()
    except (ValueError, AssertionError, RuntimeError, aiohttp.ClientError, HttpProcessingError):
        return None  # not multipart after all: the request names no model there
    return None


def query_model(query_string: bytes) -> str | None:
    values = parse_qs(query_string.decode("latin-1")).get("model")
    return values[0] if values else None


def usage_of(document: Mapping[str, Any]) -> tuple[int, int] | None:
    """(prompt, completion) tokens from an answer's ``usage``; embeddings and rerank have no completion."""
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    if not isinstance(prompt, int):
        total = usage.get("total_tokens")
        if not isinstance(total, int):
            return None
        prompt = total - (completion if isinstance(completion, int) else 0)
    return prompt, completion if isinstance(completion, int) else 0


def event_data(event: bytes) -> dict[str, Any] | None:
    """The JSON of one SSE event's ``data:`` line, if it has one."""
    for line in event.splitlines():
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload and payload != b"[DONE]":
                return json_body(payload)
    return None


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    """OpenAI's error shape."""
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
