"""The stacks under their production servers, their docs, and their logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from fastapi_app import create_app as create_fastapi_app
from harness.local.emulators import LocalEmulators
from harness.local.processes import run_server
from legacy_flask import create_app as create_flask_app
from shared.settings import Settings

from .conftest import Stacks

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


SERVERS = {
    "gunicorn": [
        str(VENV_BIN / "gunicorn"),
        "legacy_flask:create_app()",
        "--bind",
        "127.0.0.1:{port}",
        "--workers",
        "1",
        "--threads",
        "4",
    ],
    "uvicorn": [
        str(VENV_BIN / "uvicorn"),
        "fastapi_app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    ],
}


@pytest.mark.parametrize("server", SERVERS)
def test_stack_runs_under_its_production_server(
    emulators: LocalEmulators, server: str, tmp_path: Path
) -> None:
    with run_server(
        server,
        SERVERS[server],
        env=emulators.env(),
        log_path=tmp_path / f"{server}.log",
        ready_path="/health",
        cwd=ROOT,
    ) as process:
        health = httpx.get(f"{process.url}/health")
        turn = httpx.post(
            f"{process.url}/api/v1/chat", json={"message": "from a real server"}, timeout=10
        )
    assert health.json()["status"] == "healthy"
    assert turn.status_code == 200, turn.text


def test_openapi_docs(stacks: Stacks) -> None:
    with stacks.client("fastapi") as client:
        docs = client.get("/docs")
        schema = client.get("/openapi.json").json()
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert set(schema["paths"]) >= {
        "/api/v1/chat",
        "/api/v1/chat/sessions/{session_id}",
        "/health",
        "/health/detailed",
    }
    chat = schema["paths"]["/api/v1/chat"]["post"]
    assert {"400", "413", "415", "429", "502", "503", "504"} <= set(chat["responses"])


def test_detailed_health_checks_real_dependencies(stacks: Stacks) -> None:
    with stacks.client("fastapi") as client:
        response = client.get("/health/detailed")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "healthy"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "dynamodb": True,
        "agent": True,
    }


def _log_lines(captured: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


def test_both_stacks_log_json_with_the_request_id(
    emulators: LocalEmulators,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in emulators.env().items():
        monkeypatch.setenv(name, value)
    settings = settings.model_copy(update={"log_level": "INFO"})
    flask = create_flask_app(settings).test_client()
    flask.get("/nope", headers={"X-Request-ID": "flask-req-1"})
    with TestClient(create_fastapi_app(settings)) as client:
        client.get("/nope", headers={"X-Request-ID": "fastapi-req-1"})
    completed = [
        e for e in _log_lines(capsys.readouterr().err) if e["event"] == "request.completed"
    ]
    assert [(e["stack"], e["request_id"], e["path"], e["status"]) for e in completed] == [
        ("flask", "flask-req-1", "/nope", 404),
        ("fastapi", "fastapi-req-1", "/nope", 404),
    ]
