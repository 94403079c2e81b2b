"""Fixtures for the gateway's tests.

Rollout tests: a fresh table in the session's moto DynamoDB and real aioboto3 clients aimed
at it. Served tests: the real gateway (`gateway.create_gateway`) served by uvicorn on
loopback, both stacks mounted, against the real emulators."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioboto3
import httpx
import pytest
from botocore.exceptions import EndpointConnectionError

from gateway import create_gateway
from harness.gateway.proxy import Gateway
from harness.gateway.settings import GatewaySettings
from harness.local.emulators import LocalEmulators
from harness.local.processes import ServerProcess, run_server
from harness.local.servers import ASGIServer, environment
from shared.settings import Settings
from tests.conftest import TEST_SETTINGS

TOKEN = "test-admin-token"


@dataclass(frozen=True)
class RunningGateway:
    url: str
    app: Gateway

    def client(self, **options: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **options)  # type: ignore[arg-type]

    def set_percent(self, percent: float, routes: dict[str, float | None] | None = None) -> None:
        body: dict[str, object] = {"fastapi_percent": percent}
        if routes is not None:
            body["routes"] = routes
        with self.client() as client:
            response = client.put(
                "/_gateway/rollout", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
            )
        assert response.status_code == 200, response.text


def gateway_settings(**overrides: object) -> GatewaySettings:
    values: dict[str, object] = {"admin_token": TOKEN, "refresh_seconds": 0.2}
    values.update(overrides)
    with pytest.MonkeyPatch.context() as patch:
        for name in GatewaySettings.model_fields:
            patch.delenv(f"GATEWAY_{name.upper()}", raising=False)
        return GatewaySettings.model_validate(values)


StartGateway = Callable[..., AbstractContextManager[RunningGateway]]


@pytest.fixture(scope="session")
def start_gateway(
    emulators: LocalEmulators, make_settings: Callable[..., Settings]
) -> StartGateway:
    """`with start_gateway(**gateway_settings) as gw:` a gateway of its own.

    Each gets a rollout table of its own unless `state_table` is given, so one test's
    percentage cannot leak into another's."""

    @contextmanager
    def start(settings: Settings | None = None, **overrides: object) -> Iterator[RunningGateway]:
        if "state_table" not in overrides:
            overrides["state_table"] = f"gw_{next(_gateway_tables)}"
            emulators.dynamodb.create_table(str(overrides["state_table"]))
        with environment(emulators.env()):
            app = create_gateway(settings or make_settings(), gateway_settings(**overrides))
            server = ASGIServer(app).start()
        try:
            yield RunningGateway(server.url, app)
        finally:
            server.stop()

    return start


_gateway_tables = itertools.count(1)


def wait_until_judged(client: httpx.Client, count: int) -> dict[str, dict[str, int]]:
    """The shadow summary's counts once `count` exchanges are judged (polled: a shadow runs
    after its primary answered, in the gateway's server; generous, it runs out only when the
    test fails)."""
    deadline = time.monotonic() + 30
    while True:
        routes: dict[str, dict[str, int]] = client.get("/_gateway/shadow").json()["routes"]
        if sum(sum(by.values()) for by in routes.values()) >= count:
            return routes
        assert time.monotonic() < deadline, f"{count} shadow requests never judged: {routes}"
        time.sleep(0.02)


MODES = ("mounted", "upstream")
"""How the gateway reaches the stacks: mounted in its process, or over HTTP (upstream mode:
Flask on gunicorn, FastAPI on uvicorn, each a process of its own)."""
FLASK_ROUTES = "/health,/api/v1/chat,/static/<path:filename>"
"""The legacy app's routes, as a team lists them in `GATEWAY_FLASK_ROUTES` (its url_map)."""
ROOT = Path(__file__).resolve().parents[3]


def stack_environment(emulators: LocalEmulators, **settings: str) -> dict[str, str]:
    """The environment a stack process runs with: the emulators', the test settings
    (`build_settings`' as variables), and the shadow header trusted, as behind a gateway
    that runs elsewhere."""
    values = {
        **{name.upper(): str(value) for name, value in TEST_SETTINGS.items()},
        "TRUST_SHADOW_HEADER": "true",
        "DYNAMODB_TABLE": emulators.table,
    }
    values.update({name.upper(): value for name, value in settings.items()})
    return {**emulators.env(), **values}


