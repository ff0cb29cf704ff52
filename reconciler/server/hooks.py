"""Push webhooks: bounded reading, signature first, and each delivery acted on once.

Nothing is read when no secret is configured, nor when the request carries no signature
header a forge sends; GitLab's token is checked before the body. A signed body is read up
to GitHub's own cap. Verified deliveries are remembered by id for ``KEEP_SECONDS`` so a
replayed one (same id) triggers nothing.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request

MAX_SIGNED_BYTES = 25 * 1024 * 1024  # GitHub's cap on a webhook payload
MAX_DELIVERY_ID = 128
KEEP_SECONDS = 7 * 24 * 3600
SIGNATURE_HEADERS = ("x-hub-signature-256", "x-gitea-signature", "x-gitlab-token")
DELIVERY_HEADERS = ("x-github-delivery", "x-gitea-delivery", "x-gitlab-event-uuid")

webhook_deliveries = sa.Table(  # mirrors migration 0002_ops
    "webhook_deliveries",
    sa.MetaData(),
    sa.Column("delivery_id", sa.String(MAX_DELIVERY_ID), primary_key=True),
    sa.Column("received_at", sa.Float, nullable=False),
)


class Refused(Exception):
    """A webhook request answered with ``status`` before (or instead of) acting on it."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_signed_body(request: Request, secret: bytes | None) -> bytes:
    """The body of a request that may be a forge's signed push; Refused otherwise."""
    if not secret:
        raise Refused(401, "no webhook secret is configured")
    headers = request.headers
    if not any(name in headers for name in SIGNATURE_HEADERS):
        raise Refused(401, "missing or wrong signature")
    gitlab = headers.get("x-gitlab-token")
    if gitlab is not None and not hmac.compare_digest(gitlab.encode(), secret):
        raise Refused(401, "missing or wrong signature")
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_SIGNED_BYTES:
        raise Refused(413, f"a push event is at most {MAX_SIGNED_BYTES} bytes")
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > MAX_SIGNED_BYTES:
            raise Refused(413, f"a push event is at most {MAX_SIGNED_BYTES} bytes")
    return bytes(received)


def delivery_id(headers: Mapping[str, str]) -> str | None:
    """The forge's id of this delivery (GitHub, Gitea, GitLab), if it sent one."""
    for name in DELIVERY_HEADERS:
        value = headers.get(name)
        if value:
            if len(value) > MAX_DELIVERY_ID or not value.isprintable():
                raise Refused(400, f"{name} is not a delivery id")
            return value
    return None


def first_delivery(engine: sa.Engine, identifier: str, now: float | None = None) -> bool:
    """Record a verified delivery; False when that id was seen before (a replay)."""
    stamp = now or time.time()
    try:
        with engine.begin() as db:
            db.execute(webhook_deliveries.delete().where(webhook_deliveries.c.received_at < stamp - KEEP_SECONDS))
            db.execute(webhook_deliveries.insert().values(delivery_id=identifier, received_at=stamp))
    except IntegrityError:
        return False
    return True
