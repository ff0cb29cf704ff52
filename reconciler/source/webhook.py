"""Push webhooks: which forge sent one, and whether it carries our secret.

GitHub signs the body (``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>``), Gitea likewise
without the prefix (``X-Gitea-Signature``), GitLab sends the secret itself (``X-Gitlab-Token``).
Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


def sign(body: bytes, secret: bytes) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(headers: Mapping[str, str], body: bytes, secret: bytes) -> str | None:
    """The forge whose signature matches (``github``, ``gitea``, ``gitlab``), else None.

    ``headers`` must be case-insensitive (a Starlette ``Headers``) or lower-case.
    """
    if not secret:
        return None
    expected = sign(body, secret)
    github = headers.get("x-hub-signature-256")
    if github is not None:
        scheme, _, digest = github.partition("=")
        return (
            "github" if scheme == "sha256" and hmac.compare_digest(digest.lower().encode(), expected.encode()) else None
        )
    gitea = headers.get("x-gitea-signature")
    if gitea is not None:
        return "gitea" if hmac.compare_digest(gitea.lower().encode(), expected.encode()) else None
    gitlab = headers.get("x-gitlab-token")
    if gitlab is not None:
        return "gitlab" if hmac.compare_digest(gitlab.encode(), secret) else None
    return None
