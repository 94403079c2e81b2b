"""The parity corpus: YAML files of cases, each a request or a conversation of steps, loaded
and validated up front so a bad file stops the run before any request is sent.

A file holds `cases:`, a list of mappings:

    cases:
      - name: chat-hello                  # unique in the corpus; [A-Za-z0-9._-]
        description: a plain first turn   # optional
        request: {method: POST, path: /api/v1/chat, json: {message: hello}}
      - name: cross-stack
        steps:                            # a conversation: steps run in order
          - request: {method: POST, path: /api/v1/chat,
                      json: {message: first, session_id: "{session}"}}
            status: 200                   # optional: the status the legacy answer must have
          - stack: flask                  # optional, see below
            request: ...
            capture: {sid: $.session_id}  # optional: name a reply value for later steps

A request has `method` (GET, or POST when it has a body), `path`, `headers` (a mapping of
strings), and at most one body: `json` (any value, sent as UTF-8 JSON, `Content-Type:
application/json` unless a header says otherwise), `text` (a string sent as UTF-8 as is) or
`base64` (raw bytes). `chunked: true` streams the body without a `Content-Length`.

Strings may hold placeholders. `{session}`, `{session2}`, `{user}`, ... (`session` or `user`
and an optional number) get a fresh id per run of a case, so repeats and re-runs never share
a conversation; `{repeat:N:TEXT}` is TEXT N times (long messages, big bodies, deep nesting).
Values named by `capture` (a JSON path of the reply) become placeholders of later steps.

A step's `stack` says where it goes. Omitted: to the stack under test, Flask in the legacy
run and FastAPI in the candidate run. `flask` or `fastapi`: to that stack in both runs, which
is how a conversation switches stacks mid-way (the legacy run stays on Flask) and how a session
is read back through an endpoint only FastAPI serves.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from harness.diff import parse_path

Stack = Literal["flask", "fastapi"]
STACKS: tuple[Stack, ...] = ("flask", "fastapi")

DEFAULT_CORPUS = Path(__file__).with_name("corpus")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_ID_PLACEHOLDER = re.compile(r"\{((?:session|user)[0-9]*)\}")
_REPEAT = re.compile(r"\{repeat:([0-9]{1,7}):([^{}]*)\}")
_CAPTURE_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")
_CASE_KEYS = frozenset({"name", "description", "request", "steps", "status", "capture", "stack"})
_STEP_KEYS = frozenset({"request", "status", "capture", "stack"})
_REQUEST_KEYS = frozenset({"method", "path", "headers", "json", "text", "base64", "chunked"})
_BODY_KEYS = ("json", "text", "base64")


class CorpusError(ValueError):
    """A corpus that cannot be used; one line naming the file, the case and the field."""


@dataclass(frozen=True)
class Request:
    """One request as written in the corpus, placeholders not yet filled in."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: Any = None
    body_kind: Literal["none", "json", "text", "base64"] = "none"
    chunked: bool = False

    @property
    def endpoint(self) -> str:
        """`METHOD /path` without the query, as endpoint-scoped rules see it."""
        return f"{self.method} {self.path.partition('?')[0]}"


