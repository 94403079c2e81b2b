"""Pure ASGI middleware: request ids, and CORS exactly as the legacy app's flask-cors; and
how a request tells it is a shadow copy."""

from __future__ import annotations

import time

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import contract
from shared.logs import REQUEST_ID_HEADER, request_id

log = structlog.get_logger("fastapi_app")


def shadow_of(scope: Scope, trust_header: bool) -> str | None:
    """The primary's request id when the request in `scope` is a shadow copy (the gateway's
    marker in the scope's extensions, or the trusted header), else None."""
    marker = (scope.get("extensions") or {}).get(contract.SHADOW_SCOPE_KEY) or {}
    header = Headers(scope=scope).get(contract.SHADOW_HEADER) if trust_header else None
    return contract.shadow_of(marker.get("request_id"), header, trust_header)


class RequestIdMiddleware:
    """Accepts a well-formed `X-Request-ID` or mints one, binds it to the logs, echoes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        scope.setdefault("state", {})["request_id"] = rid
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid, stack="fastapi")
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "request.completed",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )


class HeaderGuardMiddleware:
    """Refuses what the legacy stack's server refuses before the app sees it, in the
    contract's shape: headers over `limit` bytes in total (431), and a repeated header RFC
    9110 allows once (`contract.SINGLETON_HEADERS`, 400)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._singletons = {n.lower().encode(): n for n in contract.SINGLETON_HEADERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope["headers"])
            if refusal is not None:
                status, message, code = refusal
                body: dict[str, object] = {**contract.error_body(message), "error_code": code}
                body["request_id"] = scope.get("state", {}).get("request_id")
                await JSONResponse(body, status_code=status)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: list[tuple[bytes, bytes]]) -> tuple[int, str, str] | None:
        if contract.header_bytes(headers) > self.limit:
            return 431, contract.HEADERS_TOO_LARGE, "headers_too_large"
        seen: set[bytes] = set()
        for name, _ in headers:
            if name in self._singletons:
                if name in seen:
                    message = contract.duplicate_header(self._singletons[name])
                    return 400, message, "duplicate_header"
                seen.add(name)
        return None


class HeadAsGetMiddleware:
    """Answers HEAD wherever GET is served, without a body, as Flask (werkzeug) does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)


class LegacyCORSMiddleware:
    """flask-cors's defaults, reproduced: `*` without an Origin, the Origin echoed with
    `Vary: Origin` otherwise, and preflights answered as Flask's automatic OPTIONS view
    does (200, empty body, `Allow`)."""

    def __init__(self, app: ASGIApp, origins: str = "*") -> None:
        self.app = app
        self.origins = {o.strip() for o in origins.split(",") if o.strip()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Headers(scope=scope)
        preflight = scope["method"] == "OPTIONS"
        answered = False

        async def send_with_cors(message: Message) -> None:
            nonlocal answered
            if answered:
                return  # the app's 405 body, replaced by the OPTIONS answer
            if message["type"] == "http.response.start":
                allow = Headers(raw=message["headers"]).get("allow")
                if preflight and message["status"] == 405 and allow:
                    # The path exists: answer as Flask's automatic OPTIONS view.
                    answered = True
                    await self._options(send, allow.split(","), request)
                    return
                self._decorate(MutableHeaders(scope=message), request, preflight)
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _decorate(self, headers: MutableHeaders, request: Headers, options: bool) -> None:
        origin = request.get("origin")
        if origin is None:
            if "*" in self.origins:
                headers["Access-Control-Allow-Origin"] = "*"
            return
        if "*" not in self.origins and origin not in self.origins:
            return
        headers["Access-Control-Allow-Origin"] = origin
        headers.add_vary_header("Origin")
        if options and "access-control-request-method" in request:
            wanted = request.get("access-control-request-headers")
            if wanted:
                headers["Access-Control-Allow-Headers"] = wanted
            headers["Access-Control-Allow-Methods"] = contract.LEGACY_CORS_METHODS

    async def _options(self, send: Send, methods: list[str], request: Headers) -> None:
        response = MutableHeaders()
        response["Content-Type"] = "text/html; charset=utf-8"
        response["Allow"] = contract.allow_header(methods)
        response["Content-Length"] = "0"
        self._decorate(response, request, options=True)
        await send({"type": "http.response.start", "status": 200, "headers": response.raw})
        await send({"type": "http.response.body", "body": b""})
