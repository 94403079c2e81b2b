"""One request on a connection of its own, sent exactly as written: repeated headers,
any body bytes, a chunked body with trailers. h11 frames it (httpx would merge, reorder or
refuse what the fuzzer means to send)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Request:
    """What to send: `body` as it goes on the wire; with `trailers` (or `chunked`) it is
    sent chunked, in one chunk, the trailers after it."""

    method: str
    target: str
    headers: Headers = ()
    body: bytes = b""
    trailers: Headers = ()
    chunked: bool = False


@dataclass(frozen=True)
class Answer:
    """What came back; `status` 0 when the connection failed or closed without one."""

    status: int
    headers: Headers = ()
    body: bytes = b""
    failure: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def header_values(self, name: str) -> list[str]:
        """Every value of header `name`, in order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    @property
    def backend(self) -> str | None:
        """Who answered, as the gateway says (`X-Dualstack-Backend`)."""
        return self.header("x-dualstack-backend")


_REPEATED_HOST = b"X-Fuzz-Repeated-Host"


def send(base_url: str, request: Request, timeout: float = 30.0) -> Answer:
    """Send `request` to `base_url` (http://host:port) and read the whole answer."""
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    client = h11.Connection(h11.CLIENT)
    names = {name.lower() for name, _ in request.headers}
    ours = [] if "host" in names else [("Host", f"{host}:{port}")]  # a case's Host as it is
    headers = [*ours, *request.headers, ("Connection", "close")]
    chunked = request.chunked or bool(request.trailers)
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    elif "content-length" not in names and (request.body or request.method in ("POST", "PUT")):
        headers.append(("Content-Length", str(len(request.body))))
    # h11 will not send a second Host: it goes out under a stand-in name, renamed in bytes.
    hosts = [i for i, (name, _) in enumerate(headers) if name.lower() == "host"]
    for i in hosts[1:]:
        headers[i] = (_REPEATED_HOST.decode(), headers[i][1])
    head = h11.Request(method=request.method, target=request.target, headers=headers)
    out = client.send(head)
    if len(hosts) > 1 and out is not None:
        out = out.replace(_REPEATED_HOST + b": ", b"Host: ")
    if request.body:
        out = (out or b"") + (client.send(h11.Data(data=request.body)) or b"")
    out = (out or b"") + (client.send(h11.EndOfMessage(headers=list(request.trailers))) or b"")
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(out)
            return _read(client, sock)
    except (OSError, h11.ProtocolError) as exc:
        return Answer(0, failure=f"{type(exc).__name__}: {exc}")


def _read(client: h11.Connection, sock: socket.socket) -> Answer:
    status, body = 0, bytearray()
    headers: Headers = ()
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            client.receive_data(data)
            if not data and client.their_state is not h11.DONE and status == 0:
                return Answer(0, failure="closed without an answer")
            continue
        if isinstance(event, h11.Response):
            status = event.status_code
            headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return Answer(status, headers, bytes(body))
