"""A loopback emulator of Bedrock Agent Runtime's ``InvokeAgent``, wire-compatible with boto3.

``POST /agents/{agentId}/agentAliases/{agentAliasId}/sessions/{sessionId}/text`` answers with
a chunked ``application/vnd.amazon.eventstream`` body, one HTTP chunk per event, so latency
between events is real. Errors use the rest-json shape (status, ``x-amzn-ErrorType``,
``{"message": ...}``) so botocore raises ``ClientError`` with the service's error codes.

Admin endpoints, for tests and the dev runner::

    GET  /_emulator/health   {"status": "ok"}
    GET  /_emulator/config   the EmulatorConfig as JSON
    POST /_emulator/config   change some options, answers the new config (400 if invalid)
    POST /_emulator/reset    forget session turns and counters, re-seed the fault draws
    GET  /_emulator/stats    request counters by outcome

Turns: every request answered with 200 takes the session's next turn (stream faults
included, as the agent had started answering); errors before any event take none.
``endSession`` true ends the session, so the next request on that id is turn 1 again. A
new session seeded with ``sessionState.conversationHistory`` starts after the user messages
in it (as the real agent, given that history, continues the conversation).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Final
from urllib.parse import unquote

from harness.local.emulators import eventstream
from harness.local.emulators.config import EmulatorConfig
from harness.local.emulators.faults import Fault, choose_fault, parse_directives
from harness.local.emulators.http11 import (
    LAST_CHUNK,
    HttpError,
    Request,
    encode_chunk,
    encode_head,
    encode_json,
    read_request,
)
from harness.local.emulators.replies import compose_reply, split_text, token_usage
from harness.local.loop import LoopThread

__all__ = [
    "BedrockAgentEmulator",
    "BedrockEmulatorThread",
    "EmulatorConfig",
    "compose_reply",
    "token_usage",
]

_INVOKE_PATH = re.compile(r"/agents/([^/]+)/agentAliases/([^/]+)/sessions/([^/]+)/text")
_AGENT_ID = re.compile(r"[0-9a-zA-Z]{1,10}")
_SESSION_ID = re.compile(r"[0-9a-zA-Z._:-]{2,100}")

# (status, x-amzn-ErrorType, message) of the faults answered before any event.
_HTTP_FAULTS: Final[dict[Fault, tuple[int, str, str]]] = {
    "throttle": (429, "ThrottlingException", "Rate exceeded (emulated)."),
    "fail": (500, "InternalServerException", "Internal server error (emulated)."),
    "denied": (403, "AccessDeniedException", "Access denied (emulated)."),
}

_STOP_GRACE_S = 1.0

SessionKey = tuple[str, str, str]
_Send = Callable[[bytes], Awaitable[None]]


class _Refusal(Exception):
    """Raised inside a handler to answer with a rest-json error."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


