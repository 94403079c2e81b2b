"""Where the two stacks are: built in this process against the local emulators, two live
base URLs, or one gateway that picks the stack by its override header.

The suite never imports a stack statically (DESIGN: it reaches them over HTTP/ASGI only): the
in-process apps are built from import strings, `"module:factory"`, resolved at run time."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pydantic

from harness.gateway.apps import AppLoadError, import_object
from harness.local.servers import ASGIServer, WSGIServer, environment
from parity_tests.cases import STACKS, Stack
from shared.schema_errors import one_line
from shared.settings import Settings

if TYPE_CHECKING:
    from harness.local.emulators import LocalEmulators

OVERRIDE_HEADER = "X-Dualstack-Backend"
OVERRIDE_TOKEN_HEADER = "X-Dualstack-Override-Token"  # noqa: S105 - a header's name
"""Sent beside the override header to a gateway whose `GATEWAY_OVERRIDE_HEADER` is token."""

AppFactory = Callable[[Settings], Any]
"""Builds one stack's WSGI (Flask) or ASGI (FastAPI) app from settings."""

DEFAULT_FLASK_APP = "legacy_flask:create_app"
DEFAULT_FASTAPI_APP = "fastapi_app:create_app"


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


def load_factory(spec: str | AppFactory) -> AppFactory:
    """The app factory named by import string `spec` (`package.module:function`, in the
    gateway's form: a trailing `()` is allowed, the factory being called with the stacks'
    settings here), or `spec` itself when it is already callable; SetupError (one line) when
    it cannot be loaded."""
    if callable(spec):
        return spec
    try:
        found = import_object(spec.removesuffix("()"))
    except AppLoadError as exc:
        raise SetupError(f"cannot load the app factory: {exc}") from None
    if not callable(found):
        raise SetupError(f"app factory {spec!r} is not callable")
    factory: AppFactory = found
    return factory


def _build(factory: AppFactory, settings: Settings, name: str) -> Any:
    try:
        return factory(settings)
    except SetupError:
        raise
    except Exception as exc:  # any failure of the app's own construction is a setup error
        raise SetupError(f"cannot build the {name} app: {one_line(exc)}") from None


@contextmanager
def serve_in_process(
    *,
    emulators: LocalEmulators | None = None,
    settings: Settings | None = None,
    flask_app: str | AppFactory = DEFAULT_FLASK_APP,
    fastapi_app: str | AppFactory = DEFAULT_FASTAPI_APP,
) -> Iterator[Targets]:
    """Both stacks served on free loopback ports against `emulators` (started here, and
    stopped at the end, when None); everything started here is stopped on exit.

    `flask_app` / `fastapi_app` build the apps: import strings (the shipped stacks by
    default) or factories (the suite's own tests pass altered ones). Anything that keeps
    them from starting (bad settings in the environment, a factory that cannot be loaded or
    fails) is a SetupError with a one-line reason."""
    build_flask, build_fastapi = load_factory(flask_app), load_factory(fastapi_app)
    if settings is None:
        # Read the environment before starting anything: a bad variable fails at once.
        try:
            parity_settings()
        except pydantic.ValidationError as exc:
            raise SetupError(f"invalid settings: {one_line(exc)}") from None
    with ExitStack() as stack:
        # werkzeug logs every request unless told otherwise; the reports say what matters.
        werkzeug = logging.getLogger("werkzeug")
        stack.callback(werkzeug.setLevel, werkzeug.level)
        werkzeug.setLevel(logging.ERROR)
        if emulators is None:
            # Imported here: moto is slow to import, and live targets never need it.
            from harness.local.emulators import LocalEmulators

            try:
                emulators = stack.enter_context(LocalEmulators())
            except (OSError, RuntimeError) as exc:
                raise SetupError(f"cannot start the local emulators: {exc}") from exc
        # The table the emulators made, whatever DYNAMODB_TABLE the machine has.
        try:
            settings = settings or parity_settings(dynamodb_table=emulators.table)
        except pydantic.ValidationError as exc:
            raise SetupError(f"invalid settings: {one_line(exc)}") from None
        # boto3 reads the endpoints when the clients are made: at app creation for Flask,
        # in the lifespan for FastAPI, so the environment stays set while they run.
        stack.enter_context(environment(emulators.env()))
        flask_wsgi = _build(build_flask, settings, "flask")
        fastapi_asgi = _build(build_fastapi, settings, "fastapi")
        try:
            flask = stack.enter_context(WSGIServer(flask_wsgi))
            fastapi = stack.enter_context(ASGIServer(fastapi_asgi))
        except (OSError, RuntimeError, ValueError) as exc:
            raise SetupError(f"cannot start the stacks: {one_line(exc)}") from None
        yield Targets(Endpoint(flask.url), Endpoint(fastapi.url), "in-process")


def live(flask_url: str, fastapi_url: str) -> Targets:
    """Two running servers, one per stack."""
    return Targets(
        Endpoint(flask_url.rstrip("/")),
        Endpoint(fastapi_url.rstrip("/")),
        f"live: flask {flask_url}, fastapi {fastapi_url}",
    )


def through_gateway(url: str, override_token: str | None = None) -> Targets:
    """One gateway serving both stacks, each request pinned by the override header, sent
    with `override_token` when given (a gateway in token mode ignores the header without
    it). The label never shows the token: it goes into the reports."""
    base = url.rstrip("/")
    token = {} if override_token is None else {OVERRIDE_TOKEN_HEADER: override_token}
    return Targets(
        Endpoint(base, {OVERRIDE_HEADER: "flask", **token}),
        Endpoint(base, {OVERRIDE_HEADER: "fastapi", **token}),
        f"gateway {url}",
    )


def check_reachable(
    targets: Targets, timeout: float = 5.0, transport: httpx.BaseTransport | None = None
) -> None:
    """SetupError unless each stack answers `GET /health` (any status: it is up). An endpoint
    that asks for its stack by the override header must be answered by that stack, as its
    `X-Dualstack-Backend` answer says: a gateway with the override off, or in token mode
    without the right token (or its backend header hidden) would otherwise serve both runs
    from one stack, and parity would hold trivially."""
    for stack in STACKS:
        endpoint = targets.endpoint(stack)
        try:
            with httpx.Client(transport=transport, timeout=timeout) as client:
                response = client.get(endpoint.base_url + "/health", headers=dict(endpoint.headers))
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            reason = str(exc) or type(exc).__name__
            raise SetupError(f"{stack} at {endpoint.base_url} is unreachable: {reason}") from None
        asked = {k.lower(): v for k, v in endpoint.headers.items()}.get(OVERRIDE_HEADER.lower())
        if asked is None:
            continue
        answered = response.headers.get(OVERRIDE_HEADER)
        if answered != asked:
            said = f"{OVERRIDE_HEADER}: {answered}" if answered else f"no {OVERRIDE_HEADER}"
            raise SetupError(
                f"{endpoint.base_url} answered {OVERRIDE_HEADER}: {asked} with {said}; "
                "is the gateway's override header off (GATEWAY_OVERRIDE_HEADER), its token "
                "not the one given (--override-token), or its backend header hidden?"
            )
