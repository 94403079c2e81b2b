"""Any pair of apps by import string: `load_app`/`import_object` as tables, and
`uvicorn gateway:app` serving a pair that is not the chatbot (`thirdparty/mypkg`), or
refusing in one line to start when a string names nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from flask import Flask

from gateway import create_gateway
from harness.gateway.apps import AppLoadError, import_object, load_app
from harness.gateway.settings import GatewaySettings
from harness.local.emulators import LocalEmulators
from harness.local.processes import free_port, run_server

ROOT = Path(__file__).resolve().parents[3]
THIRDPARTY = Path(__file__).resolve().parent / "thirdparty"
FIXTURE_PACKAGES = ("mypkg", "badapps")


@pytest.fixture(autouse=True)
def thirdparty_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fixture packages importable for the test, and forgotten after it, so a module
    that failed or succeeded to import in one test is imported afresh in the next."""
    monkeypatch.syspath_prepend(str(THIRDPARTY))
    yield
    for name in list(sys.modules):
        if name.split(".")[0] in FIXTURE_PACKAGES:
            del sys.modules[name]


def _wsgi_app() -> Any:
    return import_object("badapps.objects:wsgi_app")


# --- import_object / load_app: what they find ------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("badapps.objects:wsgi_app", "wsgi_app"),
        ("badapps.objects:Holder.Inner.app", "wsgi_app"),  # a dotted attribute
        ("badapps.objects:create_app", "create_app"),  # the factory itself, not called
        ("badapps.objects:VERSION", "VERSION"),  # any object: import_object does not judge
    ],
)
def test_import_object_finds_the_named_object(spec: str, expected: str) -> None:
    import badapps.objects  # type: ignore[import-not-found]

    assert import_object(spec) is getattr(badapps.objects, expected)


@pytest.mark.parametrize(
    "spec",
    [
        "badapps.objects:wsgi_app",
        "badapps.objects:Holder.Inner.app",
        "badapps.objects:create_app()",  # the factory called: it returns wsgi_app
    ],
)
def test_load_app_gives_the_app(spec: str) -> None:
    assert load_app(spec) is _wsgi_app()


def test_load_app_loads_the_third_party_pair() -> None:
    flask_app = load_app("mypkg.legacy:create_app()")
    fastapi_app = load_app("mypkg.app:app")

    assert isinstance(flask_app, Flask)
    assert isinstance(fastapi_app, FastAPI)
    assert load_app("mypkg.legacy:create_app()") is not flask_app  # a factory: a new app each time
    assert load_app("mypkg.app:app") is fastapi_app


# --- what they refuse: one line naming the string ------------------------------------------

