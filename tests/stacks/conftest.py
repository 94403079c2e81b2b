"""Both stacks served on loopback against the real emulators, for the wire tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass

import httpx
import pytest

from fastapi_app import create_app as create_fastapi_app
from harness.emulators import LocalEmulators
from harness.serving import ASGIServer, WSGIServer
from legacy_flask import create_app as create_flask_app
from shared.settings import Settings

STACKS = ("flask", "fastapi")


@dataclass(frozen=True)
class Stacks:
    urls: dict[str, str]

    def client(self, stack: str) -> httpx.Client:
        return httpx.Client(base_url=self.urls[stack], timeout=30)


@pytest.fixture(scope="session")
def emulators() -> Iterator[LocalEmulators]:
    with LocalEmulators() as running:
        yield running


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    # boto3 reads AWS_ENDPOINT_URL_* when a client is created: at app build (Flask) and
    # in the lifespan (FastAPI). Nothing else reads the process environment.
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def serve_stacks(
    emulators: LocalEmulators, settings: Settings, env: dict[str, str] | None = None
) -> Iterator[Stacks]:
    """Both stacks with `settings`, their clients pointed at the emulators (or `env`)."""
    with ExitStack() as stack, _environment({**emulators.env(), **(env or {})}):
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
