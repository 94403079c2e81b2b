"""Upstream mode: a stack that runs elsewhere (Flask on gunicorn, FastAPI on uvicorn, each in
its own deployment), reached over pooled HTTP instead of mounted in the gateway's process.

`Upstream` is an ASGI app like a mounted stack, so everything in front of it (the split,
stickiness, ownership, shadowing, the rollout, metrics, admission) is the same in both modes.
It forwards each request over a keep-alive pool (aiohttp: a `/health` round trip costs it
a tenth of httpx's CPU, README "Upstream mode"), streams the request body as it arrives
(where the gateway read it first, for the conversation key, it is handed over whole) and
the answer as it comes, drops hop-by-hop headers (RFC 9110 section 7.6.1) both ways, and sets
`X-Forwarded-For`, `-Proto` and `-Host`. An upstream that cannot be reached within the
connect timeout is a 502, one that does not answer within the read timeout a 504, both in the
contract's error shape; the answer is never decoded (a gzip body goes through as it came).

Route ownership: `RemoteRoutes` is a matcher the gateway's `Ownership` asks, filled from
the FastAPI upstream's `/openapi.json` (read at start and refreshed) or from a list of
route templates (`GATEWAY_FLASK_ROUTES`); unknown, it says the side may serve any path, so
the percentage decides.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import structlog
from multidict import CIMultiDict
from starlette.types import Message, Receive, Scope, Send
from yarl import URL

from harness.gateway.background import cancel
from harness.gateway.body import BodyTooLarge, ClientGone
from harness.gateway.ownership import Matcher, every_path, template_matcher
from shared import contract

log = structlog.get_logger("dualstack.gateway")

UNAVAILABLE = "Upstream unavailable"
"""The 502's message: the upstream could not be reached, or broke off before answering."""
TIMED_OUT = "Upstream timed out"
"""The 504's message: the upstream did not answer within the read timeout."""

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that describe one connection, not the message (RFC 9110 section 7.6.1, and the
obsolete `Proxy-Connection`): never forwarded, either way. So are those `Connection` names."""

PROTECTED = frozenset(
    {"x-request-id", "content-length", "host", contract.SHADOW_HEADER.lower(),
     contract.MINTED_KEY_HEADER.lower()}
)  # fmt: skip
"""Headers a client's `Connection` cannot name away: the gateway sets or checks them (a
shadow copy without its marker would be served as a real turn)."""
SET_HERE = frozenset({"expect", "x-forwarded-host", "x-forwarded-proto"})
"""Request headers the upstream never gets as the client sent them: `Expect` (the gateway's
server answered it; forwarded, aiohttp would wait for a 100 no timeout covers) and the
`X-Forwarded-*` the gateway sets itself."""
ROUTES_TIMEOUT_SECONDS = 5.0
"""The longest one read of an upstream's `/openapi.json` may take (start-up waits on it)."""
REPLACED = frozenset({"server", "date"})
"""Answer headers the gateway's own server sets: the upstream's are dropped (as nginx does),
so a client sees one of each, the same whichever stack answered."""

_SKIP_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
"""Headers aiohttp would add to a request that lacks them: the upstream gets the client's."""


@dataclass(frozen=True)
class UpstreamConfig:
    """Where a stack runs and how the gateway talks to it."""

    name: str
    """The side, as the metrics and logs name it: "flask" or "fastapi"."""
    url: str
    """`http(s)://host:port` with an optional path prefix the requests' paths go under."""
    connect_timeout: float = 2.0
    read_timeout: float = 60.0
    """Seconds the upstream may stay silent: before its answer starts, and between parts."""
    pool: int = 80
    """Connections kept open at most (the admission bound plus the shadows' own)."""
    max_body_bytes: int = 1024 * 1024
    """A streamed request body past it is cut off and answered 413, as a read one is."""
    keepalive: float = 1.0
    """Seconds an idle connection is kept: below the upstream's own idle timeout (gunicorn
    closes one after 2 s, uvicorn after 5 s), so the pool never sends a request on a
    connection the upstream is closing."""


