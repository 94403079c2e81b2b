"""What a fuzz case's answers must satisfy, judged without I/O: no 5xx the emulator was
not asked for, the two stacks alike (status and `error` message), and the gateway alike
with the stack that served it, directly."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from parity_tests.fuzz.cases import Case
from parity_tests.fuzz.wire import Answer

TARGETS = ("flask", "fastapi", "gateway")
"""Flask under gunicorn, FastAPI under uvicorn, the gateway (both mounted) under uvicorn."""

GATEWAY_OWN = {400: "Duplicate ", 413: "Request body too large", 431: "Request headers too large"}
"""The answers the gateway gives itself (`X-Dualstack-Backend: gateway`), before any stack:
a duplicated routing header, a body over its own limit, headers over its limit."""


@dataclass(frozen=True)
class Finding:
    """One failure: the case, what kind (`5xx`, `stacks differ`, `gateway differs`,
    `no answer`, `trailer read`, `conformance: <check>`), and the details."""

    case: str
    kind: str
    detail: str


def outcome(answer: Answer) -> tuple[int, str | None]:
    """The part of an answer the stacks must agree on: the status and the `error` message
    (a body that is not the error shape is named by its content type)."""
    if answer.status < 400:
        return answer.status, None
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return answer.status, body["error"]
    return answer.status, f"<not the error shape: {answer.header('content-type')}>"


def judge(case: Case, answers: Mapping[str, Answer]) -> list[Finding]:
    """Every rule `answers` (by target) break for `case`."""
    found: list[Finding] = []
    for target, answer in answers.items():
        if answer.status == 0:
            found.append(Finding(case.name, "no answer", f"{target}: {answer.failure}"))
        elif answer.status >= 500 and not case.asks_for_fault:
            found.append(Finding(case.name, "5xx", f"{target}: {_said(answer)}"))
        trailer_ids = {v for k, v in case.request.trailers if k.lower() == "x-request-id"}
        if trailer_ids & set(answer.header_values("x-request-id")):
            found.append(Finding(case.name, "trailer read", f"{target} echoed a trailer's id"))
    flask, fastapi, gateway = (answers.get(t) for t in TARGETS)
    if (
        case.both_stacks
        and flask is not None
        and fastapi is not None
        and outcome(flask) != outcome(fastapi)
    ):
        detail = f"flask {_said(flask)} / fastapi {_said(fastapi)}"
        found.append(Finding(case.name, "stacks differ", detail))
    if gateway is not None and gateway.status:
        found.extend(_judge_gateway(case, gateway, answers))
    return found


def _judge_gateway(case: Case, gateway: Answer, answers: Mapping[str, Answer]) -> list[Finding]:
    backend = gateway.backend
    if backend == "gateway":
        status, message = outcome(gateway)
        prefix = GATEWAY_OWN.get(status)
        if prefix is not None and message is not None and message.startswith(prefix):
            return []
        return [Finding(case.name, "gateway differs", f"its own answer {_said(gateway)}")]
    direct = answers.get(backend or "")
    if direct is None:
        return [Finding(case.name, "gateway differs", f"served by {backend!r}: {_said(gateway)}")]
    if outcome(gateway) != outcome(direct):
        detail = f"gateway via {backend} {_said(gateway)} / {backend} {_said(direct)}"
        return [Finding(case.name, "gateway differs", detail)]
    return []


def _said(answer: Answer) -> str:
    status, message = outcome(answer)
    return f"{status} {message!r}" if message is not None else str(status)