class BedrockAgentEmulator:
    """The emulator server on the running event loop: ``await start()``, ``await stop()``.

    ``configure()``, ``reset()``, ``stats()`` and ``config`` may be called from any thread:
    they swap whole objects or hold a lock, so a running server sees either the old or the
    new state, never half of each.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency_ms: float = 0.0,
        chunk_count: int = 3,
        chunk_delay_ms: float = 0.0,
        fault: Fault | None = None,
        fault_rate: float = 1.0,
        seed: int = 0,
    ) -> None:
        self._host = host
        self._port = port
        self._config = EmulatorConfig.from_options(
            {
                "latency_ms": latency_ms,
                "chunk_count": chunk_count,
                "chunk_delay_ms": chunk_delay_ms,
                "fault": fault,
                "fault_rate": fault_rate,
                "seed": seed,
            }
        )
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._turns: dict[SessionKey, int] = {}
        self._counts: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._url: str | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    # -- configuration and state ------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` once started (still answers after ``stop()``)."""
        if self._url is None:
            raise RuntimeError("emulator not started")
        return self._url

    @property
    def config(self) -> EmulatorConfig:
        """The options in force now."""
        return self._config

    def configure(self, **changes: object) -> EmulatorConfig:
        """Change some options at run time (``ValueError`` if invalid); returns the new ones.

        Changing ``seed`` re-seeds the fault draws.
        """
        new = self._config.updated(changes)
        with self._lock:
            if "seed" in changes:
                self._rng = random.Random(new.seed)
            self._config = new
        return new

    def reset(self) -> None:
        """Forget all session turns and counters, and re-seed the fault draws."""
        with self._lock:
            self._turns.clear()
            self._counts.clear()
            self._rng = random.Random(self._config.seed)

    def stats(self) -> dict[str, Any]:
        """Counters: HTTP requests, InvokeAgent calls and their outcomes, open connections."""
        with self._lock:
            outcomes = {
                name.removeprefix("outcome:"): value
                for name, value in sorted(self._counts.items())
                if name.startswith("outcome:")
            }
            return {
                "requests": self._counts["requests"],
                "invocations": self._counts["invocations"],
                "outcomes": outcomes,
                "sessions": len(self._turns),
                "connections": len(self._connections),
            }

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _next_turn(self, key: SessionKey, prior: int = 0) -> int:
        # `prior`: the turns a new session starts from (its seeded conversation history).
        with self._lock:
            turn = self._turns.get(key, prior) + 1
            self._turns[key] = turn
            return turn

    def _end_session(self, key: SessionKey) -> None:
        with self._lock:
            self._turns.pop(key, None)

    def _draw(self) -> float:
        with self._lock:
            return self._rng.random()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on host:port (port 0: a free one); returns once connections are accepted."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._server = await asyncio.start_server(self._serve_connection, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        self._url = f"http://{self._host}:{self._port}"

    async def stop(self) -> None:
        """Stop listening and drop every connection, hung ones included, without waiting."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_STOP_GRACE_S)
        # Python 3.12+ waits here for connections to close; they are all closed by now.
        await server.wait_closed()

    async def __aenter__(self) -> BedrockAgentEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- connections ------------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while True:
                try:
                    request = await read_request(reader, writer)
                except HttpError as error:
                    await self._send_error(
                        writer,
                        "HTTP/1.1",
                        error.status,
                        "ValidationException",
                        error.message,
                        False,
                    )
                    return
                if request is None:
                    return
                self._count("requests")
                keep_open = await self._dispatch(request, reader, writer)
                if not (keep_open and request.keep_alive):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # The client went away; nothing left to answer.
        except asyncio.CancelledError:
            # Only stop() cancels these tasks. Drop unsent data rather than wait for a client
            # that may never read it, and end normally: on Python 3.11 asyncio's done-callback
            # calls task.exception() on a cancelled connection task and logs a CancelledError.
            writer.transport.abort()
        finally:
            del self._connections[task]
            writer.close()

    async def _dispatch(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must be closed afterwards."""
        path = request.path
        keep = request.keep_alive
        try:
            match = _INVOKE_PATH.fullmatch(path)
            if match is not None:
                self._require_method(request, "POST")
                ids = (unquote(match[1]), unquote(match[2]), unquote(match[3]))
                return await self._invoke(request, ids, reader, writer)
            if path.startswith("/_emulator/"):
                body = self._admin(request, path.removeprefix("/_emulator/"))
                await self._send_json(writer, request.version, 200, body, keep)
                return True
            raise _Refusal(404, "ResourceNotFoundException", f"No route for {path}.")
        except _Refusal as reply:
            await self._send_error(
                writer, request.version, reply.status, reply.error_type, reply.message, keep
            )
            return True

    @staticmethod
    def _require_method(request: Request, method: str) -> None:
        if request.method != method:
            raise _Refusal(405, "MethodNotAllowedException", f"Use {method} for this path.")

    def _admin(self, request: Request, action: str) -> dict[str, Any]:
        if action == "health":
            self._require_method(request, "GET")
            return {"status": "ok"}
        if action == "stats":
            self._require_method(request, "GET")
            return self.stats()
        if action == "reset":
            self._require_method(request, "POST")
            self.reset()
            return {"status": "reset"}
        if action == "config":
            if request.method == "GET":
                return self._config.to_json()
            self._require_method(request, "POST")
            changes = _json_object(request.body)
            try:
                return self.configure(**changes).to_json()
            except ValueError as error:
                raise _Refusal(400, "ValidationException", str(error)) from None
        raise _Refusal(404, "ResourceNotFoundException", f"No route for {request.path}.")

    # -- InvokeAgent ------------------------------------------------------------------------

    async def _invoke(
        self,
        request: Request,
        ids: SessionKey,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        agent_id, alias_id, session_id = ids
        if not (_AGENT_ID.fullmatch(agent_id) and _AGENT_ID.fullmatch(alias_id)):
            raise _Refusal(400, "ValidationException", "Invalid agentId or agentAliasId.")
        if not _SESSION_ID.fullmatch(session_id):
            raise _Refusal(400, "ValidationException", "Invalid sessionId.")
        body = _json_object(request.body)
        input_text = body.get("inputText", "")
        if not isinstance(input_text, str):
            raise _Refusal(400, "ValidationException", "inputText must be a string.")
        try:
            directives = parse_directives(input_text)
        except ValueError as error:
            raise _Refusal(400, "ValidationException", str(error)) from None

        self._count("invocations")
        config = self._config
        fault = choose_fault(config.fault, config.fault_rate, directives, self._draw())
        if fault == "hang":
            self._count("outcome:hang")
            await _hold(reader)
            return False

        latency = directives.latency_ms if directives.latency_ms is not None else config.latency_ms
        await asyncio.sleep(latency / 1000)
        if fault in _HTTP_FAULTS:
            status, error_type, message = _HTTP_FAULTS[fault]
            self._count(f"outcome:{fault}")
            await self._send_error(writer, request.version, status, error_type, message, True)
            return True

        turn = self._next_turn(ids, _prior_turns(body))
        reply = compose_reply(input_text, turn, config.seed)
        chunked = request.version == "HTTP/1.1"
        headers = [
            ("Content-Type", "application/vnd.amazon.eventstream"),
            ("x-amzn-bedrock-agent-content-type", "application/json"),
            ("x-amz-bedrock-agent-session-id", session_id),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ]
        # HTTP/1.0 has no chunked encoding: the body then ends when the connection closes.
        headers += [("Transfer-Encoding", "chunked")] if chunked else [("Connection", "close")]
        writer.write(encode_head(200, headers, request.version))

        async def send(event: bytes) -> None:
            writer.write(encode_chunk(event) if chunked else event)
            await writer.drain()

        if body.get("enableTrace") is True:
            input_tokens, output_tokens = token_usage(input_text, reply)
            await send(
                eventstream.trace_event(
                    session_id=session_id,
                    agent_id=agent_id,
                    agent_alias_id=alias_id,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                )
            )
        outcome = await self._stream_reply(send, reply, config, fault)
        self._count(f"outcome:{outcome}")
        if outcome == "ok" and body.get("endSession") is True:
            self._end_session(ids)
        if not chunked:
            return False
        writer.write(LAST_CHUNK)
        await writer.drain()
        return True

    @staticmethod
    async def _stream_reply(
        send: _Send, reply: str, config: EmulatorConfig, fault: Fault | None
    ) -> str:
        """Send the chunk events (and a stream fault); returns the outcome's name."""
        if fault == "stream-fail":
            await send(
                eventstream.exception_event(
                    "internalServerException", "Internal server error (emulated)."
                )
            )
            return "stream-fail"
        for index, piece in enumerate(split_text(reply, config.chunk_count)):
            if index and config.chunk_delay_ms:
                await asyncio.sleep(config.chunk_delay_ms / 1000)
            await send(eventstream.chunk_event(piece.encode("utf-8")))
            if fault == "stream-throttle":
                await send(
                    eventstream.exception_event("throttlingException", "Rate exceeded (emulated).")
                )
                return "stream-throttle"
        return "ok"

    # -- plain answers ----------------------------------------------------------------------

    async def _send_json(
        self,
        writer: asyncio.StreamWriter,
        version: str,
        status: int,
        body: Any,
        keep_alive: bool,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        payload = encode_json(body)
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("x-amzn-RequestId", str(uuid.uuid4())),
            ("Connection", "keep-alive" if keep_alive else "close"),
            *extra,
        ]
        writer.write(encode_head(status, headers, version) + payload)
        await writer.drain()

    async def _send_error(
        self,
        writer: asyncio.StreamWriter,
        version: str,
        status: int,
        error_type: str,
        message: str,
        keep_alive: bool,
    ) -> None:
        await self._send_json(
            writer,
            version,
            status,
            {"message": message},
            keep_alive,
            (("x-amzn-ErrorType", error_type),),
        )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise _Refusal(400, "ValidationException", "Request body is not valid JSON.") from None
    if not isinstance(value, dict):
        raise _Refusal(400, "ValidationException", "Request body must be a JSON object.")
    return value


async def _hold(reader: asyncio.StreamReader) -> None:
    """Never answer: read and drop whatever arrives until the client hangs up."""
    while await reader.read(65536):
        pass


class BedrockEmulatorThread(LoopThread):
    """Runs a ``BedrockAgentEmulator`` on its own event loop in a daemon thread.

    For synchronous code (tests, the dev runner, WSGI stacks): ``start()`` returns the url
    once the server listens, ``stop()`` returns within about a second even with hung
    connections open. Usable as a context manager.
    """

    thread_name = "bedrock-emulator"

    def __init__(self, emulator: BedrockAgentEmulator | None = None) -> None:
        super().__init__()
        self.emulator = emulator if emulator is not None else BedrockAgentEmulator()

    @property
    def url(self) -> str:
        """The emulator's url once started."""
        return self.emulator.url

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        await self.emulator.start()
        try:
            yield
        finally:
            await self.emulator.stop()


def _prior_turns(body: dict[str, Any]) -> int:
    """How many user turns ``sessionState.conversationHistory`` seeds a session with."""
    state = body.get("sessionState")
    history = state.get("conversationHistory") if isinstance(state, dict) else None
    messages = history.get("messages") if isinstance(history, dict) else None
    if not isinstance(messages, list):
        return 0
    return sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user")
