"""The model hubs, one client for the planner's metadata and the agent's downloads.

Hugging Face (or a mirror) and ModelScope. Endpoints and tokens come from the environment
of the machine that runs the command, read in one place (``HubConfig.from_env``):
``HF_ENDPOINT``, ``HF_TOKEN``, ``MODELSCOPE_ENDPOINT``, ``MODELSCOPE_TOKEN``. A manifest may
name another endpoint (``spec.huggingface.endpoint``); it is asked without the token,
which goes only to the endpoint the environment names (docs/planning.md, "Who may choose
which URL").

Every small request (file lists, config.json, header ranges) has a total deadline,
connect, headers and body together, and a size cap, so a host that trickles one byte at a
time or sends without end costs at most ``deadline`` seconds. Downloads stream to disk and
resume where an interrupted transfer stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from reconciler.errors import SourceUnavailable
from reconciler.observe import tls

HUGGINGFACE = "https://huggingface.co"
MODELSCOPE = "https://modelscope.cn"
DEADLINE = 10.0  # seconds for one request, connect to last byte
MAX_BODY = 16 * 1024 * 1024  # bytes of one answer: a file list, a config, a header block
DOWNLOAD_ATTEMPTS = 5


@dataclass(frozen=True)
class HubConfig:
    """Where the hubs are and the tokens for them, as this machine's environment says."""

    hf_endpoint: str = HUGGINGFACE
    hf_token: str | None = None
    ms_endpoint: str = MODELSCOPE
    ms_token: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HubConfig:
        env = os.environ if env is None else env
        return cls(
            (env.get("HF_ENDPOINT") or HUGGINGFACE).rstrip("/"),
            env.get("HF_TOKEN") or None,
            (env.get("MODELSCOPE_ENDPOINT") or MODELSCOPE).rstrip("/"),
            env.get("MODELSCOPE_TOKEN") or None,
        )

    def huggingface(self, fetcher: Fetcher, endpoint: str | None = None) -> HuggingFace:
        """The Hugging Face client; a manifest's ``endpoint`` gets no token unless it is this machine's."""
        chosen = (endpoint or self.hf_endpoint).rstrip("/")
        return HuggingFace(chosen, fetcher, self.hf_token if chosen == self.hf_endpoint else None)

    def modelscope(self, fetcher: Fetcher) -> ModelScope:
        return ModelScope(self.ms_endpoint, fetcher, self.ms_token)


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Fetcher:
    """GET requests, each bounded by a total deadline and a size cap.

    The requests run on an event loop of its own, so the deadline cancels a request at
    any point (a trickled header included); call it from a thread that runs no loop.
    """

    def __init__(self, deadline: float = DEADLINE, max_body: int = MAX_BODY) -> None:
        self.deadline = deadline
        self.max_body = max_body
        self.loop = asyncio.new_event_loop()
        self.client: httpx.AsyncClient | None = None

    def get(self, url: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes, Mapping[str, str]]:
        """Status, body and headers; SourceUnavailable naming the host when it fails or is late."""
        try:
            return self.loop.run_until_complete(asyncio.wait_for(self._get(url, headers or {}), self.deadline))
        except TimeoutError as exc:
            raise SourceUnavailable(f"{_where(url)}: no complete answer within {self.deadline:g} s") from exc
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"cannot reach {_where(url)}: {type(exc).__name__}") from exc

    async def _get(self, url: str, headers: Mapping[str, str]) -> tuple[int, bytes, Mapping[str, str]]:
        if self.client is None:
            self.client = httpx.AsyncClient(follow_redirects=True, timeout=self.deadline, verify=tls())
        async with self.client.stream("GET", url, headers=dict(headers)) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body:
                raise SourceUnavailable(f"{_where(url)}: an answer of {declared} bytes (the limit is {self.max_body})")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self.max_body:
                    raise SourceUnavailable(f"{_where(url)}: an answer over {self.max_body} bytes")
            return response.status_code, bytes(body), response.headers

    def close(self) -> None:
        if self.client is not None:
            self.loop.run_until_complete(self.client.aclose())
            self.client = None
        self.loop.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Hub(ABC):
    """One hub: file lists, small files, ranges of large ones, and downloads."""

    name: str

    def __init__(self, endpoint: str, fetcher: Fetcher, token: str | None = None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.fetcher = fetcher
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    @abstractmethod
    def files(self, repo: str, revision: str) -> dict[str, int]:
        """File name -> size for every file of the repo."""

    @abstractmethod
    def url(self, repo: str, revision: str, file: str) -> str:
        """Where one file of the repo is downloaded from."""

    def read(self, repo: str, revision: str, file: str) -> bytes:
        status, body, _ = self.fetcher.get(self.url(repo, revision, file), self.headers)
        if status != 200:
            raise SourceUnavailable(f"{repo}/{file}: HTTP {status} from {self.endpoint}")
        return body

    def range(self, url: str) -> Callable[[int, int], bytes]:
        """A block reader for ``url`` (for ``HttpRangeSource``): HTTP Range requests."""

        def fetch(start: int, size: int) -> bytes:
            headers = {**self.headers, "Range": f"bytes={start}-{start + size - 1}"}
            status, body, _ = self.fetcher.get(url, headers)
            if status == 416:
                return b""
            if status == 206:
                return body
            if status == 200:  # a server that ignores Range sends the file from its start
                return body[start : start + size]
            raise SourceUnavailable(f"GET {url}: HTTP {status}")

        return fetch

    def download(self, client: httpx.Client, repo: str, revision: str, file: str, target: Path, size: int) -> None:
        """Stream one file into ``target``; an interrupted transfer resumes where it stopped."""
        if file.startswith("/") or ".." in file.split("/"):  # a listing must not write outside the repo
            raise SourceUnavailable(f"{self.name} listed {file!r} in {repo}: not a path inside it")
        if target.is_file() and (not size or target.stat().st_size == size):
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".incomplete")
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                _stream_into(client, self.url(repo, revision, file), self.headers, partial)
                break
            except httpx.HTTPError as exc:
                if attempt == DOWNLOAD_ATTEMPTS - 1:
                    raise SourceUnavailable(f"download of {repo}/{file} interrupted: {type(exc).__name__}") from exc
        partial.replace(target)


