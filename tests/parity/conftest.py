"""Deliberately altered stacks for the parity suite's own tests, and the fixtures serving
them on loopback against the session's emulators.

Each alteration is what a migration could get wrong: pure ASGI middleware rewriting the
FastAPI answers, a slowed-down FastAPI, a session store that writes its records differently
(injected after the lifespan built the real one), and a Flask app whose answer varies per
call (for the noise check). One pair of servers serves them all: tests switch alterations on
and off around their runs."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from fastapi_app import create_app as create_fastapi_app
from harness.diff import Rules
from harness.local.emulators import LocalEmulators
from legacy_flask import create_app as create_flask_app
from parity_tests.cases import Case, load_corpus
from parity_tests.cli import DEFAULT_RULES
from parity_tests.targets import Targets, parity_settings, serve_in_process
from parity_tests.yaml_files import load_rules
from shared.settings import Settings
from shared.store import AsyncSessionStore

ASGIApp = Callable[..., Any]
Change = Callable[[str, str, int, list[tuple[bytes, bytes]], bytes], tuple[int, list[Any], bytes]]


class Rewrite:
    """Pure ASGI middleware: buffers each http answer and lets `change(method, path, status,
    headers, body)` return another status, headers and body."""

    def __init__(self, app: ASGIApp, change: Change) -> None:
        self.app = app
        self.change = change

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def buffer(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            status, headers, body = self.change(
                scope["method"],
                scope["path"],
                start["status"],
                list(start["headers"]),
                b"".join(chunks),
            )
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            if scope["method"] != "HEAD":
                headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffer)


def json_change(
    edit: Callable[[str, str, int, dict[str, Any]], int | None],
) -> Change:
    """A `Change` that edits JSON object bodies in place; `edit` may return a new status."""

    def change(
        method: str, path: str, status: int, headers: list[Any], body: bytes
    ) -> tuple[int, list[Any], bytes]:
        try:
            data = json.loads(body)
        except ValueError:
            return status, headers, body
        if not isinstance(data, dict):
            return status, headers, body
        new_status = edit(method, path, status, data)
        return new_status or status, headers, json.dumps(data).encode()

    return change


TIMER_SLACK_S = 0.002


class Slow:
    """Pure ASGI middleware adding `seconds` before every http request is handled."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            # The loop's timers (uvloop's count whole milliseconds) may wake up to one early:
            # a slack of two makes "every request waited `seconds`" hold.
            await asyncio.sleep(self.seconds + TIMER_SLACK_S)
        await self.app(scope, receive, send)


Rewriter = Callable[[str, dict[str, Any]], dict[str, Any]]


class AlteredClient:
    """An aioboto3 DynamoDB client whose item requests and replies go through `request` and
    `reply` when they are set (None: passed as they are)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.request: Rewriter | None = None
        self.reply: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def __getattr__(self, name: str) -> Any:
        original = getattr(self._client, name)
        if name not in ("get_item", "put_item", "update_item", "delete_item"):
            return original

        async def call(**kwargs: Any) -> Any:
            if self.request is not None:
                kwargs = self.request(name, kwargs)
            answer = await original(**kwargs)
            return self.reply(answer) if self.reply is not None else answer

        return call


class StoreTap:
    """Builds the FastAPI app's session store over an `AlteredClient`, through the app's
    `store` factory, and keeps that client in `self.client` for tests to alter."""

    def __init__(self) -> None:
        self.client: AlteredClient | None = None

    def __call__(self, dynamodb: Any, settings: Settings) -> AsyncSessionStore:
        self.client = AlteredClient(dynamodb)
        return AsyncSessionStore(self.client, settings)


class Switch:
    """Pure ASGI middleware: serves `app` wrapped by the alteration in use, if any."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.current = app

    def use(self, wrap: Callable[[Any], Any] | None) -> None:
        self.current = wrap(self.app) if wrap is not None else self.app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self.current(scope, receive, send)


StoreChange = tuple[Rewriter, Callable[[dict[str, Any]], dict[str, Any]] | None]