FLASK_ARGV = [
    *(sys.executable, "-m", "gunicorn", "legacy_flask:create_app()"),
    *("--config=python:legacy_flask.gunicorn_conf", "--bind=127.0.0.1:{port}"),
    *("--workers=2", "--threads=8"),
]
FASTAPI_ARGV = [
    *(sys.executable, "-m", "uvicorn", "fastapi_app.main:app", "--host=127.0.0.1"),
    *("--port={port}", "--no-access-log", "--http=shared.serving:SnapshotHttpToolsProtocol"),
]


@contextmanager
def stack_process(
    side: str, emulators: LocalEmulators, logs: Path, **settings: str
) -> Iterator[ServerProcess]:
    """One stack as its own process on a free loopback port: "flask" on gunicorn (2
    workers), "fastapi" on uvicorn; stopped (its whole group) when the block ends."""
    argv = FLASK_ARGV if side == "flask" else FASTAPI_ARGV
    env = stack_environment(emulators, **settings)
    with run_server(
        side, argv, env=env, log_path=logs / f"{side}.log", ready_path="/health", cwd=ROOT
    ) as server:
        yield server


@dataclass(frozen=True)
class UpstreamStacks:
    flask: ServerProcess
    fastapi: ServerProcess

    def settings(self) -> dict[str, object]:
        """The gateway settings that put both stacks behind HTTP."""
        return {
            "flask_url": self.flask.url,
            "fastapi_url": self.fastapi.url,
            "flask_routes": FLASK_ROUTES,
        }


@pytest.fixture(scope="session")
def upstream_stacks(
    emulators: LocalEmulators, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UpstreamStacks]:
    """Both stacks as processes of their own for the session, on the emulators."""
    logs = tmp_path_factory.mktemp("upstreams")
    with (
        stack_process("flask", emulators, logs) as flask,
        stack_process("fastapi", emulators, logs) as fastapi,
    ):
        yield UpstreamStacks(flask, fastapi)


@pytest.fixture(scope="module", params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def start_in_mode(
    mode: str, start_gateway: StartGateway, request: pytest.FixtureRequest
) -> StartGateway:
    """`start_gateway`, with the stacks mounted or (upstream mode) behind HTTP."""
    if mode == "mounted":
        return start_gateway
    stacks: UpstreamStacks = request.getfixturevalue("upstream_stacks")

    def start(**overrides: object) -> AbstractContextManager[RunningGateway]:
        return start_gateway(**{**stacks.settings(), **overrides})

    return start


@pytest.fixture(scope="module")
def gateway(start_gateway: StartGateway) -> Iterator[RunningGateway]:
    """One gateway at 50 %, shared by a module's tests that do not change the rollout; the
    override header open, as the tests pin requests to a stack."""
    with start_gateway(fastapi_percent=50, override_header="open") as running:
        yield running


OpenClient = Callable[[], AbstractAsyncContextManager[Any]]


class Flaky:
    """The real client, until `broken` is set: then every call fails to connect. Every
    client `open_client` gives is one, so a test can cut the store off mid-way."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.broken = False

    def __getattr__(self, operation: str) -> Callable[..., Awaitable[Any]]:
        async def call(**kwargs: Any) -> Any:
            if self.broken:
                raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
            return await getattr(self.client, operation)(**kwargs)

        return call


_tables = itertools.count()


@pytest.fixture(scope="session")
def _table_maker(emulators: LocalEmulators) -> Iterator[Any]:
    client = emulators.dynamodb.client()
    yield client
    client.close()


@pytest.fixture
def rollout_table(_table_maker: Any) -> str:
    """A table of this test's own, keyed by `session_id` like the session table, so no test
    sees another's rollout. Created directly (moto makes it active at once): a fresh client,
    waiter and TTL set-up per test, as `DynamoDBEmulator.create_table` does, cost 8x more."""
    name = f"rollout_{next(_tables)}"
    _table_maker.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "session_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "session_id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest.fixture(scope="session")
def open_client(emulators: LocalEmulators) -> OpenClient:
    """`async with open_client() as client:` a real aioboto3 DynamoDB client on the emulator,
    opened in the running event loop (each test runs its own with `asyncio.run`)."""
    # One session for all: a client's event loop is its own, but the session's loaded
    # service models are shared, which makes each client cheap to open.
    session = aioboto3.Session()

    @asynccontextmanager
    async def open_one() -> AsyncIterator[Flaky]:
        async with emulators.dynamodb.async_client(session=session) as client:
            yield Flaky(client)

    return open_one
