"""The server's commands fail with one clear line and exit 1 on user mistakes."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from reconciler.cli import app

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
