"""Talking to a running server: where it is, its token, and bounded requests.

A client command reaches the server named by ``--server URL`` (token from ``--token-file``
or ``RECONCILER_SERVER_TOKEN``), else the local one of ``--data-dir``, else the current
cluster that ``reconcile up`` recorded (see ``context``). The token goes only to that URL,
which the operator chose; nothing read from a manifest redirects it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.cli.context import current_data_dir

if TYPE_CHECKING:
    from reconciler.observe import ObservedState

SERVER_TOKEN_ENV = "RECONCILER_SERVER_TOKEN"
DEADLINE_S = 10.0  # connect, headers and body together
MAX_BODY_BYTES = 64 * 1024 * 1024


class ServerUnusable(Exception):
    """One line for the user: the server cannot be found, reached, or refuses."""


@dataclass(frozen=True)
class Target:
    url: str
    token: str
    data_dir: Path | None = None  # set for a local cluster found through its data dir

    def unreachable(self, why: str) -> str:
        if self.data_dir is not None:
            return (
                f"the cluster in {self.data_dir} is not running: its server {self.url} does not answer ({why}); "
                "start it with `reconcile up`"
            )
        return f"cannot reach the server at {self.url}: {why}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def read_server_token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServerUnusable(f"{token_file}: cannot read the token file: {exc.strerror}") from exc
    else:
        token = os.environ.get(SERVER_TOKEN_ENV, "").strip()
    if not token:
        raise ServerUnusable(f"--server needs a token: give --token-file F or set {SERVER_TOKEN_ENV}")
    return token


def local_data_dir(given: Path | None) -> Path:
    """--data-dir (or RECONCILER_DATA_DIR), else the current cluster, else the default."""
    from reconciler.agent import default_data_dir

    return (given or current_data_dir() or default_data_dir()).expanduser().resolve()


def resolve(data_dir: Path | None, server: str | None, token_file: Path | None) -> Target:
    if server:
        return Target(server.rstrip("/"), read_server_token(token_file))
    from reconciler.server import server_file

    data = local_data_dir(data_dir)
    try:
        info = json.loads(server_file(data).read_text(encoding="utf-8"))
        url = str(info["url"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ServerUnusable(
            f"no cluster is running for {data} (start one with `reconcile up`, or give --data-dir or --server)"
        ) from exc
    token_path = Path(info.get("tokenFile") or data / "token")
    try:
        token = token_path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ServerUnusable(f"{token_path}: cannot read the server token: {exc.strerror}") from exc
    return Target(url, token, data)


def call(target: Target, method: str, path: str, deadline_s: float = DEADLINE_S, **kwargs: Any) -> Any:
    """The JSON answer of one request, read within the deadline and the size cap."""
    import httpx

    started = time.monotonic()
    body = bytearray()
    try:
        with httpx.stream(
            method, f"{target.url}{path}", headers=target.headers, timeout=httpx.Timeout(deadline_s), **kwargs
        ) as response:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise ServerUnusable(f"{target.url}{path}: the answer is larger than {MAX_BODY_BYTES} bytes")
                if time.monotonic() - started > deadline_s:
                    raise ServerUnusable(f"{target.url}{path}: no complete answer within {deadline_s:.0f}s")
    except httpx.HTTPError as exc:
        raise ServerUnusable(target.unreachable(type(exc).__name__)) from exc
    try:
        answer = json.loads(body) if body else None
    except ValueError as exc:
        raise ServerUnusable(f"{target.url}{path}: HTTP {response.status_code}, not JSON") from exc
    if response.status_code >= 400:
        detail = answer.get("detail") if isinstance(answer, dict) else answer
        raise ServerUnusable(f"{method} {target.url}{path}: HTTP {response.status_code}: {detail}")
    return answer


def observed_from(target: Target) -> tuple[ObservedState, dict[str, str]]:
    """The live cluster as the server's planner sees it: workers and instance assignments."""
    from pydantic import ValidationError

    from reconciler.observe import ObservedState, Worker

    body = call(target, "GET", "/api/observed")
    try:
        workers = [Worker.model_validate(w) for w in body["workers"]]
        assignments = {str(k): str(v) for k, v in body["assignments"].items()}
    except (ValidationError, KeyError, TypeError, AttributeError) as exc:
        raise ServerUnusable(f"{target.url}/api/observed: not an observed state: {exc}".splitlines()[0]) from exc
    return ObservedState.of(workers), assignments


def observed_of_server(server: str, token_file: Path | None) -> tuple[ObservedState, dict[str, str]]:
    """``plan --server``: the live cluster's state, with the token the operator gave for that URL."""
    return observed_from(Target(server.rstrip("/"), read_server_token(token_file)))
