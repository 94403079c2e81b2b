"""A chunked request's trailers never act as its headers: not in the gateway, not in either
stack, under the command lines production runs (docker-compose.yml's, the image's), `make
run`'s, and `ASGIServer`'s uvicorn.

uvicorn's httptools protocol appends trailer fields to `scope["headers"]`; when the whole
request arrives in one read that happens before the app first runs, so the requests here are
written by hand (http.client cannot send trailers) and sent in one `sendall`. Each case sends
the same field as a header too, so a trailer that is ignored is ignored because it is a
trailer, not because the field does nothing.
"""

from __future__ import annotations

import http.client
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from pydantic import ValidationError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from harness.gateway.settings import GatewaySettings
from harness.local.emulators import LocalEmulators
from harness.local.processes import free_port, run_server
from harness.local.servers import ASGIServer
from shared.serving import HTTP_PROTOCOL, SnapshotHttpToolsProtocol

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
SPOOFED_ID = "trailer-id"


# --- requests written by hand ---------------------------------------------------------------


def chunked(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: Mapping[str, str] | None = None,
    trailers: Mapping[str, str] | None = None,
    close: bool = True,
) -> bytes:
    """An HTTP/1.1 request with a chunked body (one chunk, if any) and a trailer section."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked"]
    if body:
        lines.append("Content-Type: application/json")
    if close:
        lines.append("Connection: close")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    head = "\r\n".join(lines).encode() + b"\r\n\r\n"
    chunks = f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b""
    trailer = "".join(f"{name}: {value}\r\n" for name, value in (trailers or {}).items())
    return head + chunks + b"0\r\n" + trailer.encode() + b"\r\n"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class _Answers:
    """Stands in for the socket of `http.client.HTTPResponse`, so that several answers read
    from one buffered reader: each closes the file it reads from once its body is read."""

    def __init__(self, reader: BinaryIO) -> None:
        self._reader = reader

    def makefile(self, mode: str) -> _Answers:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    def close(self) -> None:
        pass


def exchange(url: str, *requests: bytes) -> list[Answer]:
    """Send `requests` in one `sendall` on one connection, and read an answer to each."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    answers = []
    with (
        socket.create_connection((parts.hostname, parts.port), timeout=30) as sock,
        sock.makefile("rb") as reader,
    ):
        sock.sendall(b"".join(requests))
        for _ in requests:
            response = http.client.HTTPResponse(_Answers(reader))  # type: ignore[arg-type]
            response.begin()
            answers.append(Answer(response.status, response.headers, response.read()))
    return answers


def send(url: str, request: bytes) -> Answer:
    (answer,) = exchange(url, request)
    return answer


def chat(message: str) -> bytes:
    return json.dumps({"message": message}).encode()


# --- uvicorn's protocols, on an app that shows what it was given ------------------------------


