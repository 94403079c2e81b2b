"""The real gateway (`gateway.create_gateway`) served by uvicorn on loopback, both stacks
mounted, against the real emulators."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import httpx
import pytest

from gateway import create_gateway
from harness.emulators import LocalEmulators
from harness.gateway import Gateway
from harness.serving import ASGIServer, environment
from harness.settings import GatewaySettings
from shared.settings import Settings

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
            overrides["state_table"] = f"gw_{next(_tables)}"
            emulators.dynamodb.create_table(str(overrides["state_table"]))
        with environment(emulators.env()):
            app = create_gateway(settings or make_settings(), gateway_settings(**overrides))
            server = ASGIServer(app).start()
        try:
            yield RunningGateway(server.url, app)
        finally:
            server.stop()

    return start


def _counter() -> Iterator[int]:
    n = 0
    while True:
        n += 1
        yield n


_tables = _counter()


@pytest.fixture(scope="module")
def gateway(start_gateway: StartGateway) -> Iterator[RunningGateway]:
    """One gateway at 50 %, shared by a module's tests that do not change the rollout."""
    with start_gateway(fastapi_percent=50) as running:
        yield running
