"""How targets are started (pure), and one started for real."""

from __future__ import annotations

import sys
from pathlib import Path
from wsgiref.simple_server import demo_app

import httpx
import pytest

from harness.gateway.apps import AppLoadError
from harness.local.emulators.dynalite import installed
from harness.local.emulators.dynamodb import ExternalDynamoDB
from load_test import a2wsgi_app, targets
from load_test.targets import Launch, Workers

PY = (sys.executable, "-m")
UVICORN = ("--host", "127.0.0.1", "--port", "{port}", "--no-access-log", "--log-level", "warning")
UVICORN += ("--http", "shared.serving:SnapshotHttpToolsProtocol")
GUNICORN = (*PY, "gunicorn", "legacy_flask:create_app()", "--config")
GUNICORN += ("python:legacy_flask.gunicorn_conf", "--bind", "127.0.0.1:{port}")
WORKERS = Workers(sync_workers=5, workers=2, threads=16, wsgi_threads=10)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "flask-gunicorn-sync",
            Launch(
                (*GUNICORN, "--backlog", "2048", "--worker-class", "sync", "--workers", "5"),
                {},
                "/health",
                "gunicorn, 5 sync workers",
            ),
        ),
        (
            "flask-gunicorn-threads",
            Launch(
                (*GUNICORN, "--backlog", "2048", "--worker-class", "gthread", "--workers", "2",
                 "--threads", "16"),
                {},
                "/health",
                "gunicorn, 2 gthread workers x 16 threads",
            ),
        ),
        (
            "flask-a2wsgi",
            Launch(
                (*PY, "uvicorn", "--factory", "load_test.a2wsgi_app:create_app", *UVICORN,
                 "--workers", "2"),
                {"LOAD_TEST_WSGI_THREADS": "10"},
                "/health",
                "uvicorn, 2 workers, a2wsgi 10 threads",
            ),
        ),
        (
            "fastapi-uvicorn",
            Launch(
                (*PY, "uvicorn", "fastapi_app.main:app", *UVICORN, "--workers", "2"),
                {},
                "/health",
                "uvicorn, 2 workers",
            ),
        ),
        (
            "client-ceiling",
            Launch(
                (*PY, "load_test.ceiling", "--port", "{port}"),
                {},
                "/",
                "trivial asyncio server answering at once",
            ),
        ),
    ],
)  # fmt: skip
def test_launch(name: str, expected: Launch) -> None:
    assert targets.launch(name, WORKERS) == expected


def test_each_gateway_gets_its_percentage_and_a_table_of_its_own() -> None:
    first, second = (targets.launch("gateway-37.5", WORKERS) for _ in range(2))
    assert first.argv == (*PY, "uvicorn", "gateway:app", *UVICORN, "--workers", "2")
    assert {k: v for k, v in first.env.items() if k != "GATEWAY_STATE_TABLE"} == {
        "GATEWAY_FASTAPI_PERCENT": "37.5",
        "GATEWAY_WSGI_THREADS": "10",
        "GATEWAY_OVERRIDE_HEADER": "open",
    }
    assert first.env["GATEWAY_STATE_TABLE"] != second.env["GATEWAY_STATE_TABLE"]


@pytest.mark.parametrize(
    ("name", "percent"),
    [("gateway-50", 50.0), ("gateway-0", 0.0), ("gateway-100", 100.0), ("gateway-12.5", 12.5),
     ("gateway-101", None), ("gateway-", None), ("gateway-x", None), ("fastapi-uvicorn", None)],
)  # fmt: skip
def test_gateway_percent(name: str, percent: float | None) -> None:
    assert targets.gateway_percent(name) == percent


@pytest.mark.parametrize(
    ("name", "known"),
    [("flask-gunicorn-sync", True), ("gateway-50", True), ("client-ceiling", True),
     ("gateway-upstream-100", True), ("flask", False), ("gateway-200", False),
     ("gateway-upstream-101", False)],
)  # fmt: skip
def test_is_known(name: str, known: bool) -> None:
    assert targets.is_known(name) is known


