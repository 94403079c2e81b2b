"""The gateway: one ASGI app in front of a WSGI stack (through a2wsgi) and an ASGI stack.

Decide, then act: `Gateway.__call__` reads the body, gathers the facts, asks the pure
`choose()` which stack serves the request, and forwards. Everything it knows about a
request's routing is in `Facts`; everything it decided is in `Decision`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import operator
import random
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter, time
from typing import NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harness.gateway.admission import Admission
from harness.gateway.body import BodyTooLarge, ClientGone, Watched, read_body, replay
from harness.gateway.capture import CaptureConfig, CaptureWriter
from harness.gateway.lifespan import run_lifespan
from harness.gateway.metrics import GatewayMetrics
from harness.gateway.ownership import Ownership
from harness.gateway.policy import (
    Backend,
    Decision,
    Facts,
    InvalidOverride,
    Policy,
    Rollout,
    choose,
    mirrors,
    shadow_salt,
)
from harness.gateway.rollout import RolloutState
from harness.gateway.settings import GatewaySettings
from harness.gateway.shadow import Exchange, Recorder, Shadow, build_shadow, mark
from harness.gateway.sticky import StickyRules
from shared import contract
from shared.logs import request_id
from shared.schema_errors import one_line

ADMIN_PREFIX = "/_gateway"
OVERLOADED = "Service overloaded, retry later"
HEADERS_TOO_LARGE = "Request headers too large"
_BODYLESS = {"GET", "HEAD", "OPTIONS", "DELETE"}

Control = Callable[[], AbstractAsyncContextManager[tuple[RolloutState, ASGIApp]]]
"""Opens the rollout state (and the admin app over it) for the gateway's lifespan."""


