"""The fuzz cases: requests schemathesis generates from the published OpenAPI document
(valid and invalid ones, for every operation), and the raw ones no schema describes
(encodings, bodies at the size limit, repeated and oversized headers, trailers)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jsonschema_rs
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.generation.case import Case as _SchemaCase
from schemathesis.schemas import BaseSchema

from parity_tests.fuzz.wire import Headers, Request
from shared import contract

SchemaCase = _SchemaCase[Any]
CHAT = "/api/v1/chat"
MAX_BODY_BYTES = 64 * 1024
"""The stacks' default `MAX_BODY_BYTES`, which the fuzzed servers run with."""

_BACKEND_ONLY_PATHS = ("/api/v1/chat/sessions/", "/health/detailed")
"""Paths only FastAPI serves: its direct answer is compared with the gateway's only."""

# Each operation's share of the generated cases, and of them the share of invalid ones.
_SHARES: dict[tuple[str, str], float] = {
    ("POST", CHAT): 0.7,
    ("GET", "/health"): 0.02,
    ("GET", "/health/detailed"): 0.02,
    ("GET", "/api/v1/chat/sessions/{session_id}"): 0.13,
    ("DELETE", "/api/v1/chat/sessions/{session_id}"): 0.13,
}
_NEGATIVE_SHARE = 0.4


@dataclass(frozen=True)
class Case:
    """One request to send to every target; `schema_case` when schemathesis made it (its
    answers then go through schemathesis's checks too)."""

    name: str
    request: Request
    schema_case: SchemaCase | None = None

    @property
    def both_stacks(self) -> bool:
        """Whether both stacks serve the path (else only FastAPI does)."""
        path = self.request.target.split("?", 1)[0]
        return not path.startswith(_BACKEND_ONLY_PATHS)

    @property
    def asks_for_fault(self) -> bool:
        """Whether the request asks the agent emulator for a fault (`[[emulator:…]]`), which
        may then answer 5xx by design."""
        return b"[[emulator:" in self.request.body


def load_schema(document: dict[str, Any]) -> BaseSchema:
    """The published document as schemathesis reads it."""
    return schemathesis.openapi.from_dict(document)


def generated(schema: BaseSchema, count: int, seed_value: int) -> list[Case]:
    """At least `count` cases drawn from `schema`'s operations (each its share, valid and
    invalid ones; chat makes up what an operation with few distinct requests cannot), the
    same ones for the same seed."""
    operations = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # Err raises here: a broken document
        if (operation.method.upper(), operation.path) in _SHARES:
            operations[(operation.method.upper(), operation.path)] = operation
    cases: list[Case] = []
    for key, share in _SHARES.items():
        cases += _cases_of(schema, operations[key], max(1, round(count * share)), seed_value)
    chat = operations[("POST", CHAT)]
    for round_ in range(1, 10):
        if len(cases) >= count:
            break
        cases += _cases_of(schema, chat, count - len(cases), seed_value + 7919 * round_, round_)
    return cases


def _cases_of(
    schema: BaseSchema, operation: Any, wanted: int, seed_value: int, round_: int = 0
) -> list[Case]:
    valid = _body_validator(schema.raw_schema, operation.definition.raw)
    negative = round(wanted * _NEGATIVE_SHARE)
    cases: list[Case] = []
    for mode, n in (
        (GenerationMode.POSITIVE, wanted - negative),
        (GenerationMode.NEGATIVE, negative),
    ):
        if n <= 0:
            continue
        drawn = _draw(operation.as_strategy(generation_mode=mode), n, seed_value)
        if mode is GenerationMode.POSITIVE:
            # schemathesis draws `\p{C}` as ASCII controls only, and a few of its "valid"
            # messages are invisible text the document itself refuses: not valid cases.
            drawn = [case for case in drawn if valid(case.body)]
        label = f"{operation.method.upper()} {operation.path} {mode.value}"
        for i, case in enumerate(drawn, start=1):
            name = f"{label} #{round_}.{i}" if round_ else f"{label} #{i}"
            cases.append(Case(name, _as_request(case), case))
    return cases


def _body_validator(document: dict[str, Any], operation: dict[str, Any]) -> Callable[[Any], bool]:
    """Whether a body is valid as the document says (jsonschema-rs: ECMA-262 regexes)."""
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return lambda body: True
    root = {**content["application/json"]["schema"], "components": document["components"]}
    validator = jsonschema_rs.validator_for(root)
    return lambda body: body is NOT_SET or validator.is_valid(body)


def _draw(strategy: Any, count: int, seed_value: int, rounds: int = 4) -> list[SchemaCase]:
    """`count` cases, drawn over up to `rounds` seeds from `seed_value` on: hypothesis stops
    a round early once it has tried what it deems distinct."""
    drawn: list[SchemaCase] = []
    for offset in range(rounds):
        more = _draw_once(strategy, count - len(drawn), seed_value + 104729 * offset)
        drawn += more
        if not more or len(drawn) >= count:  # nothing (more) to draw, or enough
            break
    return drawn[:count]


def _draw_once(strategy: Any, count: int, seed_value: int) -> list[SchemaCase]:
    drawn: list[SchemaCase] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(case: SchemaCase) -> None:
        drawn.append(case)

    with contextlib.suppress(Unsatisfiable):  # nothing invalid to draw (no parameter, no body)
        collect()
    return drawn[:count]