def test_the_upstream_gateway_reaches_fastapi_started_beside_it(tmp_path: Path) -> None:
    spec = targets.launch("gateway-upstream-100", WORKERS)
    assert (spec.upstream, spec.env["GATEWAY_FASTAPI_PERCENT"]) == ("fastapi-uvicorn", "100")
    assert targets.upstream_percent("gateway-upstream-100") == 100.0
    assert targets.gateway_percent("gateway-upstream-100") is None
    one = targets.Workers(workers=1)
    with (
        targets.emulators_process(0.0, tmp_path) as emulators,
        targets.started(
            "gateway-upstream-100", workers=one, emulators=emulators, log_dir=tmp_path
        ) as target,
    ):
        assert target.upstream is not None and target.upstream.name == "fastapi-uvicorn"
        answer = httpx.get(f"{target.url}/health/detailed", timeout=10)
        # FastAPI's own route, reached over HTTP: its OpenAPI document was read.
        assert answer.headers["x-dualstack-backend"] == "fastapi"
        assert answer.json()["version"] == "2.0.0"
        assert target.process is not None
        own, alone = target.process.cpu_seconds(), target.upstream.cpu_seconds()
        cpu = target.cpu_seconds()  # read last: CPU time only grows
        assert own is not None and alone is not None and cpu is not None
        assert cpu >= own + alone  # the upstream's counted with the gateway's
        upstream = target.upstream.process
        assert upstream is not None
    assert upstream.exited()  # stopped with the gateway


def test_url_targets() -> None:
    target = targets.parse_url_target("staging=http://10.0.0.5:8000/")
    assert (target.name, target.url, target.process) == ("staging", "http://10.0.0.5:8000", None)
    assert target.cpu_seconds() is None
    bad_urls = ("http://10.0.0.5", "x=https://secure", "sp ace=http://h:1", "x=http://h:1/prefix",
                "x=http://h:1/?q=1", "x=http://:1", "x=http://h:port")  # fmt: skip
    for bad in bad_urls:
        with pytest.raises(ValueError, match="name=http"):
            targets.parse_url_target(bad)


def test_a_started_target_serves_is_measured_and_is_gone_after(tmp_path: Path) -> None:
    with targets.started(
        "client-ceiling", workers=WORKERS, emulators=None, log_dir=tmp_path
    ) as target:
        assert httpx.get(target.url).status_code == 200
        assert target.process is not None
        cpu = target.cpu_seconds()
        assert cpu is not None and cpu >= 0
        process = target.process.process
    assert process.returncode == 0  # it stopped itself on SIGTERM, and was not killed
    with pytest.raises(httpx.ConnectError):
        httpx.get(target.url)


@pytest.mark.skipif(installed() is None, reason="dynalite is not installed")
def test_dynalite_runs_as_the_emulators_store_and_its_cpu_is_read_apart(tmp_path: Path) -> None:
    with targets.emulators_process(0.0, tmp_path, dynamodb="dynalite") as emulators:
        store = emulators.processes["dynamodb"]
        assert "serve-dynalite.js" in " ".join(store.process.args)  # type: ignore[arg-type]
        url = emulators.env["AWS_ENDPOINT_URL_DYNAMODB"]
        assert url.startswith("http://127.0.0.1:")
        emulators.create_table("load_sessions")  # in that store, through its url
        client = ExternalDynamoDB(url).client()
        try:  # the agent emulator's process made the session tables there too
            assert {"chat_sessions", "load_sessions"} <= set(client.list_tables()["TableNames"])
        finally:
            client.close()
        cpu = emulators.cpu_seconds()
        assert set(cpu) == {"dynamodb", "agent"}
        assert cpu["dynamodb"] is not None and cpu["dynamodb"] > 0  # Node's own, not ours
        node = store.process
    assert node.returncode is not None  # stopped with the rest


def test_the_a2wsgi_target_loads_its_app_by_import_string(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOAD_TEST_WSGI_APP", "wsgiref.simple_server:demo_app")
    monkeypatch.setenv("LOAD_TEST_WSGI_THREADS", "3")
    app = a2wsgi_app.create_app()
    assert (app.app, app.executor._max_workers) == (demo_app, 3)
    monkeypatch.setenv("LOAD_TEST_WSGI_APP", "wsgiref.simple_server:no_such_app()")
    with pytest.raises(AppLoadError, match="has no attribute 'no_such_app'"):
        a2wsgi_app.create_app()