@dataclass(frozen=True)
class Stacks:
    flask: ASGIApp
    fastapi: ASGIApp


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
        shadow: Shadow | None = None,
        draw: Callable[[], float] = random.random,
        upstream: frozenset[Backend] = frozenset(),
        lifespans: Sequence[tuple[str, ASGIApp]] | None = None,
    ) -> None:
        """`upstream`: the sides reached over HTTP (each admitted up to
        `upstream_max_in_flight`), the others mounted; `lifespans`: the apps whose lifespan
        runs within the gateway's, each with the name start-up gives it (default: the
        mounted ASGI stack)."""
        self.stacks = stacks
        self.ownership = ownership
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.upstream = upstream
        self.admission = self._admission("flask")
        """The Flask side's: a2wsgi's threads when mounted, the upstream's bound if not."""
        self._fastapi_admission = self._admission("fastapi") if "fastapi" in upstream else None
        """The FastAPI upstream's; None for a mounted FastAPI, which never queues."""
        self.metrics.admission = self.admission
        self.lifespans = (
            [(f"the ASGI app ({settings.fastapi_app})", stacks.fastapi)]
            if lifespans is None
            else list(lifespans)
        )
        self.sticky = StickyRules(settings.sticky_rules)
        self._control = control
        self._draw = draw
        self._state: RolloutState | None = None
        self._routes: _Routes | None = None
        self._apps: dict[str, ASGIApp] = {"flask": stacks.flask, "fastapi": stacks.fastapi}
        self._admin: ASGIApp | None = None
        self.shadow = shadow or build_shadow(self._apps, self.metrics, settings)
        ownership.add_listener(self._forget_routes)
        self.capture: CaptureWriter | None = None
        """Capturing requests for replay (`GATEWAY_CAPTURE_PATH`): set up at start-up."""

    def _admission(self, backend: Backend) -> Admission:
        s = self.settings
        if backend in self.upstream:
            bound, wait = s.upstream_max_in_flight, s.upstream_max_wait_seconds
        else:
            bound, wait = s.wsgi_threads, s.wsgi_max_wait_seconds
        return Admission(
            bound, wait, clock=perf_counter, observe_wait=self.metrics.observe_queue_wait
        )

    def _forget_routes(self) -> None:
        # A side's routes changed: every path's plan is made again.
        self._routes = None

    @property
    def state(self) -> RolloutState:
        if self._state is None:
            raise RuntimeError("the gateway's lifespan has not started")
        return self._state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._serve_other(scope, receive, send)
            return
        if _header_bytes(scope["headers"]) > self.settings.max_header_bytes:
            # Before anything reads them: uvicorn (httptools) sets no limit of its own.
            await self._refuse(send, request_id(None), 431, HEADERS_TOO_LARGE)
            return
        path: str = scope["path"]
        if path.startswith(ADMIN_PREFIX) and _is_admin(path):
            await self._serve_admin(scope, receive, send)
            return
        # Proxied, the hot path every request to a stack runs, in four steps: read the
        # body, decide the stack, admit the request, forward it. Each step is one call and
        # builds no objects beyond its own result: each call costs the stacks' throughput.
        started = perf_counter()
        headers = dict(scope["headers"])  # in C; ASGI header names are lower case
        if len(headers) != len(scope["headers"]):  # some name repeats: which one?
            repeated = _repeated_identity(scope["headers"])
            if repeated is not None:
                await self._refuse(send, request_id(None), 400, f"Duplicate {repeated} header")
                return
        given = headers.get(b"x-request-id")
        rid = request_id(None if given is None else given.decode("latin-1"))
        method = scope["method"]
        body: bytes | None = None  # None: nothing read here, the stack reads the request
        if (
            method not in _BODYLESS
            or headers.get(b"content-length", b"") not in (b"", b"0")
            or b"transfer-encoding" in headers
        ) and not (self.upstream and self._streams(path, headers)):
            body = await self._read(headers, receive, send, rid)
            if body is None:
                return
        try:
            route, decision, body, dropped, minted, mirrored, key = self._decide(
                path, method, headers, body
            )
        except InvalidOverride as error:  # the override counts here, and names no stack
            await self._refuse(send, rid, 400, str(error))
            return
        if _SHADOW in headers:  # a client's shadow marker: only the gateway sets one
            dropped = _ID_AND_SHADOW if dropped is None else dropped | _ID_AND_SHADOW
        backend = decision[0]
        forwarded = dict(scope)
        forwarded["headers"] = _forwarded_headers(
            scope["headers"], rid, given, body, dropped, minted
        )
        captured = self.capture is not None and self.capture.wants(key)
        arrived = time() if captured else 0.0  # orders a conversation's requests
        if mirrored and not self.shadow.has_room(backend):
            # The shadow side is behind: dropped now, the answer not even recorded.
            self.shadow.drop(route)
            mirrored = False
        if mirrored:  # at 0 %, this and the test after the answer are all shadowing costs
            copy = mark(forwarded, rid)  # before the primary's app can add to the scope
        if mirrored or captured:
            recorder = Recorder(send)  # the answer, as it goes out
            send = recorder.send
        admission = self.admission if backend == "flask" else self._fastapi_admission
        if admission is None:  # the mounted ASGI stack: nothing to wait for
            await self._forward(forwarded, body, receive, send, rid, backend, route, started)
        else:
            # A WSGI thread (or an upstream's slot) first: at once when one is free, else
            # after a wait.
            watched = None
            if not admission.try_start():
                watched = await self._queue(admission, receive, send, rid, backend, route)
                if watched is None:
                    return  # shed, or the client left: nothing to shadow
                receive = watched.receive
            began = perf_counter()
            try:
                await self._forward(forwarded, body, receive, send, rid, backend, route, started)
            finally:
                admission.finish(perf_counter() - began)
                if watched is not None:
                    watched.close()
        if captured and recorder.answer.status is not None and self.capture is not None:
            query: bytes = scope.get("query_string", b"")
            self.capture.offer(
                method,
                path,
                query,
                forwarded["headers"],
                body,
                key,
                recorder.answer.status,
                arrived,
            )
        if mirrored and recorder.answer.status is not None:
            # The primary's answer is complete: the shadow starts now, and never waits.
            exchange = Exchange(
                rid, route, backend, copy, body or b"", recorder.answer, perf_counter() - started
            )
            self.shadow.submit(exchange)

    def _start_capture(self, salt: str, stack: contextlib.AsyncExitStack) -> None:
        """The capture writer, when `GATEWAY_CAPTURE_PATH` asks for one: keyed by the
        deployment's salt, its thread stopped (what is queued written) at shutdown."""
        s = self.settings
        if s.capture_path is None:
            return
        config = CaptureConfig(
            Path(s.capture_path),
            s.capture_percent,
            tuple(s.capture_redact),
            s.capture_max_bytes,
            s.capture_backups,
            s.capture_queue,
        )
        writer = CaptureWriter(config, salt)
        writer.start()
        stack.callback(writer.stop)
        self.capture = writer
        self.metrics.capture = writer.stats
        self._routes = None  # plans are made again, keyed for the sample

    async def _queue(
        self,
        admission: Admission,
        receive: Receive,
        send: Send,
        rid: str,
        backend: Backend,
        route: str,
    ) -> Watched | None:
        """Waits for a WSGI thread (an upstream's slot), watching the client meanwhile: the
        client's side of the request once it holds one; None when it was shed (503 at once
        when it could not start within the maximum wait, or when that wait ran out) or the
        client left."""
        if not admission.can_wait():
            await self._shed(send, rid, backend, route)
            return None
        watched = Watched(receive)
        waited = await admission.wait(watched.gone())
        if waited == "started":
            return watched
        watched.close()
        if waited == "late":
            await self._shed(send, rid, backend, route)
        else:  # the client left while queued: its request is never started
            self.metrics.abandoned += 1
        return None

    async def _read(
        self, headers: dict[bytes, bytes], receive: Receive, send: Send, rid: str
    ) -> bytes | None:
        """The request's body, refused with 413 when its `Content-Length` or what arrives
        exceeds the limit; None when refused or the client left."""
        limit = self.settings.max_body_bytes
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await self._refuse(send, rid, 413, contract.BODY_TOO_LARGE)
            return None
        try:
            return await read_body(receive, limit)
        except BodyTooLarge:
            await self._refuse(send, rid, 413, contract.BODY_TOO_LARGE)
        except ClientGone:
            pass
        return None

    def _streams(self, path: str, headers: dict[bytes, bytes]) -> bool:
        """Whether this request's body goes to its stack as it arrives, unread here: the
        path's plan sends it to an upstream whatever the body holds (no conversation key
        needed, no shadow, no capture), the upstream has a free slot (a request that must
        queue has its body read, within the limit, not buffered while it waits), and its
        declared length is within the limit (one past it is refused here, as a read body
        is)."""
        routes = self._routes
        state = self.state
        if routes is None or routes.rollout is not state.current:
            routes = self._new_routes(state)
        plan = routes.plans.get(path) or routes.plan(path)
        decided = plan.decided
        if decided is None or decided[0] not in self.upstream:
            return False
        admission = self.admission if decided[0] == "flask" else self._fastapi_admission
        if admission is None or not admission.has_room():
            return False
        if plan.overridable and _OVERRIDE in headers:
            return False
        length = headers.get(b"content-length", b"")
        return not (length.isdigit() and int(length) > self.settings.max_body_bytes)

    def _new_routes(self, state: RolloutState) -> _Routes:
        """The routing plans for the current rollout, made and kept (once per change)."""
        routes = self._routes = _Routes(
            state.current, state.salt, self.settings, self.ownership, self.capture is not None
        )
        return routes

    def _decide(
        self, path: str, method: str, headers: dict[bytes, bytes], body: bytes | None
    ) -> tuple[str, Decision, bytes | None, frozenset[bytes] | None, str | None, bool, str | None]:
        """The stack for this request (the pure `choose`, given the facts), the route
        template that labels its metrics, the body to forward, which grows by a minted
        conversation key when a new conversation is split, and the request headers the
        stack must not get as sent (None, the usual case: all of them): the length of a
        grown body, the override token; the minted key, if any; whether the request is
        shadowed; and its conversation key (None where none was looked for). InvalidOverride
        where the override header counts and names no stack."""
        routes = self._routes
        state = self._state or self.state
        rollout = state.current
        if routes is None or routes.rollout is not rollout:  # made once per rollout change
            routes = self._new_routes(state)
        plan = routes.plans.get(path) or routes.plan(path)
        decision = plan.decided
        if decision is not None and not (plan.overridable and _OVERRIDE in headers):
            self.metrics.decisions[plan.label] += 1
            return plan.route, decision, body, None, None, False, None
        key: str | None = None
        minted: str | None = None
        dropped: frozenset[bytes] | None = None
        if plan.keyed:
            # Only a split or a shadow needs the conversation key (and a minted one for a
            # new conversation); at 0 % or 100 % unshadowed every key lands on one stack.
            is_json = _is_json(headers.get(b"content-type", b""))
            sticky = self.sticky.find(path, method, headers, body or b"", is_json)
            key = sticky.key
            if sticky.minted:
                body, dropped, minted = sticky.body, _GROWN, key
            elif sticky.unminted:
                self.metrics.unminted += 1
        override = headers.get(_OVERRIDE)
        if override is None:  # the usual case: no token looked for
            facts = Facts(path, plan.owners, None, key)
        else:
            token = headers.get(_OVERRIDE_TOKEN)
            if token is not None:  # a gateway credential: no stack needs to see it
                dropped = _TOKEN if dropped is None else _GROWN_AND_TOKEN
            facts = Facts(path, plan.owners, override.decode("latin-1"), key, token)
        decision = choose(routes.policy, facts, self._draw)
        self.metrics.decisions[decision[:2]] += 1
        mirrored = plan.shadowed and mirrors(
            routes.shadow_salt, key, routes.rollout.shadow_percent, self._draw
        )
        return plan.route, decision, body, dropped, minted, mirrored, key

    async def _shed(self, send: Send, rid: str, backend: Backend, route: str) -> None:
        """503 at once: the backend's admission refused the request."""
        self.metrics.shed[backend] += 1
        self.metrics.shed_routes[(backend, route)] += 1
        retry = {"Retry-After": str(self.settings.shed_retry_after_seconds)}
        await self._refuse(send, rid, 503, OVERLOADED, retry)

    async def _forward(
        self,
        scope: Scope,
        body: bytes | None,
        receive: Receive,
        send: Send,
        rid: str,
        backend: Backend,
        route: str,
        started: float,
    ) -> None:
        """The request to `backend`, its answer marked with the request id and the backend
        that served it, and measured (status 500 when it never started an answer)."""
        rid_header = (b"x-request-id", rid.encode("latin-1"))
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
                headers = message["headers"]
                names = list(map(_name, headers))
                if (
                    names.count(b"x-request-id") == 1
                    and rid_header in headers
                    and _BACKEND_NAME not in names
                ):
                    # The usual answer: the stack echoed the id it was given, and says
                    # nothing of backends. Checked in C; only the backend mark is added.
                    message["headers"] = [*headers, *marks[1:]]
                else:
                    kept = marks.copy()
                    for header in headers:
                        if header[0] not in _MARKED:
                            kept.append(header)
                    message["headers"] = kept
            await send(message)

        metrics = self.metrics
        in_flight = metrics.in_flight
        in_flight[backend] += 1
        try:
            await self._apps[backend](
                scope, receive if body is None else replay(body, receive), send_marked
            )
        finally:
            in_flight[backend] -= 1
            metrics.observe(backend, route, scope["method"], status, perf_counter() - started)

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
            # Only the ASGI stack can hold a websocket; a client's shadow marker stays out.
            headers = scope["headers"]
            if any(name == _SHADOW for name, _ in headers):
                scope = {**scope, "headers": [h for h in headers if h[0] != _SHADOW]}
            await self.stacks.fastapi(scope, receive, send)

    async def _serve_admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._admin is None:
            raise RuntimeError("the gateway's lifespan has not started")
        # Starlette routes on the path less root_path: keep the full path, extend root_path.
        child = {**scope, "root_path": scope.get("root_path", "") + ADMIN_PREFIX}
        # The gateway's own answers say so, and carry the request id, as the stacks' do.
        given = dict(scope["headers"]).get(b"x-request-id")
        rid = request_id(None if given is None else given.decode("latin-1"))
        marks = [(b"x-request-id", rid.encode("latin-1"))]
        if self.settings.show_backend_header:
            marks.append(_BACKEND_MARKS["gateway"])

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [h for h in message["headers"] if h[0] not in _MARKED]
                message["headers"] = [*kept, *marks]
            await send(message)

        await self._admin(child, receive, send_marked)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        limit = self.settings.startup_timeout_seconds
        deadline = asyncio.get_running_loop().time() + limit
        async with contextlib.AsyncExitStack() as stack:
            step = "the rollout store"
            try:
                # One deadline for the whole start-up: a store or a stack that hangs makes
                # the server exit, saying which, instead of hanging with it.
                async with asyncio.timeout_at(deadline):
                    state, admin = await stack.enter_async_context(self._control())
                    step = "the metrics directory"
                    metrics = self.metrics.share(self.settings.metrics_dir, admin)
                    admin = await stack.enter_async_context(metrics)
                    for name, app in self.lifespans:
                        step = name
                        await stack.enter_async_context(run_lifespan(app))
                    # Closed first at shutdown: no shadow runs against a stopped stack.
                    stack.push_async_callback(self.shadow.close)
                    self._start_capture(state.salt, stack)
            except TimeoutError:
                message = f"{step} did not start within {limit:g} s"
                await send({"type": "lifespan.startup.failed", "message": message})
                return
            except Exception as exc:  # startup failed: say so, the server exits
                message = f"{step} failed to start: {one_line(exc)}"
                await send({"type": "lifespan.startup.failed", "message": message})
                return
            self._state, self._admin = state, admin
            self.metrics.set_rollout(state.current)
            state.add_listener(self.metrics.set_rollout)
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})


