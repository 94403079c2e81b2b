"""Shadow traffic: a sampled request, once its primary answer is complete, is sent again to
the stack that did not serve it, marked, and the two answers are judged by the diff engine.

The client never waits for the shadow: the gateway records the primary's answer as it goes
out, then `Shadow.submit` starts the copy in a task of its own and returns. Shadow requests
are bounded (`GATEWAY_SHADOW_MAX_IN_FLIGHT` at once, and `GATEWAY_SHADOW_WSGI_THREADS` of
them on the WSGI side, threads added to the pool for them alone); one that finds its bound
full is dropped and counted, never queued, so a slow shadow side costs the primary nothing.

The marker (`shared.contract`): the copy carries `X-Dualstack-Shadow: <the primary's request
id>` and the same `X-Request-ID`; an ASGI app also finds `{"request_id": ...}` at
`scope["extensions"]["dualstack.shadow"]`, and the WSGI app `environ["dualstack.shadow"]`
(set from the header by the gateway's WSGI wrapper, `harness.gateway.build.wsgi_app`). The
gateway strips a client's `X-Dualstack-Shadow` from every request, so only it can mark one.

Judging: the Flask answer is the legacy one and the FastAPI answer the candidate, whichever
was the primary, since the rules are written that way. The outcome is `breaking` when a
difference is, else `additive` when one is, else `match` (noise, expected and ignored
differences are a match); `error` when a side gave no whole answer (it raised, timed out,
or answered more than `MAX_ANSWER_BYTES`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import IO, Any, Literal

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harness.diff import DEFAULT_HEADERS, Difference, Response, Rules, decode_body, diff
from harness.gateway.metrics import GatewayMetrics
from harness.gateway.policy import Backend
from harness.gateway.settings import GatewaySettings
from harness.gateway.shadow_rules import load_rules
from harness.report.stats import percentile
from shared import contract
from shared.session import iso

__all__ = [
    "MAX_ANSWER_BYTES",
    "OUTCOMES",
    "Answer",
    "Exchange",
    "Recorder",
    "Shadow",
    "build_shadow",
    "judge",
    "mark",
]

Outcome = Literal["match", "additive", "breaking", "error", "dropped"]
OUTCOMES: tuple[Outcome, ...] = ("match", "additive", "breaking", "error", "dropped")

HEADERS: tuple[str, ...] = (*DEFAULT_HEADERS, "x-request-id")
"""The headers compared: the parity suite's (the diff engine's chosen ones and the echoed
request id, which both answers must carry: the shadow is sent the primary's)."""

MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""An answer longer than this is not kept whole (memory stays bounded): judged an error."""

SAMPLE_BODY_CHARS = 16 * 1024
"""Of each body, what a diff sample shows."""

LATENCY_SAMPLES = 1024
"""The newest durations per side and backend the p50/p95 of `GET /_gateway/shadow` read."""

REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-dualstack-override-token"}
)
_MARKER = contract.SHADOW_HEADER.lower().encode()
_OTHER: dict[str, Backend] = {"flask": "fastapi", "fastapi": "flask"}

log = structlog.get_logger("harness.gateway.shadow")


@dataclass
class Answer:
    """One side's answer as it was sent: status (None until it started), raw headers,
    body; `complete` once its last body message went out."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False
    overflow: bool = False
    failure: str | None = None
    """Why the side gave no whole answer (an exception, a timeout), when it did not."""

    def response(self) -> Response:
        """The answer as the diff engine compares it (repeated headers joined by commas,
        the body decoded as its `Content-Encoding` says)."""
        headers: dict[str, str] = {}
        for raw_name, raw_value in self.headers:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body = decode_body(bytes(self.body), headers.get("content-encoding"))
        return Response(self.status or 0, headers, body)

    @property
    def whole(self) -> bool:
        """Whether this is a whole answer that can be compared."""
        return self.status is not None and self.complete and not self.overflow


