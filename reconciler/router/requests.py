"""Reading what a client asked for: the model name, the API key, usage in answers. No I/O."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.IGNORECASE)
_FORM_MODEL = re.compile(rb'name="model"\r?\n(?:[^\r\n]+\r?\n)*\r?\n(.*?)\r?\n--', re.DOTALL)
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


def json_body(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def form_model(content_type: bytes, body: bytes) -> str | None:
    """The ``model`` field of a multipart/form-data body (audio transcriptions)."""
    boundary = _BOUNDARY.search(content_type)
    if boundary is None:
        return None
    for part in body.split(b"--" + boundary.group(1)):
        match = _FORM_MODEL.search(part + b"\r\n--")
        if match is not None:
            return match.group(1).decode("utf-8", "replace").strip()
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
