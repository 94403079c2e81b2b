"""Send every case to every target, judge the answers, and count."""

from __future__ import annotations

import datetime
import itertools
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from schemathesis.core.failures import FailureGroup

from parity_tests.fuzz.cases import Case, generated, load_schema, raw_cases
from parity_tests.fuzz.judge import TARGETS, Finding, judge
from parity_tests.fuzz.wire import Answer, Request, send


@dataclass
class Summary:
    """What a run did and found."""

    generated: int = 0
    raw: int = 0
    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return self.generated + self.raw

    @property
    def failures(self) -> list[Finding]:
        """The findings that fail the run: every one."""
        return self.findings

    def by_kind(self) -> Counter[str]:
        """How many failures of each kind."""
        return Counter(finding.kind for finding in self.failures)

    def lines(self, limit: int = 40) -> list[str]:
        """The summary as printed: counts, then the first `limit` findings."""
        sent = ", ".join(f"{target} {self.sent[target]}" for target in TARGETS)
        out = [
            f"cases: {self.cases} ({self.generated} generated from the OpenAPI document, "
            f"{self.raw} raw)",
            f"sent: {sent}",
            "answers: " + ", ".join(f"{k} x{n}" for k, n in sorted(self.statuses.items())),
            "failures: "
            + (", ".join(f"{kind} {n}" for kind, n in sorted(self.by_kind().items())) or "none"),
        ]
        out += [f"  [{f.kind}] {f.case}: {f.detail}" for f in self.failures[:limit]]
        if len(self.failures) > limit:
            out.append(f"  ... and {len(self.failures) - limit} more")
        return out


def fresh_ids(prefix: str) -> Iterable[str]:
    """New conversation ids, unique to this run."""
    run = uuid.uuid4().hex[:8]
    return (f"{prefix}-{run}-{n}" for n in itertools.count(1))


def fuzz(
    urls: Mapping[str, str],
    count: int,
    seed: int,
    *,
    progress: Callable[[str], None] | None = None,
) -> Summary:
    """About `count` cases (generated from the document FastAPI publishes, plus the raw
    ones) sent to each target of `urls`, judged; the same cases for the same seed."""
    document = httpx.get(f"{urls['fastapi']}/openapi.json", timeout=10).json()
    schema = load_schema(document)
    raw = raw_cases(iter(fresh_ids("fuzz")))
    cases = generated(schema, max(count - len(raw), 1), seed)
    summary = Summary(generated=len(cases), raw=len(raw))
    for n, case in enumerate([*cases, *raw], start=1):
        answers = {}
        for target in TARGETS:
            if target == "flask" and not case.both_stacks:
                continue
            answers[target] = send(urls[target], case.request)
            summary.sent[target] += 1
            summary.statuses[str(answers[target].status)] += 1
        summary.findings += judge(case, answers)
        summary.findings += conformance(case, answers, urls)
        if progress and n % 100 == 0:
            progress(f"{n} cases sent, {len(summary.failures)} failures so far")
    return summary


def conformance(
    case: Case, answers: Mapping[str, Answer], urls: Mapping[str, str]
) -> list[Finding]:
    """schemathesis's checks (status codes, content types, headers, schemas, valid data
    accepted and invalid data refused, ...) on each target's answer to a generated case."""
    if case.schema_case is None:
        return []
    found = []
    for target, answer in answers.items():
        if not answer.status:
            continue
        try:
            case.schema_case.validate_response(_as_httpx(urls[target], case.request, answer))
        except FailureGroup as group:
            for failure in group.exceptions:
                title = getattr(failure, "title", type(failure).__name__)
                message = str(getattr(failure, "message", "")).splitlines()
                detail = f"{target}: {answer.status}: " + " / ".join(message[:3])
                found.append(Finding(case.name, f"conformance: {title}", detail))
    return found


def _as_httpx(base_url: str, request: Request, answer: Answer) -> httpx.Response:
    sent = httpx.Request(
        request.method,
        base_url + request.target,
        headers=list(request.headers),
        content=request.body,
    )
    response = httpx.Response(
        answer.status, headers=list(answer.headers), content=answer.body, request=sent
    )
    response.elapsed = datetime.timedelta(0)  # set by httpx's client, which did not send it
    return response


def schemathesis_cli(gateway: str, examples: int, seed: int, workdir: Path) -> list[str]:
    """`schemathesis run --checks all` against the document the gateway serves, each stack
    pinned by the override header; the stacks that failed (its output is printed)."""
    program = Path(sys.executable).parent / "schemathesis"
    failed = []
    for stack in ("flask", "fastapi"):
        argv = [str(program), "run", f"{gateway}/openapi.json", "--checks", "all"]
        argv += ["-n", str(examples), "--seed", str(seed), "-H", f"X-Dualstack-Backend: {stack}"]
        print(f"schemathesis run --checks all, through the gateway to {stack}:", flush=True)
        done = subprocess.run(  # noqa: S603 - our own argv
            argv, cwd=workdir, capture_output=True, text=True, check=False
        )
        lines = done.stdout.splitlines()
        summary = lines[lines.index("Test cases:") :] if "Test cases:" in lines else lines[-20:]
        print("\n".join(lines if done.returncode else summary), flush=True)
        if done.returncode:
            failed.append(stack)
    return failed
