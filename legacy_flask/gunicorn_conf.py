"""gunicorn's settings for the legacy stack, its production server:

    gunicorn --config=python:legacy_flask.gunicorn_conf 'legacy_flask:create_app()'

gunicorn refuses some requests before Flask sees them, with limits of its own and an HTML
page; FastAPI under uvicorn would answer the same requests otherwise. Here both stacks
answer alike, in the contract's shape:

- the header limit is the contract's, `MAX_HEADER_BYTES` in total, checked by the app (as by
  FastAPI and the gateway): gunicorn's per-field limit is raised to it and its count of
  fields to its most, so gunicorn refuses (431, below) only a field that is over the total
  on its own; the request line has no limit, as under uvicorn (the front proxy sets one);
- what gunicorn still refuses is answered as the contract says: a repeated `Content-Type`
  or `Host` (RFC 9110 singletons) 400 `Duplicate Content-Type header`, headers too large
  431, a request line too long 414; anything else keeps gunicorn's own answer.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from functools import partial
from http import HTTPStatus
from typing import Any

from gunicorn.http.errors import InvalidHeader, LimitRequestHeaders, LimitRequestLine

from shared import contract
from shared.logs import REQUEST_ID_HEADER
from shared.settings import Settings

limit_request_line = 0  # no limit: uvicorn sets none
limit_request_fields = 32768  # gunicorn's most: the total in bytes is the limit
limit_request_field_size = Settings().max_header_bytes + len(": \r\n")


def refusal(exc: BaseException) -> tuple[int, str] | None:
    """The contract's status and message for a request gunicorn refused with `exc`; None
    for a refusal the contract says nothing of."""
    singletons = {name.upper(): name for name in contract.SINGLETON_HEADERS}
    if isinstance(exc, InvalidHeader) and exc.req is not None and exc.hdr in singletons:
        return 400, contract.duplicate_header(singletons[exc.hdr])
    if isinstance(exc, LimitRequestHeaders):
        return 431, contract.HEADERS_TOO_LARGE
    if isinstance(exc, LimitRequestLine):
        return 414, contract.REQUEST_LINE_TOO_LONG
    return None


def answer(status: int, message: str) -> bytes:
    """The whole response for a refused request, the connection closed after it."""
    body = json.dumps(contract.error_body(message)).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"{REQUEST_ID_HEADER}: {uuid.uuid4().hex}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _handle_error(original: Any, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
    found = refusal(exc)
    if found is None:
        original(req, client, addr, exc)
        return
    with contextlib.suppress(OSError):  # the client is gone: nothing to answer
        client.sendall(answer(*found))


def post_worker_init(worker: Any) -> None:
    """gunicorn's hook, in each worker: its error answers in the contract's shape."""
    worker.handle_error = partial(_handle_error, worker.handle_error)