async def show_headers(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the request's headers as JSON, read once the whole body has been."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    body = json.dumps([[n.decode(), v.decode()] for n, v in scope["headers"]]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


SPOOF = {"X-User-ID": "alice", "X-Request-ID": SPOOFED_ID}
# Two requests on one connection in one read: the first with trailers, the second with
# headers of its own, which must all reach the app (each request starts afresh).
PIPELINED = (
    chunked(
        "POST", "/first", b"{}", headers={"X-Request-ID": "first"}, close=False, trailers=SPOOF
    ),
    chunked("POST", "/second", b"{}", headers={"X-User-ID": "bob"}),
)
FIRST = [
    ["host", "127.0.0.1"],
    ["transfer-encoding", "chunked"],
    ["content-type", "application/json"],
    ["x-request-id", "first"],
]
SECOND = [
    ["host", "127.0.0.1"],
    ["transfer-encoding", "chunked"],
    ["content-type", "application/json"],
    ["connection", "close"],
    ["x-user-id", "bob"],
]


@pytest.mark.parametrize(
    "options",
    [{}, {"http": HTTP_PROTOCOL}, {"http": SnapshotHttpToolsProtocol}, {"http": "h11"}],
    ids=["ASGIServer-default", "import-string", "class", "h11"],
)
def test_trailers_stay_out_of_the_headers(options: dict[str, Any]) -> None:
    with ASGIServer(show_headers, **options) as server:
        first, second = exchange(server.url, *PIPELINED)
    assert [json.loads(first.body), json.loads(second.body)] == [FIRST, SECOND]


class UvicornsHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol as uvicorn ships it, even once the entry modules have
    patched it (`snapshot_httptools_headers`) in this process."""

    on_message_begin = inspect.unwrap(HttpToolsProtocol.on_message_begin)
    on_header = inspect.unwrap(HttpToolsProtocol.on_header)
    on_headers_complete = inspect.unwrap(HttpToolsProtocol.on_headers_complete)


def test_plain_httptools_still_turns_trailers_into_headers() -> None:
    # Why SnapshotHttpToolsProtocol exists: if uvicorn stops doing this, it can go.
    with ASGIServer(show_headers, http=UvicornsHttpTools) as server:
        first, _ = exchange(server.url, *PIPELINED)
    assert json.loads(first.body) == [*FIRST, ["x-user-id", "alice"], ["x-request-id", SPOOFED_ID]]


# --- the production command lines ----------------------------------------------------------


def compose_command(service: str) -> list[str]:
    """docker-compose.yml's command for `service`, on 127.0.0.1:{port} from this venv."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    program, *args = compose["services"][service]["command"]
    local = [str(VENV_BIN / program)]
    for arg in args:
        if arg.startswith("--host="):
            arg = "--host=127.0.0.1"
        elif arg.startswith("--port="):
            arg = "--port={port}"
        elif arg.startswith("--bind="):
            arg = "--bind=127.0.0.1:{port}"
        local.append(arg)
    assert "{port}" in " ".join(local) and "0.0.0.0" not in " ".join(local)
    return local


def test_the_image_runs_the_gateway_as_compose_does() -> None:
    # So the gateway test below, run with compose's command, covers the image's CMD too.
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", "").splitlines()
    cmd = json.loads([line for line in lines if line.startswith("CMD ")][-1].removeprefix("CMD "))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert cmd == compose["services"]["gateway"]["command"]


def override_open() -> str:
    """`GATEWAY_OVERRIDE_HEADER` letting any client pick a stack: `open` where the setting
    has modes, `true` where it is still a switch."""
    try:
        GatewaySettings.model_validate({"override_header": "open"})
    except ValidationError:
        return "true"
    return "open"


def alice_session(url: str) -> str:
    """A new session owned by alice, made through `url`."""
    sid = f"trailers-{uuid.uuid4().hex[:12]}"
    body = {"message": "mine", "session_id": sid, "user_id": "alice"}
    turn = httpx.post(f"{url}/api/v1/chat", json=body, timeout=30)
    assert turn.status_code == 200, turn.text
    return sid


def spoofing(url: str, sid: str, fields: Mapping[str, str]) -> list[tuple[int, str, str]]:
    """A chat turn and a read of alice's session `sid`, with `fields` as trailers and then
    as headers: (status, X-Dualstack-Backend, X-Request-ID) of each, the request id
    `spoofed` when it is the one sent, else `minted`."""
    requests = [
        chunked("POST", "/api/v1/chat", chat("hello"), trailers=fields),
        chunked("GET", f"/api/v1/chat/sessions/{sid}", trailers=fields),
        chunked("POST", "/api/v1/chat", chat("hello"), headers=fields),
        chunked("GET", f"/api/v1/chat/sessions/{sid}", headers=fields),
    ]
    answers = [send(url, request) for request in requests]
    return [
        (
            answer.status,
            answer.headers.get("X-Dualstack-Backend", "-"),
            "spoofed" if answer.headers["X-Request-ID"] == SPOOFED_ID else "minted",
        )
        for answer in answers
    ]


SPOOF_ALL = {"X-Dualstack-Backend": "fastapi", **SPOOF}


def without_http_option(argv: list[str]) -> list[str]:
    """`argv` as a plain `uvicorn module:app`: no `--http`."""
    plain = [arg for arg in argv if not arg.startswith("--http")]
    assert len(plain) == len(argv) - 1
    return plain


@pytest.mark.parametrize("plain", [False, True], ids=["production", "plain-uvicorn"])
def test_the_gateway_under_its_production_command_ignores_trailers(
    emulators: LocalEmulators, tmp_path: Path, plain: bool
) -> None:
    table = f"trailers_{uuid.uuid4().hex[:8]}"
    emulators.dynamodb.create_table(table)
    env = {
        **emulators.env(),
        "LOG_LEVEL": "WARNING",
        "GATEWAY_STATE_TABLE": table,
        "GATEWAY_FASTAPI_PERCENT": "0",
        "GATEWAY_OVERRIDE_HEADER": override_open(),
    }
    argv = compose_command("gateway")
    argv = without_http_option(argv) if plain else argv
    with run_server(
        "gateway", argv, env=env, log_path=tmp_path / "gateway.log", ready_path="/health", cwd=ROOT
    ) as gateway:
        seen = spoofing(gateway.url, alice_session(gateway.url), SPOOF_ALL)
    assert seen == [
        (200, "flask", "minted"),  # 0 % to FastAPI: the trailer pins nothing
        (404, "fastapi", "minted"),  # FastAPI's path; the trailer is nobody's identity
        (200, "fastapi", "spoofed"),  # the same fields as headers: pinned, named
        (200, "fastapi", "spoofed"),  # and alice's
    ]


@pytest.mark.parametrize("plain", [False, True], ids=["production", "plain-uvicorn"])
def test_fastapi_under_its_production_command_ignores_trailers(
    emulators: LocalEmulators, tmp_path: Path, plain: bool
) -> None:
    env = {**emulators.env(), "LOG_LEVEL": "WARNING"}
    argv = compose_command("fastapi")
    argv = without_http_option(argv) if plain else argv
    with run_server(
        "fastapi", argv, env=env, log_path=tmp_path / "fastapi.log", ready_path="/health", cwd=ROOT
    ) as fastapi:
        seen = spoofing(fastapi.url, alice_session(fastapi.url), SPOOF)
    assert seen == [
        (200, "-", "minted"),
        (404, "-", "minted"),
        (200, "-", "spoofed"),
        (200, "-", "spoofed"),
    ]


def test_flask_under_its_production_command_ignores_trailers(
    emulators: LocalEmulators, tmp_path: Path
) -> None:
    # gunicorn parses a trailer section into `req.trailers`, never into the WSGI environ
    # (gunicorn/http/body.py, ChunkedReader.parse_trailers): nothing of ours to fix, this
    # keeps it so. Flask serves no session path, and reads the user from the body.
    env = {**emulators.env(), "LOG_LEVEL": "WARNING"}
    argv = compose_command("flask")
    with run_server(
        "flask", argv, env=env, log_path=tmp_path / "flask.log", ready_path="/health", cwd=ROOT
    ) as flask:
        answers = [
            send(flask.url, chunked("POST", "/api/v1/chat", chat("hello"), trailers=SPOOF)),
            send(flask.url, chunked("POST", "/api/v1/chat", chat("hello"), headers=SPOOF)),
        ]
    assert [(a.status, a.headers["X-Request-ID"] == SPOOFED_ID) for a in answers] == [
        (200, False),
        (200, True),
    ]


def test_make_run_ignores_trailers(tmp_path: Path) -> None:
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.local.devstack",
            f"--port={port}",
            "--log-file",
            str(tmp_path / "gateway.log"),
        ],
        cwd=ROOT,
        env={**env, "GATEWAY_FASTAPI_PERCENT": "0", "GATEWAY_OVERRIDE_HEADER": override_open()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = "".join(_until_ready(process.stdout))
        assert banner.endswith("ready\n"), banner
        url = f"http://127.0.0.1:{port}"
        seen = spoofing(url, alice_session(url), SPOOF_ALL)
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, to the process this test started only
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert seen == [
        (200, "flask", "minted"),
        (404, "fastapi", "minted"),
        (200, "fastapi", "spoofed"),
        (200, "fastapi", "spoofed"),
    ]


def _until_ready(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        yield line
        if line.strip() == "ready":
            return