def url_problem(url: str) -> str | None:
    """What makes `url` unfit to name an upstream (one line), or None: it must be http(s)
    with a host and a valid port, and have no query or fragment."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.query or parts.fragment:
        return "must not have a query or a fragment"
    try:
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError:
        return "has a port that is not a number from 0 to 65535"
    return None


def parse_routes(text: str | None) -> list[str] | None:
    """Route templates from a setting: a JSON list, or names separated by commas or spaces.
    Flask's `<name>` and `<converter:name>` become `{name}` (`{name:path}` for a path
    converter), so one list serves either side. None when unset or empty."""
    if text is None or not text.strip():
        return None
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            given = json.loads(stripped)
        except ValueError:
            raise ValueError("a JSON list of route templates, not valid JSON") from None
        if not isinstance(given, list) or not all(isinstance(item, str) for item in given):
            raise ValueError('a JSON list of route templates: ["/health", "/api/v1/chat"]')
        items = given
    else:
        items = [item for item in re.split(r"[,\s]+", stripped) if item]
    templates = []
    for item in items:
        if not item.startswith("/"):
            raise ValueError(f"route {item!r} must start with '/'")
        templates.append(_FLASK_VARIABLE.sub(_starlette_variable, item))
    return templates


_FLASK_VARIABLE = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def _starlette_variable(match: re.Match[str]) -> str:
    converter, name = match.group(1), match.group(2)
    return f"{{{name}:path}}" if converter == "path" else f"{{{name}}}"


class RemoteRoutes:
    """A matcher whose routes can change: the gateway's `Ownership` asks it as it asks a
    mounted app's routing. Unknown routes (none set yet) match every path."""

    def __init__(self, templates: Iterable[str] | None = None) -> None:
        self.templates: list[str] | None = None
        self._match: Matcher = every_path
        self._listeners: list[Callable[[], None]] = []
        if templates is not None:
            self.set(templates)

    def __call__(self, path: str) -> str | None:
        return self._match(path)

    def set(self, templates: Iterable[str]) -> bool:
        """Routes these templates from now on; whether they differ from the last ones (then
        every listener is told, so cached routing decisions are made again)."""
        given = list(templates)
        if given == self.templates:
            return False
        self.templates = given
        self._match = template_matcher(given)
        for listener in self._listeners:
            listener()
        return True

    def add_listener(self, listener: Callable[[], None]) -> None:
        """`listener()` after every change of the routes."""
        self._listeners.append(listener)


