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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from harness.diff import parse_path
from parity_tests.yaml_files import parse_yaml, read_yaml
from shared.schema_errors import explain_error, first_error, show

Stack = Literal["flask", "fastapi"]
STACKS: tuple[Stack, ...] = ("flask", "fastapi")
BodyKind = Literal["none", "json", "text", "base64"]

DEFAULT_CORPUS = Path(__file__).with_name("corpus")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_ID_PLACEHOLDER = re.compile(r"\{((?:session|user)[0-9]*)\}")
_REPEAT = re.compile(r"\{repeat:([0-9]{1,7}):([^{}]*)\}")
_CAPTURE_NAME = re.compile(r"[a-z][a-z0-9_]{0,30}")


class CorpusError(ValueError):
    """A corpus that cannot be used; one line naming the file, the case and the field."""


@dataclass(frozen=True)
class Request:
    """One request as written in the corpus, placeholders not yet filled in."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: Any = None
    body_kind: BodyKind = "none"
    chunked: bool = False
    literal: bool = False
    """Captured traffic (`parity_tests.capture`): sent as it is but for its id placeholders
    in the path and a JSON body's `session_id`; a `{repeat:...}` or any other brace in its
    text is the client's, never expanded."""

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


# --- the schema of a case file ------------------------------------------------------------------
# Validated by pydantic models, then turned into the plain frozen dataclasses above, which the
# runner reads. The checks pydantic cannot say by types are the validators below.


def _method(method: str) -> str:
    method = method.upper()
    if method not in METHODS:
        raise ValueError(f"unknown method {show(method)}")
    return method


def _path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"must start with '/', not {show(path)}")
    return path