NOT_AN_IMPORT_STRING = "is not an import string 'module:attribute'"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        # malformed
        ("", f"'' {NOT_AN_IMPORT_STRING}"),
        ("badapps.objects", f"'badapps.objects' {NOT_AN_IMPORT_STRING}"),
        (":app", f"':app' {NOT_AN_IMPORT_STRING}"),
        ("badapps.objects:", f"'badapps.objects:' {NOT_AN_IMPORT_STRING}"),
        ("()", f"'()' {NOT_AN_IMPORT_STRING}"),
        (
            "badapps.objects:wsgi_app:extra",
            "'badapps.objects:wsgi_app:extra': 'badapps.objects' has no attribute 'wsgi_app:extra'",
        ),
        (
            ".objects:app",
            "cannot import '.objects' for '.objects:app': TypeError: the 'package' argument "
            "is required to perform a relative import for '.objects'",
        ),
        # missing module (top level, then a submodule of a package that exists)
        (
            "nope.module:app",
            "cannot import 'nope.module' for 'nope.module:app': ModuleNotFoundError: "
            "No module named 'nope'",
        ),
        (
            "badapps.missing:app",
            "cannot import 'badapps.missing' for 'badapps.missing:app': ModuleNotFoundError: "
            "No module named 'badapps.missing'",
        ),
        # module raising at import (its two-line message folded into one)
        (
            "badapps.raises:app",
            "cannot import 'badapps.raises' for 'badapps.raises:app': RuntimeError: "
            "database URL missing set DATABASE_URL",
        ),
        # missing attribute, plain and dotted
        (
            "badapps.objects:missing",
            "'badapps.objects:missing': 'badapps.objects' has no attribute 'missing'",
        ),
        (
            "badapps.objects:Holder.Missing.app",
            "'badapps.objects:Holder.Missing.app': 'badapps.objects' has no attribute "
            "'Holder.Missing.app'",
        ),
        # a lazily built attribute (a module `__getattr__`, as gateway:app is) that fails
        (
            "badapps.lazy:app",
            "'badapps.lazy:app': getting 'app' failed: RuntimeError: cannot reach the config "
            "service",
        ),
    ],
)
def test_import_object_refuses_in_one_line(spec: str, message: str) -> None:
    with pytest.raises(AppLoadError) as caught:
        import_object(spec)
    assert str(caught.value) == message
    # load_app reports the same failures the same way
    with pytest.raises(AppLoadError) as caught_by_load_app:
        load_app(spec)
    assert str(caught_by_load_app.value) == message


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        # a factory that raises, and one called wrongly (its TypeError is the factory's failure)
        (
            "badapps.objects:failing_factory()",
            "'badapps.objects:failing_factory()': the factory failed: KeyError: 'settings'",
        ),
        (
            "badapps.objects:factory_with_argument()",
            "'badapps.objects:factory_with_argument()': the factory failed: TypeError: "
            "factory_with_argument() missing 1 required positional argument: 'name'",
        ),
        # not callable, so not a factory
        (
            "badapps.objects:VERSION()",
            "'badapps.objects:VERSION()': 'badapps.objects:VERSION' is not callable",
        ),
        # not an app: what is named, or what the factory returns, must be callable
        ("badapps.objects:VERSION", "'badapps.objects:VERSION': it names a str, not an app"),
        (
            "badapps.objects:factory_returning_none()",
            "'badapps.objects:factory_returning_none()': the factory returned a NoneType, "
            "not an app",
        ),
        # missing factory: the message names the string as written, `()` included
        (
            "badapps.objects:nope()",
            "'badapps.objects:nope()': 'badapps.objects' has no attribute 'nope'",
        ),
    ],
)
def test_load_app_refuses_in_one_line(spec: str, message: str) -> None:
    with pytest.raises(AppLoadError) as caught:
        load_app(spec)
    assert str(caught.value) == message
    assert "\n" not in message


def test_create_gateway_names_the_setting_at_fault() -> None:
    settings = GatewaySettings(flask_app="mypkg.legacy:create_app()", fastapi_app="mypkg.app:nope")
    with pytest.raises(AppLoadError) as caught:
        create_gateway(gateway_settings=settings)
    assert str(caught.value) == (
        "GATEWAY_FASTAPI_APP: 'mypkg.app:nope': 'mypkg.app' has no attribute 'nope'"
    )


# --- uvicorn gateway:app, as a process --------------------------------------------------

GATEWAY = [sys.executable, "-m", "uvicorn", "gateway:app", "--host=127.0.0.1", "--port={port}"]


