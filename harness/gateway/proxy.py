"""The gateway: one ASGI app in front of a WSGI stack (through a2wsgi) and an ASGI stack.

Decide, then act: `Gateway.__call__` reads the body, gathers the facts, asks the pure
`choose()` which stack serves the request, and forwards. Everything it knows about a
request's routing is in `Facts`; everything it decided is in `Decision`.
"""

from __future__ import annotations

import contextlib
import json
import operator
import random
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from time import perf_counter

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harness.gateway.admission import PoolGuard
from harness.gateway.body import BodyTooLarge, ClientGone, read_body, replay
from harness.gateway.lifespan import run_lifespan
from harness.gateway.metrics import GatewayMetrics
from harness.gateway.ownership import Ownership
from harness.gateway.policy import Backend, Facts, Policy, choose
from harness.gateway.rollout import RolloutState
from harness.gateway.settings import GatewaySettings
from harness.gateway.sticky import StickyRules
from shared import contract
from shared.logs import request_id

BACKEND_HEADER = "X-Dualstack-Backend"
ADMIN_PREFIX = "/_gateway"
OVERLOADED = "Service overloaded, retry later"
_BODYLESS = {"GET", "HEAD", "OPTIONS", "DELETE"}

Control = Callable[[], AbstractAsyncContextManager[tuple[RolloutState, ASGIApp]]]
"""Opens the rollout state (and the admin app over it) for the gateway's lifespan."""


@dataclass(frozen=True)
class Stacks:
    flask: ASGIApp
    fastapi: ASGIApp

    def __getitem__(self, backend: Backend) -> ASGIApp:
        return self.flask if backend == "flask" else self.fastapi