_BACKEND_NAME = b"x-dualstack-backend"
_OVERRIDE = _BACKEND_NAME  # the request header that names a stack
_OVERRIDE_TOKEN = b"x-dualstack-override-token"  # and the one that makes it count
_MARKED = frozenset({b"x-request-id", _BACKEND_NAME})
_name = operator.itemgetter(0)
# The request headers replaced or dropped on the way to a stack. The request id is always
# replaced (by the one kept or minted), the framing when the body grew by a minted key.
_ID = frozenset({b"x-request-id"})
_MINTED = contract.MINTED_KEY_HEADER.lower().encode()
_GROWN = frozenset({b"x-request-id", b"content-length", b"transfer-encoding", _MINTED})
_TOKEN = frozenset({b"x-request-id", _OVERRIDE_TOKEN})
_GROWN_AND_TOKEN = _GROWN | _TOKEN
_SHADOW = contract.SHADOW_HEADER.lower().encode()
_ID_AND_SHADOW = frozenset({b"x-request-id", _SHADOW})
_BACKEND_MARKS = {name: (_BACKEND_NAME, name.encode()) for name in ("flask", "fastapi", "gateway")}


def _forwarded_headers(
    headers: list[tuple[bytes, bytes]],
    rid: str,
    given: bytes | None,
    body: bytes | None,
    dropped: frozenset[bytes] | None,
    minted: str | None = None,
) -> list[tuple[bytes, bytes]]:
    """The request's headers as the stack gets them: the request id (kept or minted),
    without the `dropped` ones (`_decide` says which), and, when the body grew by a
    `minted` key, its new length and the key (`contract.MINTED_KEY_HEADER`)."""
    raw_rid = (b"x-request-id", rid.encode("latin-1"))
    if given is None and dropped is None:  # the usual case, copied in C
        return [*headers, raw_rid]
    replaced = _ID if dropped is None else dropped
    kept = [h for h in headers if h[0] not in replaced]
    kept.append(raw_rid)
    if body is not None and dropped is not None and b"content-length" in dropped:
        kept.append((b"content-length", str(len(body)).encode()))
    if minted is not None:
        kept.append((_MINTED, minted.encode("latin-1")))
    return kept


