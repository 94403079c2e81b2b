"""The stacks under their production servers, their docs, and their logs."""

from __future__ import annotations

import contextlib
import http.client
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
        "--config=python:legacy_flask.gunicorn_conf",
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
        "--http=shared.serving:SnapshotHttpToolsProtocol",
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


@pytest.fixture(scope="module")
def production(
    emulators: LocalEmulators, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Both stacks under their production servers: server name -> URL."""
    logs = tmp_path_factory.mktemp("servers")
    with contextlib.ExitStack() as stack:
        yield {
            server: stack.enter_context(
                run_server(
                    server,
                    argv,
                    env=emulators.env(),
                    log_path=logs / f"{server}.log",
                    ready_path="/health",
                    cwd=ROOT,
                )
            ).url
            for server, argv in SERVERS.items()
        }


def _raw(url: str, method: str, path: str, headers: list[tuple[str, str]]) -> tuple[int, Any]:
    """A request with headers exactly as given, repeats included: (status, JSON body)."""
    body = json.dumps({"message": "hello"}).encode() if method == "POST" else b""
    parsed = httpx.URL(url)
    connection = http.client.HTTPConnection(parsed.host, parsed.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host="Host" in dict(headers))
        for name, value in [*headers, ("Content-Length", str(len(body)))]:
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        raw = response.read()
        assert response.getheader("Content-Type", "").startswith("application/json"), raw
        return response.status, json.loads(raw)
    finally:
        connection.close()


JSON = ("Content-Type", "application/json")
PAD = "p" * 12 * 1024


@pytest.mark.parametrize(
    ("method", "headers", "status", "message"),
    [
        ("POST", [JSON, ("Content-Type", "text/plain")], 400, "Duplicate Content-Type header"),
        ("POST", [("Content-Type", "text/plain"), JSON], 400, "Duplicate Content-Type header"),
        ("GET", [("Host", "a"), ("Host", "b")], 400, "Duplicate Host header"),
        ("GET", [("X-Pad", PAD)], 200, None),  # one 12 KiB field: over gunicorn's own 8 KiB
        ("GET", [(f"X-Pad-{i}", "p") for i in range(150)], 200, None),  # gunicorn's 100
        ("GET", [("X-Pad", PAD + PAD)], 431, "Request headers too large"),  # over on its own
        ("GET", [("X-Pad-1", PAD), ("X-Pad-2", PAD)], 431, "Request headers too large"),
        ("GET", [(f"X-Pad-{i}", "p" * 100) for i in range(200)], 431, "Request headers too large"),
    ],
    ids=[
        "two-content-types",
        "two-content-types-json-last",
        "two-hosts",
        "one-12k-header",
        "150-headers",
        "one-24k-header",
        "two-12k-headers",
        "200-headers-20k",
    ],
)
def test_both_production_servers_answer_header_abuse_alike(
    production: dict[str, str],
    method: str,
    headers: list[tuple[str, str]],
    status: int,
    message: str | None,
) -> None:
    path = "/api/v1/chat" if method == "POST" else "/health"
    answers = {name: _raw(url, method, path, headers) for name, url in production.items()}
    assert {name: answer[0] for name, answer in answers.items()} == dict.fromkeys(SERVERS, status)
    if message is not None:
        assert {answer[1]["error"] for answer in answers.values()} == {message}


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


@pytest.mark.parametrize(("method", "path"), [("POST", "//api/v1/chat"), ("GET", "//health")])
def test_both_production_servers_do_not_serve_a_path_with_leading_slashes(
    production: dict[str, str], method: str, path: str
) -> None:
    # werkzeug's routing strips leading slashes; Starlette matches the path as sent.
    headers = [JSON, ("Host", "evil.example")]
    answers = {name: _raw(url, method, path, headers) for name, url in production.items()}
    assert {name: (a[0], a[1]["error"]) for name, a in answers.items()} == dict.fromkeys(
        SERVERS, (404, "Not found")
    )


@pytest.mark.parametrize("server", SERVERS)
def test_a_body_refused_unread_still_gets_its_answer_on_a_kept_connection(
    production: dict[str, str], server: str
) -> None:
    # 70 000 bytes, over the 64 KiB limit: refused by its declared length, before it is
    # read. gunicorn closes a connection with unread data on it, and the kernel's reset then
    # loses the answer for the client (or a gateway's pool) half the time, unless the app
    # reads the rest first, as uvicorn does for FastAPI.
    oversized = b"x" * 70_000
    with httpx.Client(base_url=production[server], timeout=10) as client:
        statuses = []
        for _ in range(8):
            refused = client.post(
                "/api/v1/chat", content=oversized, headers={"Content-Type": "text/plain"}
            )
            statuses.append((refused.status_code, refused.json()["error"]))
            statuses.append((client.get("/health").status_code, ""))
    assert statuses == [(413, "Request body too large"), (200, "")] * 8


@pytest.mark.parametrize("server", SERVERS)
def test_a_chunked_body_past_the_limit_still_gets_its_413_on_a_kept_connection(
    production: dict[str, str], server: str
) -> None:
    # Chunked, no declared length: werkzeug stops reading at MAX_CONTENT_LENGTH and refuses
    # to read on, so the legacy app reads the rest from gunicorn's own input before the 413.
    def body() -> Iterator[bytes]:
        for _ in range(4):
            yield b"x" * 50_000

    with httpx.Client(base_url=production[server], timeout=10) as client:
        statuses = []
        for _ in range(6):
            refused = client.post(
                "/api/v1/chat", content=body(), headers={"Content-Type": "application/json"}
            )
            statuses.append((refused.status_code, refused.json()["error"]))
            statuses.append((client.get("/health").status_code, ""))
    assert statuses == [(413, "Request body too large"), (200, "")] * 6
