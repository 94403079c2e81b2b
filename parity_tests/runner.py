"""Replay the corpus against both stacks and diff every answer.

Each case is run twice per round: the legacy run (steps for the stack under test go to
Flask) and the candidate run (they go to FastAPI); steps pinned to a stack go there in both.
Step by step, the legacy answer is diffed against the candidate's with `harness.diff`, after
the run's fresh ids are put back as their placeholders, so `{session}` in one run compares
equal to `{session}` in the other while a stack that answers with another id still differs.
A volatile field whose legacy value holds such a placeholder is an echo of the request (the
client's own X-Request-ID), so it is compared exactly: another value there is breaking.
An answer whose `X-Dualstack-Backend` names another stack than the one asked (a gateway that
ignored the override header) is a problem of the case.

With `repeat` > 1 the rounds alternate which run goes first (ABBA); the latency samples are
the steps that went to the stack under test. A volatile rule is used (not stale) whenever its
field is in an answer with a value passing its check, whether or not the two answers differ.
With `noise_check`, a second legacy run (each request sent to Flask twice, in a conversation
of its own so neither disturbs the other) tells which paths differ between two legacy
answers: those are noise for that step.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import httpx

from harness.diff import (
    DEFAULT_HEADERS,
    VOLATILE_REASON,
    Difference,
    Response,
    Rules,
    RuleUsage,
    check_volatile,
    diff,
    flatten,
    is_unexpected,
    matches,
    noisy_paths,
)
from parity_tests.cases import (
    STACKS,
    Case,
    Request,
    Stack,
    Step,
    fill,
    fill_ids,
    fill_value,
    id_names,
)
from parity_tests.latency import Comparison, abba, gate
from parity_tests.targets import OVERRIDE_HEADER, Endpoint, Targets

Role = Literal["legacy", "candidate"]

HEADERS: tuple[str, ...] = (*DEFAULT_HEADERS, "x-request-id")
"""The headers compared: the diff engine's chosen ones and the echoed request id."""

ECHO_REASON = "the legacy answer echoes a value of the request: compared exactly"
WARM_UP_PATH = "/health"
"""Sent once per stack, untimed, before the first case: cold connections are not latency."""

CHUNK_BYTES = 8192
DEFAULT_TIMEOUT_SECONDS = 120.0
_MIN_SUBSTITUTED = 8
"""Captured values shorter than this are not put back as placeholders: a short value (a "1")
would also match unrelated text."""


@dataclass(frozen=True)
class Options:
    """How to run: rounds per case, the noise check, the latency gate, and how long to wait
    for one answer (a hung agent takes the stack's agent timeout times its attempts)."""

    repeat: int = 1
    noise_check: bool = False
    max_latency_ratio: float | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS


@dataclass(frozen=True)
class Outcome:
    """How one step went in one run: the response (placeholders put back) or why there is
    none."""

    stack: Stack
    response: Response | None
    error: str | None = None


@dataclass(frozen=True)
class StepResult:
    """One step of a case: both outcomes of the first round, and what differed in any round."""

    index: int
    endpoint: str
    legacy: Outcome
    candidate: Outcome
    differences: tuple[Difference, ...] = ()
    noise: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaseResult:
    """A case's steps, its problems (no answer, an answer not of the expected status, a
    capture that found nothing) and its latency samples per stack."""

    case: Case
    steps: tuple[StepResult, ...]
    problems: tuple[str, ...] = ()
    samples: Mapping[Stack, tuple[float, ...]] = field(default_factory=dict)

    @property
    def differences(self) -> list[tuple[int, Difference]]:
        """Every difference with its step number (1-based)."""
        return [(step.index, d) for step in self.steps for d in step.differences]

    @property
    def unexpected(self) -> list[tuple[int, Difference]]:
        """The breaking differences: what a client written against legacy could trip on."""
        return [(i, d) for i, d in self.differences if is_unexpected(d)]

    @property
    def failed(self) -> bool:
        """True when the case shows an unexpected difference or could not be judged."""
        return bool(self.problems or self.unexpected)

    @property
    def latency(self) -> Comparison:
        """Both stacks' spreads over this case's samples."""
        return Comparison.of(self.samples.get("flask", ()), self.samples.get("fastapi", ()))