class Recorder:
    """An ASGI `send` that records the answer, passing each message on to `send` (if any)."""

    def __init__(self, send: Send | None = None) -> None:
        self.answer = Answer()
        self.done = asyncio.Event()
        self._send = send

    async def send(self, message: Message) -> None:
        answer = self.answer
        kind = message["type"]
        if kind == "http.response.start":
            answer.status = message["status"]
            answer.headers = list(message.get("headers", ()))
        elif kind == "http.response.body":
            if not answer.overflow:
                answer.body += message.get("body", b"")
                if len(answer.body) > MAX_ANSWER_BYTES:
                    answer.overflow = True
                    answer.body.clear()
            if not message.get("more_body", False):
                answer.complete = True
                self.done.set()
        if self._send is not None:
            await self._send(message)


@dataclass(frozen=True)
class Exchange:
    """A shadowed request: what the primary was sent and answered, and the copy to send."""

    request_id: str
    route: str
    """The route template (the metrics' label)."""
    backend: Backend
    """The stack that served the primary."""
    scope: Scope
    """The copy's scope: the primary's, marked (`mark`)."""
    body: bytes
    primary: Answer
    primary_seconds: float


def mark(scope: Scope, rid: str) -> Scope:
    """A copy of the forwarded request's `scope` marked as the shadow of request `rid`:
    the header and the scope extension (the WSGI wrapper sets the environ key from the
    header). Made before the primary runs: an app may add to the scope it is given."""
    extensions = dict(scope.get("extensions") or {})
    extensions[contract.SHADOW_SCOPE_KEY] = {"request_id": rid}
    headers = [*scope["headers"], (_MARKER, rid.encode("latin-1"))]
    return {**scope, "headers": headers, "extensions": extensions}


def judge(
    exchange: Exchange, shadow: Answer, rules: Rules, now: float | None = None
) -> tuple[Outcome, list[Difference]]:
    """The outcome of one shadowed exchange and the classed differences between its Flask
    answer (legacy) and its FastAPI answer (candidate)."""
    primary = exchange.primary
    if not (primary.whole and shadow.whole):
        return "error", []
    legacy, candidate = (primary, shadow) if exchange.backend == "flask" else (shadow, primary)
    scope = exchange.scope
    found = diff(
        legacy.response(),
        candidate.response(),
        headers=HEADERS,
        rules=rules,
        now=now,
        endpoint=f"{scope['method']} {scope['path']}",
    )
    severities = {difference.severity for difference in found}
    if "breaking" in severities:
        return "breaking", found
    if "additive" in severities:
        return "additive", found
    return "match", found