def _json_body(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not JSON-serializable: {exc}") from None
    return value


def _base64_body(text: str) -> str:
    try:
        base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not valid base64") from None
    return text


def _http_status(status: int) -> int:
    if not 100 <= status <= 599:
        raise ValueError(f"must be an HTTP status, not {status}")
    return status


def _capture_name(name: str) -> str:
    if not _CAPTURE_NAME.fullmatch(name):
        raise ValueError("must be a lower-case identifier ([a-z][a-z0-9_]{0,30})")
    return name


def _capture_path(path: str) -> str:
    try:
        parse_path(path)
    except ValueError as exc:
        raise ValueError(f"bad path {show(path)}: {exc}") from None
    return path


def _case_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{show(name)} is not [A-Za-z0-9._-]{{1,100}}")
    return name


_Status = Annotated[int, AfterValidator(_http_status)]
_Capture = dict[
    Annotated[str, AfterValidator(_capture_name)], Annotated[str, AfterValidator(_capture_path)]
]


_BODY_FIELDS: tuple[tuple[BodyKind, str], ...] = (
    ("json", "json_"),
    ("text", "text"),
    ("base64", "base64"),
)
"""Each body kind and the schema field that holds it."""


class _Schema(BaseModel):
    # Strict: `status: "200"` or `chunked: yes please` in a case file is a mistake, not a value.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _RequestSchema(_Schema):
    method: Annotated[str, AfterValidator(_method)] = ""
    path: Annotated[str, AfterValidator(_path)]
    headers: dict[str, str] = {}
    # The body fields: which one was written is in model_fields_set (`json: null` is a body).
    json_: Annotated[Any, AfterValidator(_json_body)] = Field(default=None, alias="json")
    text: str = ""
    base64: Annotated[str, AfterValidator(_base64_body)] = ""
    chunked: bool = False

    def _body_kinds(self) -> list[BodyKind]:
        given = self.model_fields_set
        return [kind for kind, field in _BODY_FIELDS if field in given]

    @model_validator(mode="after")
    def _one_body(self) -> Self:
        bodies = self._body_kinds()
        if len(bodies) > 1:
            raise ValueError(f"at most one of json, text, base64 (got {', '.join(bodies)})")
        if self.chunked and not bodies:
            raise ValueError("chunked: needs a body to stream")
        return self

    def build(self) -> Request:
        bodies = self._body_kinds()
        kind: BodyKind = bodies[0] if bodies else "none"
        body = {"json": self.json_, "text": self.text, "base64": self.base64}.get(kind)
        method = self.method or ("GET" if kind == "none" else "POST")
        return Request(method, self.path, tuple(self.headers.items()), body, kind, self.chunked)


def _step(
    request: _RequestSchema, stack: Stack | None, status: int | None, capture: dict[str, str]
) -> Step:
    return Step(request.build(), stack, status, tuple(capture.items()))


class _StepSchema(_Schema):
    request: _RequestSchema
    stack: Stack | None = None
    status: _Status | None = None
    capture: _Capture = {}

    def build(self) -> Step:
        return _step(self.request, self.stack, self.status, self.capture)


class _CaseSchema(_Schema):
    name: Annotated[str, AfterValidator(_case_name)]
    description: str = ""
    # A conversation...
    steps: Annotated[list[_StepSchema], Field(min_length=1)] | None = None
    # ... or one request, its step's fields written beside the case's name.
    request: _RequestSchema | None = None
    stack: Stack | None = None
    status: _Status | None = None
    capture: _Capture = {}

    @field_validator("stack", "status", "capture")
    @classmethod
    def _not_beside_steps(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs only for fields written (defaults are not validated), after `steps`.
        if info.data.get("steps") is not None:
            raise ValueError("belongs to a step when the case has steps")
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> Self:
        if (self.request is None) == (self.steps is None):
            raise ValueError("needs exactly one of 'request' or 'steps'")
        return self

    def build(self, file: str) -> Case:
        steps: tuple[Step, ...]
        if self.request is not None:
            steps = (_step(self.request, self.stack, self.status, self.capture),)
        else:
            steps = tuple(step.build() for step in self.steps or ())
        return Case(self.name, file, steps, self.description)


class _FileSchema(_Schema):
    cases: Annotated[list[_CaseSchema], Field(min_length=1)]


_FILE_SHAPE = "must be a mapping with one key, 'cases'"


def _problem(error: ErrorDetails, data: Any) -> str:
    """A schema error as `where: problem`, `where` naming the case as `cases[2] (name)`."""
    loc = error["loc"]
    if not loc:
        return f"{_FILE_SHAPE}, not {show(data)}"
    if len(loc) == 1:  # the file's own field: unknown, missing, or not a list of cases
        where, problem = explain_error(error, _FileSchema)
        return f"{where or _FILE_SHAPE}: {problem}"
    index = loc[1]
    where, problem = explain_error(error, _FileSchema, skip=2)
    try:
        name = data["cases"][index].get("name")
    except (AttributeError, LookupError, TypeError):
        name = None
    label = f"cases[{index}]"
    if isinstance(name, str) and _NAME.fullmatch(name):
        label += f" ({name})"
    return f"{label}.{where}: {problem}" if where else f"{label}: {problem}"


def _cases(data: Any, source: str, file: str) -> list[Case]:
    try:
        schema = _FileSchema.model_validate(data)
    except ValidationError as exc:
        raise CorpusError(f"{source}: {_problem(first_error(exc), data)}") from None
    return [case.build(file) for case in schema.cases]


def parse_corpus_file(text: str, source: str, file: str) -> list[Case]:
    """The cases in YAML `text`; CorpusError naming `source` on any problem."""
    return _cases(parse_yaml(text, source, CorpusError), source, file)


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
        for case in _cases(read_yaml(path, CorpusError), str(path), path.stem):
            if case.name in seen:
                raise CorpusError(f"{path}: case {case.name!r} is also in {seen[case.name]}")
            seen[case.name] = path
            cases.append(case)
    return cases


class KeywordError(ValueError):
    """A `-k` expression that cannot be parsed; one line saying where and what was expected."""


Keywords = Callable[[str], bool]
"""A parsed `-k` expression: true of the case ids it selects."""

# pytest's word characters, so an expression that works with `pytest -k` works here; `/`
# and `-` are among them, so `chat/chat-hello` and `not-found` are single words.
_WORD = re.compile(r"[\w:+.\[\]\\/-]+")
_KEYWORD_TOKEN = re.compile(rf"[()]|{_WORD.pattern}|\S")
_OPERATORS = frozenset({"and", "or", "not"})


class _KeywordParser:
    """Recursive descent over pytest's `-k` grammar:

    expression: conjunction ('or' conjunction)*
    conjunction: negation ('and' negation)*
    negation: 'not' negation | '(' expression ')' | word
    """

    def __init__(self, expression: str) -> None:
        found = [(m.start(), m.group()) for m in _KEYWORD_TOKEN.finditer(expression)]
        self.tokens = [*found, (len(expression), "")]  # "" is the end
        self.at = 0

    def parse(self) -> Keywords:
        if len(self.tokens) == 1:
            raise KeywordError("empty expression")
        keywords = self._expression()
        if self._peek():
            self._fail("'and', 'or' or the end")
        return keywords

    def _peek(self) -> str:
        return self.tokens[self.at][1]

    def _fail(self, expected: str) -> NoReturn:
        column, token = self.tokens[self.at]
        got = repr(token) if token else "the end"
        raise KeywordError(f"expected {expected} at column {column + 1}, got {got}")

    def _expression(self) -> Keywords:
        terms = [self._conjunction()]
        while self._peek() == "or":
            self.at += 1
            terms.append(self._conjunction())
        return terms[0] if len(terms) == 1 else lambda text: any(t(text) for t in terms)

    def _conjunction(self) -> Keywords:
        terms = [self._negation()]
        while self._peek() == "and":
            self.at += 1
            terms.append(self._negation())
        return terms[0] if len(terms) == 1 else lambda text: all(t(text) for t in terms)

    def _negation(self) -> Keywords:
        ahead = self._peek()
        if ahead == "not":
            self.at += 1
            inner = self._negation()
            return lambda text: not inner(text)
        if ahead == "(":
            self.at += 1
            inner = self._expression()
            if self._peek() != ")":
                self._fail("')'")
            self.at += 1
            return inner
        if ahead not in _OPERATORS and _WORD.fullmatch(ahead):
            self.at += 1
            word = ahead.lower()
            return lambda text: word in text.lower()
        self._fail("a word, 'not' or '('")


def parse_keywords(expression: str) -> Keywords:
    """A `-k` expression as `pytest -k` reads it: words joined by `and`, `or`, `not` and
    parentheses (`not` binds tightest, then `and`, then `or`); a word is true of an id that
    contains it, ignoring case. KeywordError (one line) when it cannot be parsed."""
    try:
        return _KeywordParser(expression).parse()
    except RecursionError:  # a traceback is not a one-line usage error
        raise KeywordError("nested too deeply") from None


def select(cases: list[Case], expressions: Sequence[str]) -> list[Case]:
    """The cases whose id (`file/name`) matches any of the `-k` `expressions` (all when none
    is given); KeywordError for one that cannot be parsed."""
    if not expressions:
        return cases
    matches = [parse_keywords(expression) for expression in expressions]
    return [case for case in cases if any(match(case.id) for match in matches)]


def placeholders(text: str) -> set[str]:
    """The id placeholder names (`session`, `user2`, ...) used in `text`."""
    return set(_ID_PLACEHOLDER.findall(text))


def fill(text: str, values: Mapping[str, str]) -> str:
    """`text` with `{repeat:N:TEXT}` expanded and `{name}` replaced for each name in
    `values`; unknown names are left as written."""
    text = _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), text)
    return fill_ids(text, values)


def fill_ids(text: str, values: Mapping[str, str]) -> str:
    """`text` with only `{name}` replaced for each id name in `values` (no `{repeat:...}`)."""
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