class Upstream:
    """An ASGI app that forwards each HTTP request to one upstream over a keep-alive pool.

    Its lifespan opens the pool (and, with `routes` and `openapi`, reads the upstream's
    OpenAPI document, then again every `refresh_seconds`), and closes it."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        routes: RemoteRoutes | None = None,
        openapi: bool = False,
        extra_routes: Iterable[str] = (),
        refresh_seconds: float = 60.0,
    ) -> None:
        problem = url_problem(config.url)
        if problem is not None:
            raise ValueError(f"{config.url!r} {problem}")
        parts = urlsplit(config.url)
        self.config = config
        self.routes = routes or RemoteRoutes()
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._prefix = parts.path.rstrip("/")
        self._openapi = openapi
        self._extra = list(extra_routes)
        self._refresh_seconds = refresh_seconds
        self._session: aiohttp.ClientSession | None = None
        self._refresher: asyncio.Task[None] | None = None

    # -- lifespan --------------------------------------------------------------------------

    async def start(self) -> None:
        """Opens the pool; reads the upstream's routes when asked to (a failure is logged:
        the routes stay unknown, and the next refresh tries again)."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self.config.pool,
            limit_per_host=0,
            keepalive_timeout=self.config.keepalive,
            ttl_dns_cache=300,
        )
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.config.connect_timeout, sock_read=self.config.read_timeout
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO,
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )
        if self._openapi:
            await self.refresh_routes()
            self._refresher = asyncio.create_task(self._keep_refreshing(), name="upstream-routes")

    async def close(self) -> None:
        """Stops refreshing and closes the pool's connections."""
        refresher, self._refresher = self._refresher, None
        await cancel(refresher)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def refresh_routes(self) -> bool:
        """Reads the upstream's `/openapi.json` (its paths, and the document's own) into
        `routes`; whether it was read. A failure keeps the routes known last."""
        assert self._session is not None, "the upstream's lifespan has not started"
        url = URL(f"{self._origin}{self._prefix}/openapi.json", encoded=True)
        try:
            async with self._session.get(
                url,
                headers={"Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=ROUTES_TIMEOUT_SECONDS),
            ) as answer:
                if answer.status != 200:
                    raise ValueError(f"status {answer.status}")
                document = json.loads(await answer.read())
            paths = document["paths"]
            if not isinstance(paths, dict):
                raise ValueError("its paths are not an object")
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as error:
            log.warning(
                "upstream.routes_unread",
                upstream=self.config.name,
                url=str(url),
                error=f"{type(error).__name__}: {error}",
                effect="routes kept as known last" if self.routes.templates else "any path",
            )
            return False
        # The document's paths are the app's, as clients ask for them: the URL's prefix is
        # added on the way to the upstream, not to the routes.
        templates = [path for path in paths if isinstance(path, str)]
        templates += ["/openapi.json", *self._extra]
        if self.routes.set(templates):
            log.info("upstream.routes", upstream=self.config.name, routes=len(templates))
        return True

    async def _keep_refreshing(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            await self.refresh_routes()

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._forward(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            # Not proxied: refused as an app without websocket routes refuses it.
            await send({"type": "websocket.close", "code": 1000})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as error:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = self._session
        if session is None:
            raise RuntimeError("the upstream's lifespan has not started")
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        target = self._origin + self._prefix + raw_path.decode("latin-1")
        if query:
            target += "?" + query.decode("latin-1")
        url = _url(target) if raw_path.startswith(b"/") else None
        if url is None:
            # `OPTIONS *`, or `GET @evil.example/x` (h11 takes it): no route's path, and
            # never a request to another host. Answered as an unknown path is.
            await self._answer(send, 404, contract.NOT_FOUND)
            return
        headers, has_body = _request_headers(scope)
        state = _Body(self.config.max_body_bytes)
        started = False
        try:
            data = await _body(receive, has_body, state)
            async with session.request(
                scope["method"],
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                compress=None,
            ) as answer:
                started = True
                await send(
                    {
                        "type": "http.response.start",
                        "status": answer.status,
                        "headers": _response_headers(answer.raw_headers),
                    }
                )
                async for chunk in answer.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if data is not None and answer.status >= 400:
                    # Refused, maybe before the body was read (413): gunicorn then closes
                    # the connection, and reused it would fail the next request.
                    answer.close()
                await send({"type": "http.response.body", "body": b""})
        except ClientGone:
            return  # nobody to answer; a body cut short was not sent on as whole
        except BodyTooLarge:
            await self._answer(send, 413, contract.BODY_TOO_LARGE)
        except aiohttp.SocketTimeoutError:
            if started:
                raise
            await self._fail(send, 504, TIMED_OUT, "read_timeout")
        except (aiohttp.ClientError, TimeoutError) as error:
            # ConnectionTimeoutError and ClientConnectorError (down, refusing, unreachable)
            # and an upstream that broke off before its answer started; or the client left
            # mid-body (aiohttp wraps that): not the upstream's failure, and nobody to answer.
            if state.gone:
                return
            if state.too_large and not started:
                # Refused as a body read here is: the upstream never got it whole.
                await self._answer(send, 413, contract.BODY_TOO_LARGE)
                return
            if started:
                raise
            await self._fail(send, 502, UNAVAILABLE, type(error).__name__)

    async def _fail(self, send: Send, status: int, message: str, why: str) -> None:
        log.warning("upstream.failed", upstream=self.config.name, status=status, error=why)
        await self._answer(send, status, message)

    @staticmethod
    async def _answer(send: Send, status: int, message: str) -> None:
        body = json.dumps(contract.error_body(message)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


_DROPPED_ANSWER = frozenset(name.encode() for name in HOP_BY_HOP | REPLACED)
_DROPPED_REQUEST = frozenset(name.encode() for name in HOP_BY_HOP | SET_HERE)
_PROTECTED = frozenset(name.encode() for name in PROTECTED)


class _Body:
    """A streamed body's fate, set where it is seen (aiohttp wraps what the stream raises):
    the client left mid-body, or the body grew past the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.gone = False
        self.too_large = False


def _url(target: str) -> URL | None:
    """`target` as a URL, None when it is not well-formed. The target is the origin, then
    a path starting with `/`: nothing in it can name another host."""
    try:
        return URL(target, encoded=True)
    except ValueError:
        return None


def _connection_names(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """The header names `Connection` lists (lower case), and `connection` itself."""
    named = {b"connection"}
    for name, value in headers:
        if name == b"connection":
            text = value.decode("latin-1")
            named.update(part.strip().lower().encode("latin-1") for part in text.split(","))
    return named


def _request_headers(scope: Scope) -> tuple[CIMultiDict[str], bool]:
    """The headers the upstream gets: the client's, less hop-by-hop ones (those its
    `Connection` names too, except `PROTECTED`), `SET_HERE` and `Host`, plus
    `X-Forwarded-For` (the client's address appended to any given), `-Proto` and `-Host`;
    and whether the request has a body (a length or chunked)."""
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    dropped = _DROPPED_REQUEST | (_connection_names(raw) - _PROTECTED)
    headers: CIMultiDict[str] = CIMultiDict()
    forwarded_for: str | None = None
    host: str | None = None
    has_body = False
    for name, value in raw:
        if name in (b"transfer-encoding", b"content-length"):
            has_body = True
        if name in dropped:
            continue
        text = value.decode("latin-1")
        if name == b"host":
            host = text
        elif name == b"x-forwarded-for":
            forwarded_for = text if forwarded_for is None else f"{forwarded_for}, {text}"
        else:
            headers.add(name.decode("latin-1"), text)
    client = scope.get("client")
    if client:
        address = client[0]
        if forwarded_for is None:
            forwarded_for = address
        elif forwarded_for.rpartition(",")[2].strip() != address:
            # Unless the server already took the client's address from a trusted proxy's
            # header (uvicorn's --proxy-headers): then it is that header's last entry.
            forwarded_for = f"{forwarded_for}, {address}"
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    headers["X-Forwarded-Proto"] = scope.get("scheme", "http")
    if host is not None:
        headers["X-Forwarded-Host"] = host
    return headers, has_body


async def _body(
    receive: Receive, has_body: bool, state: _Body
) -> bytes | AsyncIterator[bytes] | None:
    """The request body for aiohttp: None without one, the bytes when they came in one
    message (the usual case, and always where the gateway read them first), else a stream
    of the parts as they arrive, cut off past `state.limit`."""
    if not has_body:
        return None
    first = await receive()
    if first["type"] != "http.request":
        raise ClientGone
    if not first.get("more_body", False):
        whole = bytes(first.get("body", b""))
        if len(whole) > state.limit:  # a streamed body can arrive in one message too
            raise BodyTooLarge
        return whole
    return _stream(first, receive, state)


async def _stream(first: Message, receive: Receive, state: _Body) -> AsyncIterator[bytes]:
    # Raising aborts the upstream request: a half body is never sent on as whole.
    message, size = first, 0
    while True:
        part = bytes(message.get("body", b""))
        size += len(part)
        if size > state.limit:
            state.too_large = True
            raise BodyTooLarge
        yield part
        if not message.get("more_body", False):
            return
        message = await receive()
        if message["type"] != "http.request":
            state.gone = True
            raise ClientGone


def _response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The upstream's answer headers for the client: lower-case names (as ASGI has them),
    without hop-by-hop ones (nor those its `Connection` names), nor `Server` and `Date`
    (`REPLACED`)."""
    pairs = [(name.lower(), value) for name, value in raw]
    dropped = _DROPPED_ANSWER | _connection_names(pairs)
    return [(name, value) for name, value in pairs if name not in dropped]
