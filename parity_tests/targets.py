"""Where the two stacks are: built in this process against the local emulators, two live
base URLs, or one gateway that picks the stack by its override header."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from harness.serving import ASGIServer, WSGIServer, environment
from parity_tests.corpus import Stack
from shared.settings import Settings

if TYPE_CHECKING:
    from harness.emulators import LocalEmulators

OVERRIDE_HEADER = "X-Dualstack-Backend"

AppFactory = Callable[[Settings], Any]
"""Builds one stack's WSGI (Flask) or ASGI (FastAPI) app from settings."""


class SetupError(RuntimeError):
    """The targets cannot be used (a URL does not answer, a server did not start); the
    message is one line."""


@dataclass(frozen=True)
class Endpoint:
    """One stack as the runner reaches it: a base URL and headers added to every request."""

    base_url: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Targets:
    """Both stacks, and a label saying how they are reached (for the reports)."""

    flask: Endpoint
    fastapi: Endpoint
    label: str

    def endpoint(self, stack: Stack) -> Endpoint:
        """The endpoint of `stack`."""
        return self.flask if stack == "flask" else self.fastapi


def parity_settings(**overrides: Any) -> Settings:
    """Settings for in-process stacks: one agent attempt and a short agent timeout, so the
    fault cases answer fast, and quiet logs."""
    values: dict[str, Any] = {
        "agent_max_attempts": 1,
        "agent_timeout_seconds": 1.0,
        "store_max_attempts": 2,
        "log_level": "ERROR",
    }
    values.update(overrides)
    return Settings.model_validate(values)


def _default_flask(settings: Settings) -> Any:
    from legacy_flask import create_app

    return create_app(settings)


def _default_fastapi(settings: Settings) -> Any:
    from fastapi_app import create_app

    return create_app(settings)


@contextmanager
def serve_in_process(
    *,
    emulators: LocalEmulators | None = None,
    settings: Settings | None = None,
    flask_app: AppFactory = _default_flask,
    fastapi_app: AppFactory = _default_fastapi,
) -> Iterator[Targets]:
    """Both stacks served on free loopback ports against `emulators` (started here, and
    stopped at the end, when None); everything started here is stopped on exit.

    `flask_app` / `fastapi_app` build the apps (the shipped ones by default): the suite's own
    tests pass altered ones."""
    with ExitStack() as stack:
        # werkzeug logs every request unless told otherwise; the reports say what matters.
        werkzeug = logging.getLogger("werkzeug")
        stack.callback(werkzeug.setLevel, werkzeug.level)
        werkzeug.setLevel(logging.ERROR)
        if emulators is None:
            # Imported here: moto is slow to import, and live targets never need it.
            from harness.emulators import LocalEmulators

            try:
                emulators = stack.enter_context(LocalEmulators())
            except (OSError, RuntimeError) as exc:
                raise SetupError(f"cannot start the local emulators: {exc}") from exc
        # The table the emulators made, whatever DYNAMODB_TABLE the machine has.
        settings = settings or parity_settings(dynamodb_table=emulators.table)
        # boto3 reads the endpoints when the clients are made: at app creation for Flask,
        # in the lifespan for FastAPI, so the environment stays set while they run.
        stack.enter_context(environment(emulators.env()))
        try:
            flask = stack.enter_context(WSGIServer(flask_app(settings)))
            fastapi = stack.enter_context(ASGIServer(fastapi_app(settings)))
        except (OSError, RuntimeError) as exc:
            raise SetupError(f"cannot start the stacks: {exc}") from exc
        yield Targets(Endpoint(flask.url), Endpoint(fastapi.url), "in-process")


def live(flask_url: str, fastapi_url: str) -> Targets:
    """Two running servers, one per stack."""
    return Targets(
        Endpoint(flask_url.rstrip("/")),
        Endpoint(fastapi_url.rstrip("/")),
        f"live: flask {flask_url}, fastapi {fastapi_url}",
    )


def through_gateway(url: str) -> Targets:
    """One gateway serving both stacks, each request pinned by the override header."""
    base = url.rstrip("/")
    return Targets(
        Endpoint(base, {OVERRIDE_HEADER: "flask"}),
        Endpoint(base, {OVERRIDE_HEADER: "fastapi"}),
        f"gateway {url}",
    )


def check_reachable(targets: Targets, timeout: float = 5.0) -> None:
    """SetupError unless each stack answers `GET /health` (any status: it is up)."""
    for stack in ("flask", "fastapi"):
        endpoint = targets.endpoint(stack)
        try:
            httpx.get(
                endpoint.base_url + "/health", headers=dict(endpoint.headers), timeout=timeout
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            reason = str(exc) or type(exc).__name__
            raise SetupError(f"{stack} at {endpoint.base_url} is unreachable: {reason}") from None