def _as_request(case: SchemaCase) -> Request:
    kwargs = case.as_transport_kwargs(base_url="http://fuzz.invalid")
    prepared = requests.Request(
        method=kwargs["method"],
        url=kwargs["url"],
        headers=kwargs.get("headers"),
        params=kwargs.get("params"),
        json=kwargs.get("json"),
        data=kwargs.get("data"),
    ).prepare()
    url = urlsplit(prepared.url or "")
    target = url.path + (f"?{url.query}" if url.query else "")
    skip = {"host", "connection", "content-length", "transfer-encoding", "accept-encoding"}
    skip.add("x-schemathesis-testcaseid")  # random per draw: the same seed, the same request
    headers = tuple((k, str(v)) for k, v in prepared.headers.items() if k.lower() not in skip)
    body = prepared.body or b""
    raw = body.encode() if isinstance(body, str) else bytes(body)  # type: ignore[arg-type]
    return Request(prepared.method or "GET", target, headers, raw)


def _json(headers: Headers = ()) -> Headers:
    return (("Content-Type", "application/json"), *headers)


def _padded(size: int, *, session: str | None) -> bytes:
    """A valid chat body of exactly `size` bytes (an ignored field pads it)."""
    body: dict[str, str] = {"message": "padded to the limit"}
    if session:
        body["session_id"] = session
    body["pad"] = ""
    bare = len(json.dumps(body).encode())
    body["pad"] = "x" * (size - bare)
    raw = json.dumps(body).encode()
    assert len(raw) == size, (len(raw), size)
    return raw


def raw_cases(fresh_id: Iterator[str]) -> list[Case]:
    """The cases no schema describes, each once; `fresh_id` names new conversations."""
    cases: list[Case] = []
    hello = {"message": "hello in another encoding"}
    for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"):
        for with_session in (False, True):
            body = {**hello, "session_id": next(fresh_id)} if with_session else hello
            raw = json.dumps(body).encode(encoding)
            name = f"raw: {encoding} body {'with' if with_session else 'without'} session_id"
            cases.append(Case(name, Request("POST", CHAT, _json(), raw)))
    # 52 bytes: what the gateway's minted `"session_id"` adds to a body without one.
    for size in (MAX_BODY_BYTES - 60, MAX_BODY_BYTES - 52, MAX_BODY_BYTES - 51, MAX_BODY_BYTES - 1):
        for with_session in (False, True):
            raw = _padded(size, session=next(fresh_id) if with_session else None)
            name = f"raw: {size}-byte body {'with' if with_session else 'without'} session_id"
            cases.append(Case(name, Request("POST", CHAT, _json(), raw)))
    for size in (MAX_BODY_BYTES, MAX_BODY_BYTES + 1):
        raw = _padded(size, session=None)
        cases.append(Case(f"raw: {size}-byte body", Request("POST", CHAT, _json(), raw)))
        chunked = Request("POST", CHAT, _json(), raw, chunked=True)
        cases.append(Case(f"raw: {size}-byte body, chunked", chunked))
    message = json.dumps({"message": "duplicate headers"}).encode()
    for name, first, second in (
        ("Content-Type", "application/json", "text/plain"),
        ("Content-Type", "text/plain", "application/json"),
        ("X-Request-ID", "fuzz-first", "fuzz-second"),
        ("X-User-ID", "fuzz-alice", "fuzz-mallory"),
        ("Accept", "application/json", "text/html"),
    ):
        headers: Headers = ((name, first), (name, second))
        if name != "Content-Type":
            headers = _json(headers)
        title = f"raw: two {name} headers ({first}, then {second})"
        cases.append(Case(title, Request("POST", CHAT, headers, message)))
    cases.append(
        Case(
            "raw: one Content-Type with a comma",
            Request("POST", CHAT, (("Content-Type", "application/json, text/plain"),), message),
        )
    )
    for size in (4 * 1024, 12 * 1024, 17 * 1024):
        header = (("X-Fuzz-Padding", "p" * size),)
        cases.append(Case(f"raw: a {size}-byte header", Request("GET", "/health", header)))
        chat = Request("POST", CHAT, _json(header), message)
        cases.append(Case(f"raw: a {size}-byte header on chat", chat))
    many = tuple((f"X-Fuzz-{i}", "x") for i in range(120))
    cases.append(Case("raw: 120 headers", Request("GET", "/health", many)))
    bulky = tuple((f"X-Fuzz-{i}", "p" * 100) for i in range(200))  # 20 KiB in total
    cases.append(Case("raw: 200 headers, 20 KiB in all", Request("GET", "/health", bulky)))
    for hosts in (("a.example", "b.example"), ("a" * 64 + ".example",), ("a..b",)):
        host = Request("GET", "/health", tuple(("Host", h) for h in hosts))
        cases.append(Case(f"raw: Host {' and '.join(h[:20] for h in hosts)}", host))
    for path in ("/api/v1//chat", "//api/v1/chat", "//health"):
        slashes = Request("POST", path, _json((("Host", "evil.example"),)), message)
        cases.append(Case(f"raw: POST {path} with a foreign Host", slashes))
    for trailer in (
        ("X-User-ID", "fuzz-trailer-user"),
        ("X-Request-ID", "fuzz-trailer-request"),
        ("Content-Type", "text/plain"),
    ):
        trailing = json.dumps({"message": "trailers", "session_id": next(fresh_id)}).encode()
        request = Request("POST", CHAT, _json(), trailing, trailers=(trailer,))
        cases.append(Case(f"raw: chunked body with a {trailer[0]} trailer", request))
    cases.append(
        Case(
            "raw: message of zero-width characters only",
            Request("POST", CHAT, _json(), json.dumps({"message": "\u200b\u200d"}).encode()),
        )
    )
    over = json.dumps({"message": "m" * (contract.MAX_MESSAGE_CHARS + 1)}).encode()
    cases.append(Case("raw: message one character too long", Request("POST", CHAT, _json(), over)))
    return cases
