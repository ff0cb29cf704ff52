"""Hostile and broken input to a real agent process over real HTTP: one test per class
(issue 9 items 4-7, issue 7 items 6-7)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.agent.gate import MAX_BODY
from reconciler.agent.supervisor import BASE_ENV
from reconciler.agent.wire import INSTANCE_ID
from tests.net import free_port

TOKEN = "hostile-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SLEEP = "import time; time.sleep(120)"


class Agent:
    """``reconcile agent`` as a subprocess on a free loopback port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.token = root / "token"
        self.token.write_text(TOKEN)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None
        self.generation = 0

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "reconciler.cli",
            "agent",
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--data-dir",
            str(self.data),
            "--worker-name",
            "w",
            "--worker-ip",
            "127.0.0.1",
            "--token-file",
            str(self.token),
            "--allow-exec",
            sys.executable,
        ]

    def env(self) -> dict[str, str]:
        return {**os.environ, "HF_TOKEN": "hf_secret_value", "PYTHONUNBUFFERED": "1"}

    def start(self) -> None:
        log = (self.root / "agent.log").open("a")
        self.process = subprocess.Popen(self.argv(), env=self.env(), stdout=log, stderr=subprocess.STDOUT, text=True)
        log.close()
        for _ in range(150):
            if self.process.poll() is not None:
                raise AssertionError((self.root / "agent.log").read_text())
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError((self.root / "agent.log").read_text())

    def refused_start(self) -> subprocess.CompletedProcess[str]:
        """Start a second agent on this data dir (another port) that must not come up."""
        argv = self.argv()
        argv[argv.index("--port") + 1] = str(free_port())
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True, timeout=60)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def put(self, instances: list[dict[str, object]]) -> httpx.Response:
        self.generation += 1
        body = {"generation": self.generation, "instances": instances}
        return httpx.put(f"{self.url}/v1/instances", json=body, headers=AUTH, timeout=30)

    def state(self) -> dict[str, object]:
        response = httpx.get(f"{self.url}/v1/state", headers=AUTH, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def instance(self, instance_id: str) -> dict[str, object] | None:
        instances = self.state()["instances"]
        assert isinstance(instances, list)
        return next((i for i in instances if i["id"] == instance_id), None)

    def wait(self, instance_id: str, predicate, timeout: float = 60) -> dict[str, object]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.instance(instance_id)
            if predicate(last):
                return last  # type: ignore[return-value]
            time.sleep(0.3)
        raise AssertionError(f"{instance_id}: {last}\n{(self.root / 'agent.log').read_text()[-3000:]}")

    def peak_rss(self) -> int:
        """The kernel's high-water mark of the agent's RSS (bytes), so a freed spike still shows."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for process in psutil.process_iter(["pid"]):
            try:
                if process.environ().get("RECONCILER_DATA_DIR") == str(self.data):
                    os.killpg(os.getpgid(process.pid), signal.SIGKILL)
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    running = Agent(tmp_path)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def spec(instance_id: str, code: str = SLEEP, **extra: object) -> dict[str, object]:
    return {
        "id": instance_id,
        "model": "m",
        "backend": "custom",
        "argv": [sys.executable, "-c", code],
        "port": free_port(),
        "healthPath": "",
        "restartOnError": False,
        **extra,
    }


def raw_request(port: int, head: bytes) -> bytes:
    """Send a request line and headers, nothing of the announced body; the answer until the agent closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def in_error(instance: dict[str, object] | None) -> bool:
    return instance is not None and instance["state"] == "Error"


# --- issue 9 item 4 ------------------------------------------------------------------------


def test_before_the_token(agent: Agent) -> None:
    before = agent.peak_rss()
    # 300 MiB announced, never sent: the answer comes from the headers alone, and the
    # connection is closed rather than drained.
    head = f"PUT /v1/instances HTTP/1.1\r\nHost: x\r\nContent-Length: {300 * 1024 * 1024}\r\n\r\n".encode()
    answer = raw_request(agent.port, head)
    assert answer.startswith(b"HTTP/1.1 401") and b"connection: close" in answer.lower()
    streamed = httpx.put(
        f"{agent.url}/v1/instances", content=(b"x" * 1024 * 1024 for _ in range(64)), timeout=60
    )  # chunked, no token
    assert streamed.status_code == 401
    assert agent.peak_rss() - before < 32 * 1024 * 1024

    bad_json = httpx.put(f"{agent.url}/v1/instances", content=b"{not json", timeout=10)
    assert bad_json.status_code == 401
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/nowhere"):
        assert httpx.get(f"{agent.url}{path}", timeout=10).status_code == 401
        assert httpx.get(f"{agent.url}{path}", headers=AUTH, timeout=10).status_code == 404

    # With the token: a declared body past the cap is refused unread; a streamed one at the cap.
    head = (
        f"PUT /v1/instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {MAX_BODY + 1}\r\n\r\n"
    )
    assert raw_request(agent.port, head.encode()).startswith(b"HTTP/1.1 413")
    try:
        over = httpx.put(
            f"{agent.url}/v1/instances",
            content=(b" " * 1024 * 1024 for _ in range(MAX_BODY // (1024 * 1024) + 2)),
            headers=AUTH,
            timeout=60,
        )
        assert over.status_code == 413
    except httpx.TransportError:
        pass  # the agent closed the connection while the body was still coming: also refused
    assert httpx.get(f"{agent.url}/healthz", timeout=10).status_code == 200


# --- issue 9 item 5 ------------------------------------------------------------------------

BAD_SPECS = [
    ("id", "/tmp/x/abs"),
    ("id", "../escape"),
    ("id", "a/b"),
    ("id", "a\0b"),
    ("id", ""),
    ("id", "Upper"),
    ("id", "-dash"),
    ("port", 70000),
    ("port", -1),
    ("port", 0),
    ("healthPath", "@127.0.0.1:1/"),
    ("healthPath", "//evil.example/"),
    ("healthPath", "v1/models"),
    ("healthPath", "/a b"),
    ("argv", []),
    ("argv", [""]),
    ("argv", ["python", "a\0b"]),
    ("env", {"A=B": "x"}),
    ("env", {"": "x"}),
    ("env", {"A": "x\0y"}),
    ("gpus", [-1]),
    ("files", [{"source": "local", "path": "/a\0b"}]),
    ("files", [{"source": "hf:x", "path": "p", "repo": "../../etc"}]),
    ("files", [{"source": "hf:x", "path": "p", "repo": "a/b", "file": "../../x.gguf"}]),
]


def test_strict_bodies_and_spawn_failures(agent: Agent, tmp_path: Path) -> None:
    for field, value in BAD_SPECS:
        response = agent.put([spec("ok", **{field: value})])
        assert response.status_code == 422, (field, value, response.text)
        assert any(field.lower() in line.lower() for line in response.json()["detail"]), response.text
    nan = b'{"generation": 99, "instances": [{"id": "n", "model": "m", "backend": "b", "argv": ["x"], "port": NaN}]}'
    response = httpx.put(f"{agent.url}/v1/instances", content=nan, headers=AUTH, timeout=10)
    assert response.status_code == 422 and "NaN is not JSON" in response.text
    inf = json.dumps({"generation": 99, "instances": [spec("i", claim={"ram": float("inf")})]})
    assert httpx.put(f"{agent.url}/v1/instances", content=inf, headers=AUTH, timeout=10).status_code == 422
    assert not Path("/tmp/x/abs.log").exists()

    # Everything that reaches the spawn and fails there ends in Error with its reason.
    response = agent.put([spec("missing", argv=[str(tmp_path / "no-such-program")]), spec("dir", argv=["/"])])
    assert response.status_code == 200, response.text
    missing = agent.wait("missing", in_error)
    assert "no-such-program is not an executable file" in str(missing["message"])
    assert "not an executable file" in str(agent.wait("dir", in_error)["message"])
    assert not list((agent.data / "log").glob("**/*.log")), "nothing started, nothing logged"


# --- issue 9 item 6 ------------------------------------------------------------------------


def test_stale_state(agent: Agent, tmp_path: Path) -> None:
    # The client's specHash is ignored: the same id and hash with another argv replaces the process.
    first = spec("a", specHash="same")
    assert agent.put([first]).json()["changed"] is True
    pid = agent.wait("a", lambda i: i is not None and i["pid"] is not None)["pid"]
    changed = agent.put([{**first, "argv": [sys.executable, "-c", SLEEP + " # other"]}])
    assert changed.json()["changed"] is True
    agent.wait("a", lambda i: i is not None and i["pid"] not in (None, pid))

    # One agent per data dir.
    second = agent.refused_start()
    assert second.returncode == 1 and "another agent" in second.stderr and "Traceback" not in second.stderr

    # A damaged record: the agent refuses to start, kills nothing, and names the good copy.
    pid = agent.instance("a")["pid"]  # type: ignore[index]
    agent.kill()
    record = agent.data / "state.json"
    record.write_text('{"generation": 1, "instan')
    refused = agent.refused_start()
    assert refused.returncode == 1 and "damaged" in refused.stderr and "state.last-good.json" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert psutil.pid_exists(pid), "a damaged record must not stop instances"
    shutil.copy(agent.data / "state.last-good.json", record)
    agent.start()
    assert agent.wait("a", lambda i: i is not None and i["state"] in ("Starting", "Running"))["pid"] == pid

    # A local path naming a folder is sized by its own files, never walked.
    folder = tmp_path / "model"
    (folder / "deep" / "deeper").mkdir(parents=True)
    (folder / "config.json").write_bytes(b"x" * 10)
    (folder / "deep" / "deeper" / "big").write_bytes(b"x" * 1000)
    files = [{"source": "local", "path": str(folder)}, {"source": "local", "path": "/usr"}]
    assert agent.put([spec("f", files=files)]).status_code == 200
    listed = {f["path"]: f["size"] for f in agent.state()["files"]}  # type: ignore[union-attr]
    assert listed[str(folder)] == 10 and "/usr" in listed


# --- issue 9 item 7 ------------------------------------------------------------------------

SHOW_ENV = "import json, os, time; print(json.dumps(sorted(os.environ)), flush=True); time.sleep(120)"


def test_secrets_and_modes(agent: Agent) -> None:
    response = agent.put(
        [spec("env", SHOW_ENV, env={"HF_HUB_OFFLINE": "1"}), spec("sh", argv=["/bin/sh", "-c", "true"])]
    )
    assert response.status_code == 200
    log = agent.data / "log" / "serve" / "env.log"
    agent.wait("env", lambda i: i is not None and i["pid"] is not None)
    deadline = time.monotonic() + 30
    while "HF_HUB_OFFLINE" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.2)
    names = set(json.loads(log.read_text().splitlines()[-1]))
    assert "HF_HUB_OFFLINE" in names and "PATH" in names
    assert "HF_TOKEN" not in names and "PYTHONUNBUFFERED" not in names
    assert names <= {*BASE_ENV, "HF_HUB_OFFLINE", "RECONCILER_INSTANCE", "RECONCILER_DATA_DIR"}

    assert stat.S_IMODE(agent.data.stat().st_mode) == 0o700
    for path in (agent.data / "state.json", log):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path

    refused = agent.wait("sh", in_error)
    assert "/bin/sh is outside --allow-exec" in str(refused["message"])

    # A follow stream ends when its instance is deleted.
    lines: list[str] = []

    def follow() -> None:
        url = f"{agent.url}/v1/instances/env/logs"
        with httpx.stream("GET", url, params={"follow": 1}, headers=AUTH, timeout=30) as stream:
            lines.extend(stream.iter_lines())

    reader = threading.Thread(target=follow)
    reader.start()
    time.sleep(1)
    agent.put([])
    reader.join(timeout=60)
    assert not reader.is_alive() and any("HF_HUB_OFFLINE" in line for line in lines)


# --- issue 7 items 6 and 7 -----------------------------------------------------------------

# 64 MiB in the parent, and a child: the tree's RSS is reported.
HOLD = (
    "import subprocess, sys, time; b = bytearray(64 << 20); "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); time.sleep(120)"
)


def test_measured_memory(agent: Agent) -> None:
    assert agent.put([spec("mem", HOLD)]).status_code == 200
    measured = agent.wait("mem", lambda i: i is not None and (i.get("measuredRam") or 0) > 64 << 20)
    assert measured["measuredVram"] == {}  # no GPU here; per GPU index where NVML reports one


class Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


SERVE = (
    "import http.server, sys; "
    "http.server.HTTPServer(('0.0.0.0', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()"
)


def test_ports_the_agent_does_not_own(agent: Agent) -> None:
    foreign = socket.socket()
    foreign.bind(("127.0.0.1", 0))
    foreign.listen()
    held = foreign.getsockname()[1]
    try:
        own = free_port()
        response = agent.put(
            [
                spec("taken", port=held),
                spec("serves", argv=[sys.executable, "-c", SERVE, str(own)], port=own, healthPath="/"),
                spec("quiet", healthPath="/"),
            ]
        )
        assert response.status_code == 200
        taken = agent.wait("taken", in_error)
        assert f"port {held} is in use by pid {os.getpid()}" in str(taken["message"])
        agent.wait("serves", lambda i: i is not None and i["state"] == "Running")
        ports = agent.state()["portsInUse"]
        assert held in ports and own not in ports and agent.port in ports  # type: ignore[operator]

        # A foreign server answering on a Starting instance's port does not make it Running.
        quiet = agent.wait("quiet", lambda i: i is not None and i["state"] == "Starting")
        server = HTTPServer(("127.0.0.1", int(quiet["port"])), Healthy)  # type: ignore[call-overload]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            assert httpx.get(f"http://127.0.0.1:{quiet['port']}/", timeout=5).status_code == 200
            time.sleep(7)  # more than two probe intervals
            assert agent.instance("quiet")["state"] == "Starting"  # type: ignore[index]
        finally:
            server.shutdown()
            server.server_close()
    finally:
        foreign.close()


@given(
    name=st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z"),
    replica=st.integers(0, 10**6),
    index=st.integers(0, 64),
    suffix=st.sampled_from(["", "-ray-head", "-rpc-server-{}", "-ray-worker-{}"]),
)
def test_every_id_the_planner_makes_is_accepted(name: str, replica: int, index: int, suffix: str) -> None:
    """The planner names instances <model>-<replica>[-<role>[-<n>]], a model name being a DNS-1123 label."""
    assert INSTANCE_ID.match(f"{name}-{replica}{suffix.format(index)}")
