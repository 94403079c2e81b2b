"""uvicorn's fast HTTP protocol with a request's headers fixed once its header section ends.

uvicorn's httptools protocol keeps appending to the list that is `scope["headers"]` when the
parser reports the fields of a chunked request's trailer section, after the body. When the
whole request arrives in one read, that happens before the app's task first runs, so no app
can tell a trailer from a header: a trailer `X-User-ID` would read as the caller's identity.
h11 drops trailers, but is slower; this keeps httptools and drops them too, as gunicorn does
for the legacy stack (it parses them into `req.trailers`, never into the WSGI environ).

    uvicorn gateway:app --http shared.serving:SnapshotHttpToolsProtocol

(`--http` takes an import string from uvicorn 0.36; `uvicorn.Config(http=...)` takes the
class.) Nothing here imports a web framework; only the servers import this module.
"""

from __future__ import annotations

import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HTTP_PROTOCOL", "SnapshotHttpToolsProtocol", "snapshot_httptools_headers"]


class SnapshotHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that ignores header fields reported after the header section
    (a chunked body's trailers): `scope["headers"]` holds the request's headers only."""

    # Set per request: True from the end of its header section to the start of the next one.
    _headers_complete = False

    def on_message_begin(self) -> None:
        self._headers_complete = False
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        # The same list is scope["headers"] and what the protocol reads for the upgrade
        # check, so the trailers are dropped here rather than by swapping the list.
        if not self._headers_complete:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._headers_complete = True
        super().on_headers_complete()


HTTP_PROTOCOL = "shared.serving:SnapshotHttpToolsProtocol"
"""The `--http` value that selects `SnapshotHttpToolsProtocol` on uvicorn's command line."""


def snapshot_httptools_headers() -> None:
    """Give uvicorn's own `HttpToolsProtocol` the behaviour of `SnapshotHttpToolsProtocol`,
    for a server started without `--http` (a plain `uvicorn gateway:app`).

    uvicorn resolves its protocol class before it imports the app, so the app's module
    cannot choose it; but the class's methods are looked up per call, so patching them when
    the app's module is imported (before the first connection) covers every request. The
    gateway's and FastAPI's entry modules call this; it is idempotent, and the behaviour is
    the subclass's: header fields after the header section (trailers) are dropped."""
    cls: Any = HttpToolsProtocol
    if getattr(cls, "_snapshots_headers", False):
        return
    begin, header, complete = cls.on_message_begin, cls.on_header, cls.on_headers_complete

    # functools.wraps keeps uvicorn's own methods reachable (`inspect.unwrap`).
    @functools.wraps(begin)
    def on_message_begin(self: Any) -> None:
        self._headers_complete = False
        begin(self)

    @functools.wraps(header)
    def on_header(self: Any, name: bytes, value: bytes) -> None:
        if not getattr(self, "_headers_complete", False):
            header(self, name, value)

    @functools.wraps(complete)
    def on_headers_complete(self: Any) -> None:
        self._headers_complete = True
        complete(self)

    cls.on_message_begin = on_message_begin
    cls.on_header = on_header
    cls.on_headers_complete = on_headers_complete
    cls._snapshots_headers = True