def renamed_history(name: str = "messages") -> StoreChange:
    """A store writing (and reading) the history under another attribute name."""

    def request(operation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        names = kwargs.get("ExpressionAttributeNames")
        if names:
            kwargs["ExpressionAttributeNames"] = {
                k: (name if v == "history" else v) for k, v in names.items()
            }
        if operation == "put_item" and "history" in kwargs["Item"]:
            kwargs["Item"] = {(name if k == "history" else k): v for k, v in kwargs["Item"].items()}
        return kwargs

    def reply(answer: dict[str, Any]) -> dict[str, Any]:
        for key in ("Item", "Attributes"):
            item = answer.get(key)
            if isinstance(item, dict) and "session_id" in item:
                item.pop("history", None)
                if name in item:
                    item["history"] = item.pop(name)
        return answer

    return request, reply


def prepended_history() -> StoreChange:
    """A store that puts each new exchange first instead of last (list_append reversed)."""

    def request(operation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        expression = kwargs.get("UpdateExpression", "")
        appended = "list_append(if_not_exists(#h, :empty), :new)"
        if appended in expression:
            kwargs["UpdateExpression"] = expression.replace(
                appended, "list_append(:new, if_not_exists(#h, :empty))"
            )
        return kwargs

    return request, None


class CountingResponses:
    """WSGI middleware for the Flask app: appends a per-call counter to chat answers'
    `response`, so two identical requests get different answers (noise)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counter = itertools.count(1)
        self.on = False

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not self.on:
            return self.app(environ, start_response)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.update(status=status, headers=headers)
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("response"), str):
            data["response"] += f" #{next(self.counter)}"
            body = json.dumps(data).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]


@dataclass
class Stacks:
    """Both stacks on loopback, FastAPI alterable by `alter`, Flask's answers by `counting`."""

    targets: Targets
    switch: Switch
    tap: StoreTap
    counting: CountingResponses

    @contextmanager
    def alter(
        self,
        fastapi: Callable[[Any], Any] | None = None,
        store: StoreChange | None = None,
        counting: bool = False,
    ) -> Iterator[Targets]:
        """Serve with these alterations for the block; the shipped behaviour after it."""
        assert self.tap.client is not None
        self.switch.use(fastapi)
        self.tap.client.request, self.tap.client.reply = store or (None, None)
        self.counting.on = counting
        try:
            yield self.targets
        finally:
            self.switch.use(None)
            self.tap.client.request = self.tap.client.reply = None
            self.counting.on = False


@pytest.fixture(scope="session")
def stacks(emulators: LocalEmulators) -> Iterator[Stacks]:
    """One pair of stacks for every parity self-test, against the session's emulators;
    unaltered unless a test asks, inside `stacks.alter(...)`."""
    parts: dict[str, Any] = {}

    def build_fastapi(settings: Settings) -> Any:
        parts["tap"] = StoreTap()
        parts["switch"] = Switch(create_fastapi_app(settings, store=parts["tap"]))
        return parts["switch"]

    def build_flask(settings: Settings) -> Any:
        parts["counting"] = CountingResponses(create_flask_app(settings))
        return parts["counting"]

    with serve_in_process(
        emulators=emulators,
        settings=parity_settings(dynamodb_table=emulators.table),
        flask_app=build_flask,
        fastapi_app=build_fastapi,
    ) as targets:
        yield Stacks(targets, parts["switch"], parts["tap"], parts["counting"])


@pytest.fixture
def shipped(stacks: Stacks) -> Iterator[Targets]:
    """The two shipped stacks, unaltered."""
    with stacks.alter() as targets:
        yield targets


@pytest.fixture(scope="session")
def corpus() -> list[Case]:
    return load_corpus()


@pytest.fixture(scope="session")
def rules() -> Rules:
    return load_rules(DEFAULT_RULES)


def pick(corpus: list[Case], *names: str) -> list[Case]:
    """The named cases, in the order given; KeyError for a name the corpus lacks."""
    by_name = {case.name: case for case in corpus}
    return [by_name[name] for name in names]