@dataclass(frozen=True)
class RunReport:
    """Everything a run found: per-case results, stale rules and the latency verdict."""

    target: str
    options: Options
    results: tuple[CaseResult, ...]
    stale_rules: tuple[str, ...] | None
    """The rules no case needed; None when not judged (a subset of the corpus ran, which
    could not exercise every rule)."""
    seconds: float

    @property
    def latency(self) -> Comparison:
        """Both stacks' spreads over every sample of every case."""
        flask = [s for r in self.results for s in r.samples.get("flask", ())]
        fastapi = [s for r in self.results for s in r.samples.get("fastapi", ())]
        return Comparison.of(flask, fastapi)

    @property
    def latency_failure(self) -> str | None:
        """Why the latency gate failed, or None."""
        return gate(self.latency, self.options.max_latency_ratio)

    @property
    def failed(self) -> list[CaseResult]:
        """The cases with unexpected differences or problems."""
        return [r for r in self.results if r.failed]

    @property
    def exit_code(self) -> int:
        """0 when parity holds, 1 when a case failed or the latency gate did."""
        return 1 if self.failed or self.latency_failure else 0


class Sender:
    """Sends requests to both stacks over kept-alive connections; a context manager."""

    def __init__(
        self,
        targets: Targets,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.targets = targets
        self.timeout = timeout
        self.transport = transport
        self._clients: dict[Stack, httpx.Client] = {}

    def _client(self, stack: Stack) -> httpx.Client:
        if stack not in self._clients:
            endpoint: Endpoint = self.targets.endpoint(stack)
            self._clients[stack] = httpx.Client(
                base_url=endpoint.base_url,
                headers=dict(endpoint.headers),
                timeout=self.timeout,
                transport=self.transport,
            )
        return self._clients[stack]

    def warm_up(self) -> None:
        """One untimed `GET /health` per stack, so the first timed request of each does not
        pay for opening the connection (or a stack's first-request set-up); an error here
        is left for the cases to report."""
        for stack in STACKS:
            with contextlib.suppress(httpx.HTTPError):
                self._client(stack).get(WARM_UP_PATH)

    def send(self, stack: Stack, step: Step, values: Mapping[str, str]) -> Response:
        """Send `step`'s request, placeholders filled from `values`; httpx.HTTPError when no
        answer came."""
        request = step.request
        if request.literal:
            return self._send(stack, request, *_literal(request, values))
        headers = {name: fill(text, values) for name, text in request.headers}
        content: bytes | Iterator[bytes] | None = None
        if request.body_kind == "json":
            text = json.dumps(fill_value(request.body, values), ensure_ascii=False)
            content = text.encode("utf-8", "surrogatepass")
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        elif request.body_kind == "text":
            content = fill(str(request.body), values).encode("utf-8", "surrogatepass")
        elif request.body_kind == "base64":
            content = base64.b64decode(str(request.body))
        if request.chunked and isinstance(content, bytes):
            content = _chunks(content)
        return self._send(stack, request, fill(request.path, values), headers, content)

    def _send(
        self,
        stack: Stack,
        request: Request,
        path: str,
        headers: dict[str, str],
        content: bytes | Iterator[bytes] | None,
    ) -> Response:
        started = time.perf_counter()
        response = self._client(stack).request(
            request.method, path, headers=headers, content=content
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        return Response(
            response.status_code,
            {name: response.headers[name] for name in response.headers},
            response.content,
            elapsed_ms,
        )

    def close(self) -> None:
        """Close every connection."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunks(content: bytes) -> Iterator[bytes]:
    for start in range(0, len(content), CHUNK_BYTES):
        yield content[start : start + CHUNK_BYTES]


def fresh_ids(case: Case) -> dict[str, str]:
    """A new id for every placeholder the case uses, valid wherever an id is."""
    return {name: f"p{name[0]}-{secrets.token_hex(10)}" for name in sorted(id_names(case))}


def put_back(response: Response, values: Mapping[str, str]) -> Response:
    """`response` with each of the run's values written as its `{placeholder}` again."""
    body = response.body
    headers = dict(response.headers)
    for name, value in sorted(values.items(), key=lambda item: -len(item[1])):
        if len(value) < _MIN_SUBSTITUTED:
            continue
        body = body.replace(value.encode(), ("{" + name + "}").encode())
        headers = {k: v.replace(value, "{" + name + "}") for k, v in headers.items()}
    return Response(response.status, headers, body, response.elapsed_ms)


def _capture(step: Step, response: Response, values: dict[str, str]) -> list[str]:
    problems = []
    try:
        leaves = flatten(json.loads(response.body)) if step.capture else {}
    except ValueError:
        leaves = {}
    for name, path in step.capture:
        value = leaves.get(path)
        if isinstance(value, str):
            values[name] = value
        else:
            problems.append(f"capture {name}: no string at {path} in the response")
    return problems


@dataclass
class _Run:
    role: Role
    outcomes: list[Outcome]
    problems: list[str]
    samples: list[float]
    names: tuple[str, ...] = ()


def run_steps(case: Case, role: Role, sender: Sender) -> _Run:
    """One run of `case`: every step in order, with fresh ids; a step with no answer ends
    the run (the next steps would only say the same)."""
    values = fresh_ids(case)
    outcomes: list[Outcome] = []
    problems: list[str] = []
    samples: list[float] = []
    default: Stack = "flask" if role == "legacy" else "fastapi"
    for number, step in enumerate(case.steps, start=1):
        stack = step.stack or default
        try:
            raw = sender.send(stack, step, values)
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            outcomes.append(Outcome(stack, None, reason))
            problems.append(f"step {number}: {role} run: no answer from {stack}: {reason}")
            break
        if (wrong := _wrong_backend(stack, raw)) is not None:
            problems.append(f"step {number}: {role} run: {wrong}")
        problems += [f"step {number}: {role} run: {p}" for p in _capture(step, raw, values)]
        outcomes.append(Outcome(stack, put_back(raw, values)))
        if step.stack is None:
            samples.append(raw.elapsed_ms)
    return _Run(role, outcomes, problems, samples, tuple(values))


def _wrong_backend(stack: Stack, response: Response) -> str | None:
    # A gateway says who served each answer: an answer from the other stack would compare
    # a stack with itself.
    said = {k.lower(): v for k, v in response.headers.items()}.get(OVERRIDE_HEADER.lower())
    if said is None or said.strip().lower() == stack:
        return None
    return f"asked {stack}, answered by {said!r} ({OVERRIDE_HEADER})"


def _echoed(difference: Difference, names: tuple[str, ...]) -> Difference:
    # A volatile field whose legacy value holds one of the run's own ids (put back as its
    # placeholder) is an echo of the request, not a value minted per call: the candidate
    # must echo it too, exactly.
    legacy = difference.legacy
    if (
        difference.severity == "noise"
        and difference.reason.startswith(VOLATILE_REASON)
        and isinstance(legacy, str)
        and any("{" + name + "}" in legacy for name in names)
    ):
        return replace(difference, severity="breaking", reason=ECHO_REASON)
    return difference


def note_present(
    rules: Rules, response: Response, usage: RuleUsage, now: float | None = None
) -> None:
    """Record in `usage` each volatile rule whose field is in `response` with a value passing
    its check: such a rule is needed whenever the field is there, whether or not this pair
    of answers happened to differ (two writes in the same second share an expiry)."""
    clock = time.time() if now is None else now
    headers = {name.lower(): value for name, value in response.headers.items()}
    try:
        leaves = flatten(json.loads(response.body))
    except (ValueError, RecursionError):
        leaves = {}
    fields = {f"header:{name}": value for name, value in headers.items()} | leaves
    for path, value in fields.items():
        if any(matches(pattern, path) for pattern in rules.ignore):
            continue
        rule = next((v for v in rules.volatile if matches(v.path, path)), None)
        if (
            rule is not None
            and check_volatile(rule.check, value, clock, rule.max_age_seconds) is None
        ):
            usage.record(rule)


def _key(difference: Difference) -> tuple[str, str, str]:
    return difference.path, difference.kind, difference.severity


Pair = tuple[Outcome, Outcome, list[Difference]]


def _diff_runs(
    case: Case,
    legacy: _Run,
    candidate: _Run,
    rules: Rules,
    noise: list[set[str]],
    usage: RuleUsage | None,
) -> list[Pair]:
    # zip stops at the shorter run: a step without an answer ended it.
    pairs: list[Pair] = []
    for index, (step, mine, theirs) in enumerate(
        zip(case.steps, legacy.outcomes, candidate.outcomes, strict=False)
    ):
        found: list[Difference] = []
        if mine.response is not None and theirs.response is not None:
            found = diff(
                mine.response,
                theirs.response,
                headers=HEADERS,
                rules=rules,
                noise=sorted(noise[index]),
                endpoint=step.request.endpoint,
                usage=usage,
            )
            found = [_echoed(d, legacy.names) for d in found]
            if usage is not None:
                for response in (mine.response, theirs.response):
                    note_present(rules, response, usage)
        pairs.append((mine, theirs, found))
    return pairs


def _unexpected_statuses(case: Case, pairs: list[Pair]) -> list[str]:
    problems = []
    for number, (step, (mine, _, _)) in enumerate(zip(case.steps, pairs, strict=False), start=1):
        status = mine.response.status if mine.response is not None else None
        if step.status is not None and status is not None and status != step.status:
            problems.append(
                f"step {number}: the legacy answer is {status}, the case expects {step.status}"
            )
    return problems


def _with_new(step: StepResult, found: list[Difference]) -> StepResult:
    # A later round adds only what the first did not show (a flaky difference).
    known = {_key(d) for d in step.differences}
    extra = tuple(d for d in found if _key(d) not in known)
    return replace(step, differences=step.differences + extra) if extra else step


def run_case(
    case: Case,
    sender: Sender,
    rules: Rules,
    options: Options = Options(),
    usage: RuleUsage | None = None,
) -> CaseResult:
    """Run `case` (`options.repeat` rounds, ABBA) and diff each step's outcomes. The steps
    keep the first round's outcomes, and the differences seen in any round."""
    noise: list[set[str]] = [set() for _ in case.steps]
    if options.noise_check:
        first, second = run_steps(case, "legacy", sender), run_steps(case, "legacy", sender)
        for index, (a, b) in enumerate(zip(first.outcomes, second.outcomes, strict=False)):
            if a.response is not None and b.response is not None:
                noise[index] = noisy_paths(a.response, b.response, headers=HEADERS)
    samples: dict[Stack, list[float]] = {"flask": [], "fastapi": []}
    steps: list[StepResult] = []
    problems: list[str] = []
    for round_number, order in enumerate(abba(options.repeat)):
        runs: dict[Role, _Run] = {}
        for stack in order:
            role: Role = "legacy" if stack == "flask" else "candidate"
            runs[role] = run_steps(case, role, sender)
            samples[stack] += runs[role].samples
        legacy, candidate = runs["legacy"], runs["candidate"]
        problems += [p for p in legacy.problems + candidate.problems if p not in problems]
        pairs = _diff_runs(case, legacy, candidate, rules, noise, usage)
        if round_number == 0:
            problems += _unexpected_statuses(case, pairs)
            steps = [
                StepResult(
                    index + 1,
                    case.steps[index].request.endpoint,
                    mine,
                    theirs,
                    tuple(found),
                    tuple(sorted(noise[index])),
                )
                for index, (mine, theirs, found) in enumerate(pairs)
            ]
        else:
            steps = [
                _with_new(step, found) for step, (_, _, found) in zip(steps, pairs, strict=False)
            ] + steps[len(pairs) :]
    return CaseResult(
        case,
        tuple(steps),
        tuple(problems),
        {stack: tuple(values) for stack, values in samples.items()},
    )


Progress = Callable[[int, int, CaseResult], None]


def run(
    cases: list[Case],
    targets: Targets,
    rules: Rules,
    options: Options = Options(),
    progress: Progress | None = None,
    *,
    judge_stale: bool = True,
    transport: httpx.BaseTransport | None = None,
) -> RunReport:
    """Run every case against `targets`; `progress(done, total, result)` after each. Before
    the first case, each stack gets an untimed `GET /health` and, with `options.repeat` > 1,
    an untimed run of the first case, so cold connections do not count as latency. Stale
    rules are judged only when `judge_stale` (the whole corpus runs); `transport` is httpx's,
    for tests."""
    usage = RuleUsage()
    started = time.perf_counter()
    results: list[CaseResult] = []
    with Sender(targets, options.timeout, transport) as sender:
        sender.warm_up()
        if cases and options.repeat > 1:
            # A stack's first call to its own upstreams (agent, store) is slow too: when
            # latency is measured in earnest, one untimed run of the first case on each
            # stack, answers dropped.
            run_steps(cases[0], "legacy", sender)
            run_steps(cases[0], "candidate", sender)
        for case in cases:
            result = run_case(case, sender, rules, options, usage)
            results.append(result)
            if progress is not None:
                progress(len(results), len(cases), result)
    return RunReport(
        targets.label,
        options,
        tuple(results),
        tuple(usage.stale(rules)) if judge_stale else None,
        time.perf_counter() - started,
    )


def render(result: CaseResult) -> str:
    """A case's problems and differences (ignored ones left out) as readable lines."""
    lines = [f"{result.case.id}: {'FAILED' if result.failed else 'ok'}"]
    lines += [f"  problem: {problem}" for problem in result.problems]
    for step in result.steps:
        shown = [d for d in step.differences if d.severity != "ignored"]
        if not shown:
            continue
        lines.append(
            f"  step {step.index} {step.endpoint} "
            f"(legacy: {step.legacy.stack}, candidate: {step.candidate.stack})"
        )
        for d in shown:
            reason = f"  [{d.reason}]" if d.reason else ""
            legacy = "(absent)" if d.kind in ("added", "header_added") else _brief(d.legacy)
            absent = d.kind in ("missing", "header_missing")
            candidate = "(absent)" if absent else _brief(d.candidate)
            lines.append(
                f"    {d.severity:<9} {d.kind:<14} {d.path}: {legacy} -> {candidate}{reason}"
            )
    # A lone surrogate in an answer (JSON allows "\\ud800") must not break the printing.
    return "\n".join(lines).encode("utf-8", "backslashreplace").decode("utf-8")


def _brief(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _literal(
    request: Request, values: Mapping[str, str]
) -> tuple[str, dict[str, str], bytes | None]:
    """A captured request as it is sent (`Request.literal`): the path's id placeholders and
    a JSON body's `session_id` filled, nothing else of the client's text touched."""
    content: bytes | None = None
    if request.body_kind == "json":
        body = request.body
        if isinstance(body, dict) and isinstance(body.get("session_id"), str):
            body = {**body, "session_id": fill_ids(body["session_id"], values)}
        content = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    elif request.body_kind == "text":
        content = str(request.body).encode("utf-8", "surrogatepass")
    elif request.body_kind == "base64":
        content = base64.b64decode(str(request.body))
    return fill_ids(request.path, values), dict(request.headers), content