class Shadow:
    """Sends shadow requests, judges their answers, and keeps what it saw: counts (in the
    gateway's metrics), durations, and the newest differing exchanges."""

    def __init__(
        self,
        apps: Mapping[str, ASGIApp],
        rules: Rules,
        metrics: GatewayMetrics,
        *,
        max_in_flight: int = 16,
        wsgi_threads: int = 8,
        timeout: float = 30.0,
        kept: int = 100,
        log_path: str | None = None,
        clock: Callable[[], float] = perf_counter,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.apps = apps
        self.rules = rules
        self.metrics = metrics
        self.max_in_flight = max_in_flight
        self.wsgi_threads = wsgi_threads
        self.timeout = timeout
        self.flask_busy = 0
        """Shadow requests holding one of the WSGI threads kept for them."""
        self.samples: deque[dict[str, Any]] = deque(maxlen=kept)
        self.latency: dict[tuple[str, str], deque[float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._log_path = log_path
        self._log: IO[str] | None = None
        self._clock = clock
        self._wall = wall

    @property
    def in_flight(self) -> int:
        """Shadow requests under way (a Flask one until its thread is free)."""
        return len(self._tasks)

    def has_room(self, primary: str) -> bool:
        """Whether a copy of a request `primary` serves could start now: checked before its
        answer is recorded, so a shadow side that is behind costs the primary nothing."""
        return len(self._tasks) < self.max_in_flight and (
            _OTHER[primary] != "flask" or self.flask_busy < self.wsgi_threads
        )

    def drop(self, route: str) -> None:
        """Count a copy dropped before it was recorded."""
        self.metrics.shadowed[(route, "dropped")] += 1

    def submit(self, exchange: Exchange) -> None:
        """Starts `exchange`'s shadow request in a task of its own, or drops it (counted)
        when as many are under way as allowed, or every WSGI thread kept for shadows is
        held and it is Flask-bound. Never waits."""
        target = _OTHER[exchange.backend]
        self._observe("primary", exchange.backend, exchange.primary_seconds)
        if len(self._tasks) >= self.max_in_flight or (
            target == "flask" and self.flask_busy >= self.wsgi_threads
        ):
            self.metrics.shadowed[(exchange.route, "dropped")] += 1
            return
        if target == "flask":
            self.flask_busy += 1
        task = asyncio.create_task(self._run(exchange, target), name="shadow")
        self._tasks.add(task)
        self.metrics.shadow_in_flight = len(self._tasks)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.metrics.shadow_in_flight = len(self._tasks)
        if not task.cancelled() and task.exception() is not None:
            log.error("shadow.failed", error=repr(task.exception()))

    async def settled(self) -> None:
        """Returns once no shadow request is under way (all judged), as tests wait."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancels the shadow requests under way and closes the log (the gateway stops)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._log is not None:
            self._log.close()
            self._log = None

    async def _run(self, exchange: Exchange, target: Backend) -> None:
        started = self._clock()
        try:
            answer, call = await self._call(target, exchange)
            seconds = self._clock() - started
            self.metrics.observe_shadow(target, seconds)
            self._observe("shadow", target, seconds)
            self._record(exchange, target, answer, seconds)
            if call is not None:
                # Timed out on the WSGI side: cancelling would not stop the thread, so the
                # thread kept for shadows stays taken until the app returns.
                try:
                    await call
                except asyncio.CancelledError:
                    call.cancel()  # the gateway stops
                    raise
                except Exception:  # noqa: S110 - judged already, as an error
                    pass
        finally:
            if target == "flask":
                self.flask_busy -= 1

    async def _call(
        self, target: Backend, exchange: Exchange
    ) -> tuple[Answer, asyncio.Future[None] | None]:
        """The shadow's answer, and the app's call when it is still running (timed out)."""
        recorder = Recorder()
        call = asyncio.ensure_future(
            self.apps[target](exchange.scope, _receive(exchange.body, recorder), recorder.send)
        )
        try:
            done, _ = await asyncio.wait({call}, timeout=self.timeout)
        except asyncio.CancelledError:  # the gateway stops
            call.cancel()
            raise
        answer = recorder.answer
        if not done:
            answer.failure = f"no whole answer within {self.timeout:g} s"
            if target == "flask":
                return answer, call
            call.cancel()
            with contextlib.suppress(BaseException):
                await call
            return answer, None
        error = call.exception()
        if error is not None:
            answer.failure = f"{type(error).__name__}: {error}"
            log.warning("shadow.request_failed", request_id=exchange.request_id, error=repr(error))
        return answer, None

    def _record(self, exchange: Exchange, target: Backend, answer: Answer, seconds: float) -> None:
        outcome, found = judge(exchange, answer, self.rules, now=self._wall())
        self.metrics.shadowed[(exchange.route, outcome)] += 1
        if outcome == "match":
            return
        sample = _sample(exchange, target, answer, seconds, outcome, found, self._wall())
        self.samples.append(sample)
        if self._log_path is not None:
            self._write(sample)

    def _write(self, sample: dict[str, Any]) -> None:
        # Only differing exchanges, a line each: small writes, off every response's path.
        try:
            if self._log is None:
                self._log = open(self._log_path or "", "a", encoding="utf-8")  # noqa: SIM115
            self._log.write(json.dumps(sample, ensure_ascii=False) + "\n")
            self._log.flush()
        except OSError as exc:
            log.warning("shadow.log_failed", path=self._log_path, error=str(exc))

    def _observe(self, side: str, backend: str, seconds: float) -> None:
        kept = self.latency.get((side, backend))
        if kept is None:
            kept = self.latency[(side, backend)] = deque(maxlen=LATENCY_SAMPLES)
        kept.append(seconds)

    def summary(self) -> dict[str, Any]:
        """Counts per route and outcome, p50/p95 of each side per backend (of the newest
        `LATENCY_SAMPLES`), and the bounds; JSON-ready (`GET /_gateway/shadow`)."""
        routes: dict[str, dict[str, int]] = {}
        for (route, outcome), count in sorted(self.metrics.shadowed.items()):
            routes.setdefault(route, dict.fromkeys(OUTCOMES, 0))[outcome] = count
        latency: dict[str, dict[str, Any]] = {"primary": {}, "shadow": {}}
        for (side, backend), seconds in sorted(self.latency.items()):
            ordered = sorted(seconds)
            latency[side][backend] = {
                "count": len(ordered),
                "p50_ms": _ms(percentile(ordered, 0.5)),
                "p95_ms": _ms(percentile(ordered, 0.95)),
            }
        return {
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "wsgi_threads": self.wsgi_threads,
            "wsgi_threads_busy": self.flask_busy,
            "routes": routes,
            "latency": latency,
        }

    def diffs(self, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` differing exchanges, newest first."""
        newest = list(self.samples)[-limit:]
        newest.reverse()
        return newest


def build_shadow(
    apps: Mapping[str, ASGIApp], metrics: GatewayMetrics, settings: GatewaySettings
) -> Shadow:
    """The shadow over `apps` ("flask" and "fastapi") as `settings` (`GATEWAY_SHADOW_*`) say."""
    return Shadow(
        apps,
        load_rules(settings.shadow_rules),
        metrics,
        max_in_flight=settings.shadow_max_in_flight,
        wsgi_threads=settings.shadow_wsgi_threads,
        timeout=settings.shadow_timeout_seconds,
        kept=settings.shadow_diffs_kept,
        log_path=settings.shadow_log,
    )


def _receive(body: bytes, recorder: Recorder) -> Receive:
    """The shadow's client: the body once, then, as uvicorn says once an answer is
    complete, a disconnect (an app listening for one before then keeps waiting)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await recorder.done.wait()
        return {"type": "http.disconnect"}

    return receive


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> list[list[str]]:
    shown = []
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        value = REDACTED if name in _SECRET_HEADERS else raw_value.decode("latin-1")
        shown.append([name, value])
    return shown


def _body(body: bytes | bytearray) -> dict[str, Any]:
    text = bytes(body).decode("utf-8", "replace")
    if len(text) > SAMPLE_BODY_CHARS:
        return {"body": text[:SAMPLE_BODY_CHARS], "body_truncated": True}
    return {"body": text}


def _answer(backend: str, answer: Answer, seconds: float) -> dict[str, Any]:
    return {
        "backend": backend,
        "status": answer.status,
        "headers": _headers(answer.headers),
        **_body(answer.response().body),
        "ms": _ms(seconds),
        "complete": answer.complete,
        "failure": answer.failure
        or (f"answer over {MAX_ANSWER_BYTES} bytes" if answer.overflow else None),
    }


def _sample(
    exchange: Exchange,
    target: Backend,
    answer: Answer,
    seconds: float,
    outcome: Outcome,
    found: list[Difference],
    now: float,
) -> dict[str, Any]:
    """One differing exchange as `GET /_gateway/shadow/diffs` shows it (secrets redacted)."""
    scope = exchange.scope
    headers = [h for h in scope["headers"] if h[0] != _MARKER]
    return {
        "at": iso(now),
        "request_id": exchange.request_id,
        "route": exchange.route,
        "outcome": outcome,
        "request": {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": _headers(headers),
            **_body(exchange.body),
        },
        "primary": _answer(exchange.backend, exchange.primary, exchange.primary_seconds),
        "shadow": _answer(target, answer, seconds),
        "differences": [
            {
                "path": d.path,
                "kind": d.kind,
                "severity": d.severity,
                "reason": d.reason,
                "legacy": d.legacy,
                "candidate": d.candidate,
            }
            for d in found
        ],
    }
