"""Both stacks served on loopback against the real emulators, for the wire tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass

import httpx
import pytest

from fastapi_app import create_app as create_fastapi_app
from harness.local.emulators import LocalEmulators
from harness.local.servers import ASGIServer, WSGIServer, environment
from legacy_flask import create_app as create_flask_app
from shared.settings import Settings

STACKS = ("flask", "fastapi")


@dataclass(frozen=True)
class Stacks:
    urls: dict[str, str]

    def client(self, stack: str) -> httpx.Client:
        return httpx.Client(base_url=self.urls[stack], timeout=30)


@contextmanager
def serve_stacks(
    emulators: LocalEmulators, settings: Settings, env: dict[str, str] | None = None
) -> Iterator[Stacks]:
    """Both stacks with `settings`, their clients pointed at the emulators (or `env`)."""
    with ExitStack() as stack, environment({**emulators.env(), **(env or {})}):
        flask = stack.enter_context(WSGIServer(create_flask_app(settings)))
        fastapi = stack.enter_context(ASGIServer(create_fastapi_app(settings)))
        yield Stacks({"flask": flask.url, "fastapi": fastapi.url})


@pytest.fixture(scope="session")
def stacks(emulators: LocalEmulators, make_settings: Callable[..., Settings]) -> Iterator[Stacks]:
    with serve_stacks(emulators, make_settings()) as running:
        yield running


@pytest.fixture(scope="session")
def start_stacks(
    emulators: LocalEmulators,
) -> Callable[..., AbstractContextManager[Stacks]]:
    """`with start_stacks(settings, env) as stacks:` both stacks with other settings."""

    def start(
        settings: Settings, env: dict[str, str] | None = None
    ) -> AbstractContextManager[Stacks]:
        return serve_stacks(emulators, settings, env)

    return start


@pytest.fixture(params=STACKS)
def stack(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once per stack."""
    name: str = request.param
    return name