class Gateway:
    """Routes each request to one stack, says which served it, and measures it."""

    def __init__(
        self,
        stacks: Stacks,
        ownership: Ownership,
        settings: GatewaySettings,
        control: Control,
        *,
        metrics: GatewayMetrics | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.stacks = stacks
        self.ownership = ownership
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.pool = PoolGuard(
            settings.wsgi_threads, settings.wsgi_queue, self.metrics.set_pool_in_use
        )
        self.metrics.pool_capacity = self.pool.capacity
        self.sticky = StickyRules(settings.sticky_rules)
        self._control = control
        self._draw = draw
        self._state: RolloutState | None = None
        self._policy: Policy | None = None
        self._apps: dict[str, ASGIApp] = {"flask": stacks.flask, "fastapi": stacks.fastapi}
        self._admin: ASGIApp | None = None

    @property
    def state(self) -> RolloutState:
        if self._state is None:
            raise RuntimeError("the gateway's lifespan has not started")
        return self._state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._serve_other(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(ADMIN_PREFIX) and _is_admin(path):
            await self._serve_admin(scope, receive, send)
            return
        # Proxied: the hot path, which every request to a stack runs. It stays flat (the
        # proxying inline, few calls, no comprehensions or context managers, no objects
        # beyond the decision's own): each of those costs the stacks' throughput.
        started = perf_counter()
        # Built in C: ASGI header names are lower case; a repeated name keeps its last value.
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id")
        rid = request_id(None if given is None else given.decode("latin-1"))
        method = scope["method"]
        length = headers.get(b"content-length", b"")
        limit = self.settings.max_body_bytes
        if length.isdigit() and int(length) > limit:
            await self._refuse(send, rid, 413, contract.BODY_TOO_LARGE)
            return
        body = b""
        consumed = False  # whether the request's messages were read here, to be replayed
        if method not in _BODYLESS or length not in (b"", b"0") or b"transfer-encoding" in headers:
            try:
                body = await read_body(receive, limit)
                consumed = True
            except BodyTooLarge:
                await self._refuse(send, rid, 413, contract.BODY_TOO_LARGE)
                return
            except ClientGone:
                return
        owners, route = self.ownership.resolve(path)
        rollout = (self._state or self.state).current
        policy = self._policy
        if policy is None or policy.rollout is not rollout:  # one Policy per rollout
            policy = self._policy = Policy(
                rollout, self.settings.salt, self.settings.override_header
            )
        key: str | None = None
        length_header: tuple[bytes, bytes] | None = None  # set when the body changed
        if len(owners) != 1 and rollout.percent_for(path) not in (0.0, 100.0):
            # Only a split needs the conversation key (and a minted one for a new
            # conversation); at 0 % or 100 % every key lands on the same stack.
            sticky = self.sticky.find(
                path,
                method,
                {n.decode("latin-1"): v.decode("latin-1") for n, v in headers.items()},
                body,
                contract.is_json_content_type(_text(headers.get(b"content-type"))),
            )
            key = sticky.key
            if sticky.minted:  # the body grew by the minted key
                body = sticky.body
                length_header = (b"content-length", str(len(body)).encode())
        override = headers.get(b"x-dualstack-backend")
        facts = Facts(path, owners, None if override is None else override.decode("latin-1"), key)
        backend, reason, _ = choose(policy, facts, self._draw)
        metrics = self.metrics
        metrics.decisions[(backend, reason)] += 1

        flask = backend == "flask"
        if flask and not self.pool.acquire():
            metrics.shed[backend] += 1
            retry = {"Retry-After": str(self.settings.shed_retry_after_seconds)}
            await self._refuse(send, rid, 503, OVERLOADED, retry)
            return
        raw_rid = rid.encode("latin-1")
        forwarded = dict(scope)
        if given is None and length_header is None:  # the usual case, copied in C
            forwarded["headers"] = [*scope["headers"], (b"x-request-id", raw_rid)]
        else:
            replaced = _LENGTH_AND_ID if length_header else _ID
            kept = [h for h in scope["headers"] if h[0] not in replaced]
            kept.append((b"x-request-id", raw_rid))
            if length_header:
                kept.append(length_header)
            forwarded["headers"] = kept
        rid_header = (b"x-request-id", raw_rid)
        marks = [rid_header]
        if self.settings.show_backend_header:
            marks.append(_BACKEND_MARKS[backend])
        status = 500

        async def send_marked(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # The message is ours to change once sent (as Starlette's middleware do).
                # Header names are lower case in ASGI (Starlette and a2wsgi make them so).
                answer = message["headers"]
                names = list(map(_name, answer))
                if (
                    names.count(b"x-request-id") == 1
                    and rid_header in answer
                    and _BACKEND_NAME not in names
                ):
                    # The usual answer: the stack echoed the id it was given, and says
                    # nothing of backends. Checked in C; only the backend mark is added.
                    message["headers"] = [*answer, *marks[1:]]
                else:
                    kept = marks.copy()
                    for header in answer:
                        if header[0] not in _MARKED:
                            kept.append(header)
                    message["headers"] = kept
            await send(message)

        in_flight = metrics.in_flight
        in_flight[backend] += 1
        try:
            # Nothing read (a bodyless request): the stack reads the request itself.
            await self._apps[backend](
                forwarded, replay(body, receive) if consumed else receive, send_marked
            )
        finally:
            in_flight[backend] -= 1
            if flask:
                self.pool.release()
            metrics.observe(backend, route, method, status, perf_counter() - started)

    async def _refuse(
        self, send: Send, rid: str, status: int, message: str, extra: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(contract.error_body(message)).encode()
        fields = {"content-type": "application/json", "content-length": str(len(body))}
        fields.update(extra or {})
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in fields.items()]
        raw.append((b"x-request-id", rid.encode("latin-1")))
        if self.settings.show_backend_header:
            raw.append(_BACKEND_MARKS["gateway"])
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    # -- admin, lifespan, websockets -------------------------------------------------------

    async def _serve_other(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            # Only the ASGI stack can hold a websocket.
            await self.stacks.fastapi(scope, receive, send)

    async def _serve_admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._admin is None:
            raise RuntimeError("the gateway's lifespan has not started")
        # Starlette routes on the path less root_path: keep the full path, extend root_path.
        child = {**scope, "root_path": scope.get("root_path", "") + ADMIN_PREFIX}
        await self._admin(child, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        async with contextlib.AsyncExitStack() as stack:
            try:
                state, admin = await stack.enter_async_context(self._control())
                await stack.enter_async_context(run_lifespan(self.stacks.fastapi))
            except Exception as exc:  # startup failed: say so, the server exits
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            self._state, self._admin = state, admin
            self.metrics.set_rollout(state.current)
            state.add_listener(self.metrics.set_rollout)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


_BACKEND_NAME = b"x-dualstack-backend"
_MARKED = frozenset({b"x-request-id", _BACKEND_NAME})
_name = operator.itemgetter(0)
_ID = frozenset({b"x-request-id"})
_LENGTH_AND_ID = frozenset({b"x-request-id", b"content-length", b"transfer-encoding"})
_BACKEND_MARKS = {
    name: (b"x-dualstack-backend", name.encode()) for name in ("flask", "fastapi", "gateway")
}


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _is_admin(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")