def _process_env(**values: str) -> dict[str, str]:
    """The test's environment without any GATEWAY_* of the machine's, the fixture packages
    importable, and `values`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(THIRDPARTY), os.environ.get("PYTHONPATH", "")) if part
    )
    env.update(values)
    return env


def _run_refused(**env: str) -> subprocess.CompletedProcess[str]:
    """`uvicorn gateway:app` with `env`, expected to exit on its own before serving (the
    timeout only bounds a broken gateway that serves anyway)."""
    argv = [arg.format(port=free_port()) for arg in GATEWAY]
    return subprocess.run(
        argv,
        cwd=ROOT,
        env=_process_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_gateway_serves_a_third_party_pair(emulators: LocalEmulators, tmp_path: Path) -> None:
    table = f"gw_apps_{uuid.uuid4().hex[:8]}"
    emulators.dynamodb.create_table(table)
    env = _process_env(
        **emulators.env(),
        GATEWAY_FLASK_APP="mypkg.legacy:create_app()",
        GATEWAY_FASTAPI_APP="mypkg.app:app",
        GATEWAY_FASTAPI_PERCENT="0",
        GATEWAY_STATE_TABLE=table,
        GATEWAY_OVERRIDE_HEADER="open",
    )
    with (
        run_server(
            "gateway",
            GATEWAY,
            env=env,
            log_path=tmp_path / "gateway.log",
            ready_path="/_gateway/rollout",
            cwd=ROOT,
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=30) as client,
    ):
        only_fastapi = client.get("/v2/inventory")
        only_flask = client.get("/legacy-only/report")
        shared = client.get("/inventory/bolt")
        shared_overridden = client.get(
            "/inventory/bolt", headers={"X-Dualstack-Backend": "fastapi"}
        )
        chatbot = client.post("/api/v1/chat", json={"message": "hello"})
        rollout = client.get("/_gateway/rollout")

    answers = {
        "only fastapi": (only_fastapi.status_code, only_fastapi.headers["x-dualstack-backend"]),
        "only flask": (only_flask.status_code, only_flask.headers["x-dualstack-backend"]),
        "shared at 0 %": (shared.status_code, shared.headers["x-dualstack-backend"]),
        "shared, override": (
            shared_overridden.status_code,
            shared_overridden.headers["x-dualstack-backend"],
        ),
    }
    assert answers == {
        "only fastapi": (200, "fastapi"),
        "only flask": (200, "flask"),
        "shared at 0 %": (200, "flask"),
        "shared, override": (200, "fastapi"),
    }
    assert only_fastapi.json() == {"items": ["bolt", "nut"], "served_by": "new"}
    assert only_flask.json() == {"report": "old", "served_by": "legacy"}
    assert shared.json() == {"item": "bolt", "count": 3, "served_by": "legacy"}
    assert shared_overridden.json() == {"item": "bolt", "count": 3, "served_by": "new"}
    # The chatbot is not mounted: neither app of this pair has its routes.
    assert chatbot.status_code in (404, 405)
    assert rollout.status_code == 200
    assert rollout.json()["fastapi_percent"] == 0


@pytest.mark.parametrize(
    ("setting", "spec", "detail"),
    [
        pytest.param(
            "GATEWAY_FASTAPI_APP",
            "nope.module:app",
            "cannot import 'nope.module' for 'nope.module:app': ModuleNotFoundError: "
            "No module named 'nope'",
            id="fastapi-missing-module",
        ),
        pytest.param(
            "GATEWAY_FLASK_APP",
            "mypkg.legacy:make_app()",
            "'mypkg.legacy:make_app()': 'mypkg.legacy' has no attribute 'make_app'",
            id="flask-missing-factory",
        ),
    ],
)
def test_an_unusable_import_string_stops_uvicorn_in_one_line(
    setting: str, spec: str, detail: str
) -> None:
    others = {
        "GATEWAY_FLASK_APP": "mypkg.legacy:create_app()",
        "GATEWAY_FASTAPI_APP": "mypkg.app:app",
    }
    finished = _run_refused(**{**others, setting: spec})
    assert finished.returncode != 0
    assert finished.stderr.splitlines() == [f"gateway: {setting}: {detail}"]
    assert "Traceback" not in finished.stdout + finished.stderr


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        pytest.param(
            "GATEWAY_FASTAPI_PERCENT",
            "150",
            "gateway: GATEWAY_FASTAPI_PERCENT: Input should be less than or equal to 100 "
            "(got '150')",
            id="percent",
        ),
        pytest.param(
            "GATEWAY_STICKY_RULES",
            '[{"source": "cookie"}]',
            "gateway: GATEWAY_STICKY_RULES.0.source: Input should be 'json', 'path' or "
            "'header' (got 'cookie')",
            id="sticky-rules",
        ),
        pytest.param(
            "GATEWAY_ADMIN_TOKENS",
            "alice:s3cret-a,bob:s3cret-a",
            "gateway: GATEWAY_ADMIN_TOKENS: Value error, two names share one token: the "
            "history could not tell them apart",  # and the tokens are not shown
            id="named-tokens-shared",
        ),
        pytest.param(
            "GATEWAY_ADMIN_TOKENS",
            "alice s3cret-b",
            "gateway: GATEWAY_ADMIN_TOKENS: Value error, entry 1 must be name:token, the name "
            "of letters, digits, '.', '_', '-' or '@' (at most 64)",
            id="named-tokens-malformed",
        ),
    ],
)
def test_an_invalid_gateway_setting_stops_uvicorn_in_one_line(
    variable: str, value: str, line: str
) -> None:
    finished = _run_refused(**{variable: value})
    assert finished.returncode != 0
    assert finished.stderr.splitlines() == [line]