class _Plan(NamedTuple):
    """How requests to one path are routed under one rollout."""

    route: str
    """The route template that labels the metrics ("unmatched" when neither stack has it)."""
    owners: frozenset[Backend]
    split: bool
    """Whether the percentage splits this path's traffic, so the conversation key counts."""
    shadowed: bool
    """Whether some requests to this path are shadowed: both stacks serve it, and the
    shadowed share is above 0."""
    keyed: bool
    """Whether the conversation key is looked for: the path is split or shadowed."""
    decided: Decision | None
    """The decision when the percentage cannot split the path (one stack owns it, or the
    share is 0 or 100 %, which every draw and key obeys); None when it splits. Used unless
    `overridable` and the request names a stack in the override header."""
    label: tuple[str, str]
    """`decided` as the metrics count it."""
    overridable: bool
    """Whether the override header can change `decided`."""


class _Routes:
    """What depends only on the rollout, made once per rollout change: the policy, and a
    plan per path (bounded: a client sending endless distinct paths cannot grow it)."""

    MAX_PATHS = 8192

    def __init__(
        self,
        rollout: Rollout,
        salt: str,
        settings: GatewaySettings,
        ownership: Ownership,
        capturing: bool = False,
    ) -> None:
        self.rollout = rollout
        self.capturing = capturing
        token = settings.override_token
        self.policy = Policy(
            rollout,
            salt,
            settings.override_header,
            None if token is None else token.get_secret_value().encode("ascii"),
        )
        self.ownership = ownership
        self.shadow_salt = shadow_salt(salt)
        self.plans: dict[str, _Plan] = {}

    def plan(self, path: str) -> _Plan:
        """The plan of `path`, made and kept."""
        owners, route = self.ownership.resolve(path)
        owned = len(owners) == 1
        split = not owned and self.rollout.percent_for(path) not in (0.0, 100.0)
        shadowed = len(owners) == 2 and self.rollout.shadow_percent > 0
        keyed = split or shadowed or (self.capturing and bool(owners))
        decided = None if keyed else choose(self.policy, Facts(path, owners), _any_draw)
        label = ("flask", "") if decided is None else (decided.backend, decided.reason)
        overridable = not owned and self.policy.override_enabled
        if len(self.plans) >= self.MAX_PATHS:
            self.plans.clear()
        plan = self.plans[path] = _Plan(
            route, owners, split, shadowed, keyed, decided, label, overridable
        )
        return plan


