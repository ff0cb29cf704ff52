"""The server's commands fail with one clear line and exit 1 on user mistakes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.server.locks import hold
from tests.server.test_hosting import free_port

runner = CliRunner()


def test_serve_needs_exactly_one_source(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "either a GIT_URL or --watch" in result.output
    both = runner.invoke(app, ["serve", "file:///x", "--watch", str(tmp_path), "--data-dir", str(tmp_path)])
    assert both.exit_code == 1


def test_a_bad_store_url_is_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--watch", str(tmp_path), "--data-dir", str(tmp_path), "--store-url", "x://"])
    assert result.exit_code == 1 and "cannot open the store" in result.output


def test_clients_without_a_server(tmp_path: Path) -> None:
    for command in (["status"], ["history"], ["events"], ["files"], ["logs", "x-0"], ["usage"], ["token", "list"]):
        result = runner.invoke(app, [*command, "--data-dir", str(tmp_path)])
        assert result.exit_code == 1 and "no cluster is running" in result.output, command


def test_data_dir_from_the_environment(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status"], env={"RECONCILER_DATA_DIR": str(tmp_path / "elsewhere")})
    assert result.exit_code == 1 and "elsewhere" in result.output


def test_an_unreachable_store_is_one_line(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"
    result = runner.invoke(
        app, ["serve", "--watch", str(tmp_path), "--data-dir", str(tmp_path / "d"), "--store-url", url]
    )
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "cannot open the store" in result.output
    assert "secret" not in result.output


def test_a_second_server_on_one_data_dir_or_sqlite_file_refuses(tmp_path: Path) -> None:
    """Issue 16.13: the lock is what a running server holds (flock conflicts within one process too)."""
    first = hold(tmp_path / "server.lock", "x", "y")
    database = tmp_path / "shared.db"
    other = hold(database.with_name("shared.db.lock"), "x", "y")
    try:
        result = runner.invoke(app, ["serve", "--watch", str(tmp_path), "--data-dir", str(tmp_path)])
        assert result.exit_code == 1 and f"another server (pid {os.getpid()})" in result.output, result.output
        elsewhere = ["--data-dir", str(tmp_path / "two"), "--store-url", f"sqlite:///{database}"]
        result = runner.invoke(app, ["serve", "--watch", str(tmp_path), *elsewhere])
        assert result.exit_code == 1 and "SQLite cannot hold a leader lease" in result.output, result.output
    finally:
        os.close(first)
        os.close(other)


def test_serve_with_a_router_on_a_new_data_dir_starts(tmp_path: Path) -> None:
    """Issue 16.14: it exited 3 (the usage store opened before the data dir existed)."""
    folder = tmp_path / "manifests"
    folder.mkdir()
    data = tmp_path / "not" / "yet"
    ports = [str(free_port()), str(free_port())]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler.cli",
            "serve",
            "--watch",
            str(folder),
            "--data-dir",
            str(data),
            "--host",
            "127.0.0.1",
            "--port",
            ports[0],
            "--router-port",
            ports[1],
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (data / "server.json").exists():
            assert server.poll() is None, server.communicate()[1].decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        errors = server.communicate(timeout=30)[1].decode()
    assert server.returncode == 0, errors


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = runner.invoke(
            app, ["serve", "--watch", str(tmp_path), "--data-dir", str(tmp_path), "--host", "127.0.0.1", "--port", port]
        )
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output, result.output