@dataclass(frozen=True)
class Step:
    """One request of a case, where it goes, and what its legacy answer must be."""

    request: Request
    stack: Stack | None = None
    status: int | None = None
    capture: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Case:
    """A named request or conversation from corpus file `file` (its stem: chat, errors...)."""

    name: str
    file: str
    steps: tuple[Step, ...]
    description: str = ""

    @property
    def id(self) -> str:
        """`file/name`: what the CLI, the reports and pytest call the case."""
        return f"{self.file}/{self.name}"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _mapping(value: object, where: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CorpusError(f"{where}: must be a mapping, not {_show(value)}")
    for key in value:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise CorpusError(f"{where}: unknown field {_show(key)} (known: {known})")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise CorpusError(f"{where}: must be a string, not {_show(value)}")
    return value


def _request(value: object, where: str) -> Request:
    data = _mapping(value, where, _REQUEST_KEYS)
    path = _string(data.get("path"), f"{where}.path")
    if not path.startswith("/"):
        raise CorpusError(f"{where}.path: must start with '/', not {_show(path)}")
    bodies = [key for key in _BODY_KEYS if key in data]
    if len(bodies) > 1:
        raise CorpusError(f"{where}: at most one of json, text, base64 (got {', '.join(bodies)})")
    kind: Literal["none", "json", "text", "base64"] = "none"
    body: Any = None
    if bodies:
        kind = bodies[0]  # type: ignore[assignment]
        body = data[kind]
        if kind == "text":
            _string(body, f"{where}.text")
        elif kind == "base64":
            try:
                base64.b64decode(_string(body, f"{where}.base64"), validate=True)
            except binascii.Error:
                raise CorpusError(f"{where}.base64: not valid base64") from None
        else:
            try:
                json.dumps(body, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise CorpusError(f"{where}.json: not JSON-serializable: {exc}") from None
    default_method = "POST" if bodies else "GET"
    method = _string(data.get("method", default_method), f"{where}.method").upper()
    if method not in METHODS:
        raise CorpusError(f"{where}.method: unknown method {_show(method)}")
    headers_data = data.get("headers", {})
    if not isinstance(headers_data, Mapping):
        raise CorpusError(f"{where}.headers: must be a mapping, not {_show(headers_data)}")
    headers = tuple(
        (_string(name, f"{where}.headers"), _string(text, f"{where}.headers.{name}"))
        for name, text in headers_data.items()
    )
    chunked = data.get("chunked", False)
    if not isinstance(chunked, bool):
        raise CorpusError(f"{where}.chunked: must be true or false, not {_show(chunked)}")
    if chunked and not bodies:
        raise CorpusError(f"{where}.chunked: needs a body to stream")
    return Request(method, path, headers, body, kind, chunked)


def _step(data: Mapping[str, Any], where: str) -> Step:
    if "request" not in data:
        raise CorpusError(f"{where}: missing 'request'")
    stack = data.get("stack")
    if stack is not None and stack not in STACKS:
        raise CorpusError(f"{where}.stack: must be flask or fastapi, not {_show(stack)}")
    status = data.get("status")
    if status is not None and (
        not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599
    ):
        raise CorpusError(f"{where}.status: must be an HTTP status, not {_show(status)}")
    capture_data = data.get("capture", {})
    if not isinstance(capture_data, Mapping):
        raise CorpusError(f"{where}.capture: must be a mapping, not {_show(capture_data)}")
    capture = []
    for name, path in capture_data.items():
        if not isinstance(name, str) or not _CAPTURE_NAME.fullmatch(name):
            raise CorpusError(f"{where}.capture: bad name {_show(name)} (lower-case identifier)")
        try:
            parse_path(_string(path, f"{where}.capture.{name}"))
        except ValueError as exc:
            raise CorpusError(f"{where}.capture.{name}: bad path {_show(path)}: {exc}") from None
        capture.append((name, path))
    return Step(_request(data["request"], f"{where}.request"), stack, status, tuple(capture))


def _case(data: object, file: str, where: str) -> Case:
    fields = _mapping(data, where, _CASE_KEYS)
    name = _string(fields.get("name"), f"{where}.name")
    if not _NAME.fullmatch(name):
        raise CorpusError(f"{where}.name: {_show(name)} is not [A-Za-z0-9._-]{{1,100}}")
    where = f"{where} ({name})"
    description = _string(fields.get("description", ""), f"{where}.description")
    if ("request" in fields) == ("steps" in fields):
        raise CorpusError(f"{where}: needs exactly one of 'request' or 'steps'")
    if "steps" in fields:
        for key in ("status", "capture", "stack"):
            if key in fields:
                raise CorpusError(f"{where}.{key}: belongs to a step when the case has steps")
        items = fields["steps"]
        if not isinstance(items, list) or not items:
            raise CorpusError(f"{where}.steps: must be a non-empty list")
        steps = tuple(
            _step(_mapping(item, f"{where}.steps[{i}]", _STEP_KEYS), f"{where}.steps[{i}]")
            for i, item in enumerate(items)
        )
    else:
        steps = (_step(fields, where),)
    return Case(name, file, steps, description)


def parse_corpus_file(text: str, source: str, file: str) -> list[Case]:
    """The cases in YAML `text`; CorpusError naming `source` on any problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise CorpusError(f"{source}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, Mapping) or set(data) != {"cases"}:
        raise CorpusError(f"{source}: must be a mapping with one key, 'cases'")
    items = data["cases"]
    if not isinstance(items, list) or not items:
        raise CorpusError(f"{source}: cases must be a non-empty list")
    try:
        return [_case(item, file, f"cases[{i}]") for i, item in enumerate(items)]
    except CorpusError as exc:
        raise CorpusError(f"{source}: {exc}") from None


def load_corpus(directory: str | Path = DEFAULT_CORPUS) -> list[Case]:
    """Every case of every `*.yaml` file in `directory`, files in name order; CorpusError
    (one line, naming the file and the field) when the corpus cannot be used."""
    folder = Path(directory)
    if not folder.is_dir():
        raise CorpusError(f"{folder}: not a directory")
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise CorpusError(f"{folder}: no *.yaml case files")
    cases: list[Case] = []
    seen: dict[str, Path] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CorpusError(f"{path}: cannot read: {exc}") from None
        for case in parse_corpus_file(text, str(path), path.stem):
            if case.name in seen:
                raise CorpusError(f"{path}: case {case.name!r} is also in {seen[case.name]}")
            seen[case.name] = path
            cases.append(case)
    return cases


def select(cases: list[Case], patterns: list[str]) -> list[Case]:
    """The cases whose id contains any of `patterns` (all when none is given)."""
    if not patterns:
        return cases
    return [case for case in cases if any(p in case.id for p in patterns)]


def placeholders(text: str) -> set[str]:
    """The id placeholder names (`session`, `user2`, ...) used in `text`."""
    return set(_ID_PLACEHOLDER.findall(text))


def fill(text: str, values: Mapping[str, str]) -> str:
    """`text` with `{repeat:N:TEXT}` expanded and `{name}` replaced for each name in
    `values`; unknown names are left as written."""
    text = _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), text)
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def fill_value(value: Any, values: Mapping[str, str]) -> Any:
    """`fill` applied to every string (keys included) in a JSON-like value."""
    if isinstance(value, str):
        return fill(value, values)
    if isinstance(value, list):
        return [fill_value(item, values) for item in value]
    if isinstance(value, Mapping):
        return {fill(str(k), values): fill_value(v, values) for k, v in value.items()}
    return value


def id_names(case: Case) -> set[str]:
    """Every id placeholder a case's requests use: each gets a fresh value per run."""
    found: set[str] = set()
    for step in case.steps:
        request = step.request
        texts = [request.path, *(v for _, v in request.headers)]
        if request.body_kind in ("json", "text"):
            texts.append(json.dumps(request.body, ensure_ascii=False))
        for text in texts:
            found |= placeholders(text)
    return found
