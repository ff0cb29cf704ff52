"""The agent API: token on every route but /healthz, generations, log level, files."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from reconciler.agent.api import AgentConfig, create_app
from reconciler.agent.files import ModelFiles
from reconciler.agent.supervisor import Supervisor

TOKEN = "test-token"


@pytest.fixture
def client(tmp_path):
    config = AgentConfig(
        name="w",
        ip="127.0.0.1",
        port=0,
        data_dir=tmp_path,
        cache_dir=tmp_path / "cache",
        token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
    )
    files = ModelFiles(config.cache_dir)
    app = create_app(config, Supervisor(tmp_path, files), files)
    with TestClient(app) as test_client:
        yield test_client


AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTES = [
    ("GET", "/v1/state"),
    ("PUT", "/v1/instances"),
    ("GET", "/v1/instances/x/logs"),
    ("PUT", "/v1/log-level"),
    ("GET", "/v1/files"),
    ("DELETE", "/v1/files/abc"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("header", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_every_route_needs_the_token(client, method, path, header):
    assert client.request(method, path, headers=header).status_code == 401


def test_healthz_is_open(client):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_state_reports_this_machine(client):
    body = client.get("/v1/state", headers=AUTH).json()
    assert body["name"] == "w" and body["state"] == "Ready" and body["memoryTotal"] > 0
    assert body["gpus"] == [] and body["instances"] == []
    assert any(b["name"] == "llama-cpp" for b in body["backends"]) or body["backends"] == []


def test_stale_generation_is_refused(client):
    assert client.put("/v1/instances", json={"generation": 10, "instances": []}, headers=AUTH).status_code == 200
    refused = client.put("/v1/instances", json={"generation": 9, "instances": []}, headers=AUTH)
    assert refused.status_code == 409 and "older" in refused.json()["detail"]
    again = client.put("/v1/instances", json={"generation": 10, "instances": []}, headers=AUTH)
    assert again.status_code == 200 and again.json() == {"generation": 10, "changed": False}


def test_bad_body_is_422(client):
    assert client.put("/v1/instances", json={"generation": -1, "instances": []}, headers=AUTH).status_code == 422


def test_log_level(client):
    assert client.put("/v1/log-level", json={"level": "debug"}, headers=AUTH).json() == {"level": "debug"}
    assert client.put("/v1/log-level", json={"level": "loud"}, headers=AUTH).status_code == 422


def test_unknown_logs_and_files(client):
    assert client.get("/v1/instances/none/logs", headers=AUTH).status_code == 404
    assert client.get("/v1/files", headers=AUTH).json() == []
    assert client.delete("/v1/files/abc", headers=AUTH).status_code == 404