def _any_draw() -> float:
    # Only asked at 0 or 100 %, where every draw in [0, 1) gives the same stack.
    return 0.5


@functools.lru_cache(maxsize=64)
def _is_json(content_type: bytes) -> bool:
    # Cached: a service sees few distinct content types, and parsing one is dear.
    return contract.is_json_content_type(content_type.decode("latin-1"))


_IDENTITY = {
    name.lower().encode(): name
    for name in (
        "X-Dualstack-Backend",
        "X-Dualstack-Override-Token",
        "X-User-ID",
        "X-Request-ID",
        "Content-Type",
        "Content-Length",
        "Authorization",
        "Host",  # RFC 9110 allows one; gunicorn refuses a second (400), as the stacks do
    )
}
"""The headers that route a request or say who sends it. Read twice, the gateway would
take the last value, Starlette the first and Flask (through WSGI) both joined by a comma,
so a client could be routed as one user and served as another: sent twice, they are 400."""


def _repeated_identity(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first header of `_IDENTITY` that `headers` hold more than once, if any."""
    seen: set[bytes] = set()
    for name, _ in headers:
        if name in _IDENTITY:
            if name in seen:
                return _IDENTITY[name]
            seen.add(name)
    return None


def _header_bytes(headers: list[tuple[bytes, bytes]]) -> int:
    """The size of the request's header names and values. A plain loop: under callgrind,
    2.1k instructions for three headers, where joining them in C took 3.5k."""
    total = 0
    for name, value in headers:
        total += len(name) + len(value)
    return total


def _is_admin(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")