def _stream_into(client: httpx.Client, url: str, headers: Mapping[str, str], partial: Path) -> None:
    start = partial.stat().st_size if partial.exists() else 0
    ranged = {**headers, "Range": f"bytes={start}-"} if start else dict(headers)
    with client.stream("GET", url, headers=ranged) as response:
        if response.status_code == 416:
            return  # the partial file is whole already
        if response.status_code not in (200, 206):
            raise SourceUnavailable(f"{url.split('?')[0]}: HTTP {response.status_code}")
        with partial.open("ab" if response.status_code == 206 else "wb") as handle:
            for chunk in response.iter_bytes(1024 * 1024):
                handle.write(chunk)


class HuggingFace(Hub):
    """The Hugging Face hub's HTTP API (or a mirror's)."""

    name = "Hugging Face"

    def files(self, repo: str, revision: str) -> dict[str, int]:
        url = f"{self.endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}?blobs=true"
        status, body, headers = self.fetcher.get(url, self.headers)
        if status in (401, 404) and headers.get("x-error-code") == "RevisionNotFound":
            raise SourceUnavailable(f"revision {revision} of {repo} not found at {self.endpoint}")
        if status in (401, 403, 404):
            needs = "" if status == 404 or self.headers else " (or it needs HF_TOKEN)"
            raise SourceUnavailable(f"repository {repo} not found at {self.endpoint}{needs}")
        if status != 200:
            raise SourceUnavailable(f"{repo}: HTTP {status} from {self.endpoint}")
        siblings = _json_object(body, url).get("siblings")
        if not isinstance(siblings, list):
            return {}
        return {
            str(s["rfilename"]): _size(s.get("size"))
            for s in siblings
            if isinstance(s, dict) and isinstance(s.get("rfilename"), str)
        }

    def url(self, repo: str, revision: str, file: str) -> str:
        return f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(file)}"


class ModelScope(Hub):
    """ModelScope's HTTP API: the same questions, other paths."""

    name = "ModelScope"

    def files(self, repo: str, revision: str) -> dict[str, int]:
        url = f"{self.endpoint}/api/v1/models/{repo}/repo/files?Revision={quote(revision)}&Recursive=true"
        status, body, _ = self.fetcher.get(url, self.headers)
        if status == 404:
            raise SourceUnavailable(f"repository {repo} not found at {self.endpoint}")
        if status != 200:
            raise SourceUnavailable(f"{repo}: HTTP {status} from {self.endpoint}")
        data = _json_object(body, url).get("Data")
        entries = data.get("Files") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            return {}
        return {
            str(e["Path"]): _size(e.get("Size"))
            for e in entries
            if isinstance(e, dict) and isinstance(e.get("Path"), str) and e.get("Type") != "tree"
        }

    def url(self, repo: str, revision: str, file: str) -> str:
        return f"{self.endpoint}/api/v1/models/{repo}/repo?Revision={quote(revision)}&FilePath={quote(file)}"


def _size(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63 else 0


def _json_object(body: bytes, url: str) -> dict[str, object]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise SourceUnavailable(f"{_where(url)}: the answer is not JSON") from exc
    if not isinstance(data, dict):
        raise SourceUnavailable(f"{_where(url)}: the answer is not a JSON object")
    return data
