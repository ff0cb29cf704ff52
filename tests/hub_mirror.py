"""A local HTTP server that serves a folder the way the Hugging Face hub does.

``<root>/<org>/<name>/<files>`` is served as repo ``org/name``: the repo and tree APIs
(``/api/models/{repo}/revision/{rev}``, ``/api/models/{repo}/tree/{rev}``) and ``/{repo}/resolve/{rev}/{file}`` with
HEAD, Range requests, ETag and X-Repo-Commit, which is what our hub client and
range reader use. It counts requests so tests can see how much was fetched.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0" * 40
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _Handler(BaseHTTPRequestHandler):
    root: Path
    counts: Counter[str]
    served: Counter[str]
    ranges: list[str]
    throttle: float = 0.0  # seconds to sleep per 64 KiB sent
    drop_after: int | None = None  # close the first body transfer after this many bytes

    def log_message(self, *args: object) -> None:
        return

    def _repo_file(self) -> tuple[Path, str] | None:
        match = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path.split("?")[0])
        if match is None:
            return None
        return self.root / match.group(1) / match.group(3), match.group(3)

    def _send_json(self, status: int, body: object, error_code: str | None = None) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        if error_code:
            self.send_header("X-Error-Code", error_code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        self.counts["GET"] += 1
        api = re.match(r"^/api/models/([^/]+/[^/]+)(/tree/|/revision/|$|\?)", self.path)
        if api:
            repo = self.root / api.group(1)
            if not repo.is_dir():
                self._send_json(404, {"error": "Repository not found"}, "RepoNotFound")
                return
            files = [p for p in sorted(repo.rglob("*")) if p.is_file()]
            if api.group(2) == "/tree/":
                self._send_json(
                    200,
                    [
                        {
                            "type": "file",
                            "path": str(p.relative_to(repo)),
                            "size": p.stat().st_size,
                            "oid": hashlib.sha1(str(p).encode()).hexdigest(),
                        }
                        for p in files
                    ],
                )
                return
            siblings = [{"rfilename": str(p.relative_to(repo)), "size": p.stat().st_size} for p in files]
            self._send_json(200, {"id": api.group(1), "sha": COMMIT, "siblings": siblings})
            return
        self._file(send_body=True)

    def do_HEAD(self) -> None:
        self.counts["HEAD"] += 1
        self._file(send_body=False)

    def _file(self, send_body: bool) -> None:
        found = self._repo_file()
        if found is None or not found[0].is_file():
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, name = found
        size = path.stat().st_size
        etag = hashlib.sha256(f"{name}:{size}".encode()).hexdigest()
        start, end = 0, size - 1
        status = 200
        match = _RANGE.match(self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if send_body:
            self.ranges.append(self.headers.get("Range", ""))
            with path.open("rb") as handle:
                handle.seek(start)
                data = handle.read(end - start + 1)
            limit = type(self).drop_after
            if limit is not None:
                type(self).drop_after = None
                data = data[:limit]
            for offset in range(0, len(data), 65536):
                self.wfile.write(data[offset : offset + 65536])
                self.served[name] += len(data[offset : offset + 65536])
                if self.throttle:
                    time.sleep(self.throttle)
            if limit is not None:
                self.close_connection = True


class HubMirror:
    def __init__(self, root: Path, throttle: float = 0.0, drop_after: int | None = None) -> None:
        handler = type(
            "Handler",
            (_Handler,),
            {
                "root": root,
                "counts": Counter(),
                "served": Counter(),
                "ranges": [],
                "throttle": throttle,
                "drop_after": drop_after,
            },
        )
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.handler = handler
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def served(self) -> Counter[str]:
        return self.handler.served

    @property
    def ranges(self) -> list[str]:
        return self.handler.ranges


@contextmanager
def hub_mirror(root: Path, throttle: float = 0.0, drop_after: int | None = None) -> Iterator[HubMirror]:
    mirror = HubMirror(root, throttle, drop_after)
    mirror.thread.start()
    try:
        yield mirror
    finally:
        mirror.server.shutdown()
        mirror.server.server_close()
