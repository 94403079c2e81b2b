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

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HTTP_PROTOCOL", "SnapshotHttpToolsProtocol"]


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
