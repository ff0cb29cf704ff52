from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from reconciler.source import sign, verify

SECRET = b"s3cret"
BODY = b'{"ref": "refs/heads/main"}'


def test_github_signature() -> None:
    digest = hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()
    assert verify({"x-hub-signature-256": f"sha256={digest}"}, BODY, SECRET) == "github"
    assert verify({"x-hub-signature-256": f"sha256={digest}"}, BODY + b" ", SECRET) is None
    assert verify({"x-hub-signature-256": digest}, BODY, SECRET) is None  # the prefix is required


def test_gitea_signature() -> None:
    assert verify({"x-gitea-signature": sign(BODY, SECRET)}, BODY, SECRET) == "gitea"
    assert verify({"x-gitea-signature": sign(BODY, b"other")}, BODY, SECRET) is None


def test_gitlab_token() -> None:
    assert verify({"x-gitlab-token": "s3cret"}, BODY, SECRET) == "gitlab"
    assert verify({"x-gitlab-token": "wrong"}, BODY, SECRET) is None


def test_missing_signature_or_secret() -> None:
    assert verify({}, BODY, SECRET) is None
    assert verify({"x-gitlab-token": ""}, BODY, b"") is None


@given(st.binary(max_size=200), st.text(max_size=80))
def test_arbitrary_headers_never_verify_without_the_secret(body: bytes, header: str) -> None:
    for name in ("x-hub-signature-256", "x-gitea-signature", "x-gitlab-token"):
        assert verify({name: header}, body, SECRET) is None or header in (
            f"sha256={sign(body, SECRET)}",
            sign(body, SECRET),
            "s3cret",
        )
