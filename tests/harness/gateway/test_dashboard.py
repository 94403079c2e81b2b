"""The dashboard (`GET /_gateway/ui`) in a real browser: Debian's Chromium driven by
Playwright against a live gateway over the emulators, traffic flowing from a thread.

One gateway and one browser for the module: the gateway's FastAPI is the altered candidate
(`capture_altered`, its "Message is required" answers reworded), so a request can be made to
differ on purpose while the background traffic (health checks and refused chats that write
nothing) matches. Each test gets a fresh browser context: no token carried over."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from gateway import create_gateway
from harness.gateway.ui import CSP
from harness.local.emulators import LocalEmulators
from harness.local.servers import ASGIServer, environment

from .conftest import TOKEN, RunningGateway, gateway_settings

REPO = Path(__file__).parents[3]
SCREENSHOT = REPO / "reports" / "ui" / "dashboard.png"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
XSS = "<script>window.pwned=1</script>"
WAIT_MS = 10_000

# Answers the page asks for that are errors by design, which Chromium logs to the console
# as "Failed to load resource": no plan started yet; the fleet's stats unavailable (a test
# answers so for the gateway).
EXPECTED_FAILURES = {
    "/_gateway/rollout/plan": {404},
    "/_gateway/stats?minutes=5&step=1": {503},
}


@pytest.fixture(scope="module")
def gw(emulators: LocalEmulators) -> Iterator[RunningGateway]:
    # Built from its settings alone, as `start_gateway` does not (it builds the reference
    # pair): the FastAPI app by import string, `capture_altered` beside this file.
    table = f"gw_dashboard_{uuid.uuid4().hex[:8]}"
    emulators.dynamodb.create_table(table)
    settings = gateway_settings(
        fastapi_app="capture_altered:create_app()",
        fastapi_percent=50,
        shadow_percent=100,
        fleet_flush_seconds=0.25,
        state_table=table,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(Path(__file__).parent))
        with environment({**emulators.env(), "LOG_LEVEL": "ERROR"}):
            app = create_gateway(gateway_settings=settings)
            server = ASGIServer(app).start()
    try:
        yield RunningGateway(server.url, app)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def traffic(gw: RunningGateway) -> Iterator[None]:
    """Requests to both stacks until the module's tests are done; each is shadowed and the
    copies match (the altered candidate differs only on a missing message)."""
    stop = threading.Event()

    def send() -> None:
        with gw.client() as client:
            while not stop.is_set():
                client.get("/health")
                client.post("/api/v1/chat", json={"message": "hi", "session_id": "bad id!"})
                stop.wait(0.02)

    thread = threading.Thread(target=send, name="dashboard-traffic", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = os.environ.get("DUALSTACK_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@dataclass
class Watched:
    """A page and what it did: console errors, uncaught errors, every URL it requested."""

    page: Page
    origin: str
    console: list[ConsoleMessage] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    def open(self) -> None:
        # Refreshed every half second, the stats in points of a second (the page's default
        # is every 3 s, points of 5 s): growth shows sooner.
        self.page.goto(f"{self.origin}/_gateway/ui?refresh=0.5&step=1")
        self.page.wait_for_function("() => Number(document.body.dataset.refreshes || 0) >= 1")

    def assert_clean(self, also_expected: dict[str, set[int]] | None = None) -> None:
        expected = {path: set(statuses) for path, statuses in EXPECTED_FAILURES.items()}
        for path, statuses in (also_expected or {}).items():
            expected.setdefault(path, set()).update(statuses)
        unexpected = []
        for message in self.console:
            if message.type != "error":
                continue
            status = re.search(r"status of (\d+)", message.text)
            url = message.location.get("url", "")
            path = url.removeprefix(self.origin)
            if status and int(status.group(1)) in expected.get(path, set()):
                continue
            unexpected.append(f"{message.text} ({url})")
        assert unexpected == []
        assert self.errors == []
        assert self.urls, "the page requested nothing"
        assert [u for u in self.urls if not u.startswith(self.origin + "/")] == []
        assert [u for u in self.urls if TOKEN in u] == []


@pytest.fixture
def watched(browser: Browser, gw: RunningGateway) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    seen = Watched(page, gw.url.rstrip("/"))
    page.on("console", lambda message: seen.console.append(message))
    page.on("pageerror", lambda error: seen.errors.append(str(error)))
    page.on("request", lambda request: seen.urls.append(request.url))
    yield seen
    context.close()


def _all_grow(page: Page, above: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """Waits until every (selector, attribute) number on the page is above its value in
    `above`; the numbers then."""
    page.wait_for_function(
        """(above) => above.every(([selector, attribute, value]) =>
            Number(document.querySelector(selector).getAttribute(attribute) || 0) > value)""",
        arg=[[selector, attribute, value] for (selector, attribute), value in above.items()],
        timeout=WAIT_MS,
    )
    return {
        (selector, attribute): float(page.locator(selector).get_attribute(attribute) or 0)
        for selector, attribute in above
    }


def test_the_page_and_its_assets_carry_the_security_headers(gw: RunningGateway) -> None:
    with gw.client() as client:
        page = client.get("/_gateway/ui")
        script = client.get("/_gateway/ui/assets/dashboard.js")
        style = client.get("/_gateway/ui/assets/dashboard.css")
        unknown = client.get("/_gateway/ui/assets/__init__.py")
        revalidated = client.get(
            "/_gateway/ui/assets/dashboard.js", headers={"If-None-Match": script.headers["etag"]}
        )
    security = {
        "content-security-policy": CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "x-frame-options": "DENY",
    }
    for answer in (page, script, style, unknown, revalidated):
        assert {name: answer.headers.get(name) for name in security} == security
    assert (page.status_code, page.headers["cache-control"]) == (200, "no-store")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert (script.status_code, script.headers["content-type"]) == (
        200,
        "text/javascript; charset=utf-8",
    )
    assert (style.status_code, style.headers["content-type"]) == (200, "text/css; charset=utf-8")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Not found"})
    assert (revalidated.status_code, revalidated.content) == (304, b"")
    # Nothing the CSP would refuse: no inline script, style or handler; no HTML parsed.
    html = page.text
    assert re.findall(r"<script(?![^>]*\ssrc=)[^>]*>", html) == []
    assert re.findall(r"<style|\sstyle=|\son[a-z]+=|javascript:", html) == []
    unsafe = r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function"
    assert re.findall(unsafe, script.text) == []


def test_the_page_shows_traffic_as_it_flows(
    gw: RunningGateway, traffic: None, watched: Watched
) -> None:
    page = watched.page
    watched.open()
    with gw.client() as client:
        rollout = client.get("/_gateway/rollout").json()
    percent = rollout["fastapi_percent"]
    expect(page.get_by_test_id("fastapi-percent")).to_have_text(f"{percent:g} %")
    expect(page.get_by_test_id("flask-percent")).to_have_text(f"{100 - percent:g} %")
    expect(page.get_by_test_id("shadow-percent")).to_have_text("100 %")
    # Without a token: read-only, and it says so.
    expect(page.get_by_test_id("readonly-notice")).to_be_visible()
    expect(page.get_by_test_id("fastapi-set")).to_be_disabled()
    expect(page.get_by_test_id("plan-pause")).to_be_disabled()
    expect(page.get_by_test_id("plan-none")).to_have_text("No plan has been started.")

    # The counters and the charts grow while the traffic flows: the fleet's requests per
    # stack and their rate, the shadow's comparisons (this worker's) and their outcomes.
    watched_values = {
        ('[data-testid="flask-requests"]', "data-value"): 0.0,
        ('[data-testid="fastapi-requests"]', "data-value"): 0.0,
        ('[data-testid="chart-rps"]', "data-sum"): 0.0,
        ('[data-testid="shadow-total"]', "data-value"): 0.0,
        ('[data-testid="chart-shadow"]', "data-sum"): 0.0,
    }
    first = _all_grow(page, watched_values)
    _all_grow(page, first)
    expect(page.get_by_test_id("stats-unavailable")).to_be_hidden()
    expect(page.get_by_test_id("stats-window")).to_have_text("fleet · last 5 min · every 1 s")
    expect(page.get_by_test_id("flask-p99")).to_have_text(re.compile(r"^[\d.]+ ms$"))
    expect(page.get_by_test_id("fastapi-rps")).to_have_text(re.compile(r"^[\d.]+ req/s$"))
    expect(page.locator('[data-testid="chart-rps"] svg path.line.fastapi')).to_be_attached()
    expect(page.locator('[data-testid="chart-shadow"] svg rect.bar.match').first).to_be_attached()
    expect(page.get_by_test_id("shadow-routes").locator('tr[data-route="/health"]')).to_be_visible()
    watched.assert_clean()


def test_the_token_unlocks_the_controls_and_every_change_is_audited(
    gw: RunningGateway, watched: Watched
) -> None:
    page = watched.page
    watched.open()
    # A wrong token is refused, with the API's own words, and nothing is unlocked.
    page.get_by_test_id("token-input").fill("not-the-token")
    page.get_by_test_id("token-use").click()
    expect(page.get_by_test_id("token-error")).to_have_text(
        "Token refused: 401: Invalid or missing admin token"
    )
    expect(page.get_by_test_id("fastapi-set")).to_be_disabled()

    page.get_by_test_id("token-input").fill(TOKEN)
    page.get_by_test_id("token-use").click()
    expect(page.get_by_test_id("token-held")).to_be_visible()
    expect(page.get_by_test_id("readonly-notice")).to_be_hidden()
    expect(page.get_by_test_id("token-error")).to_be_hidden()
    assert page.evaluate(f"sessionStorage.getItem('dualstack.adminToken') === {TOKEN!r}")

    # The FastAPI share, moved through the page.
    page.get_by_test_id("fastapi-input").fill("37")
    page.get_by_test_id("fastapi-set").click()
    expect(page.get_by_test_id("fastapi-percent")).to_have_text("37 %")
    expect(page.get_by_test_id("rollout-error")).to_be_hidden()
    with gw.client() as client:
        assert client.get("/_gateway/rollout").json()["fastapi_percent"] == 37.0
        [newest] = client.get("/_gateway/rollout/history?limit=1", headers=AUTH).json()["changes"]
    assert (newest["actor"], newest["new"]["fastapi_percent"]) == ("admin", 37.0)
    first = page.get_by_test_id("history-list").locator("li").first
    expect(first).to_have_attribute("data-actor", "admin")
    expect(first).to_contain_text(f"FastAPI {newest['old']['fastapi_percent']:g} % → 37 %")

    # A plan from the form, paused, refused a second start (409, shown), aborted.
    page.get_by_test_id("plan-start").locator("summary").click()
    page.get_by_test_id("plan-steps-input").fill("40, 60")
    page.get_by_test_id("plan-interval").fill("600")
    page.get_by_test_id("gate-p99-ratio").fill("off")
    page.get_by_test_id("plan-submit").click()
    expect(page.get_by_test_id("plan-phase")).to_have_text("progressing")
    expect(page.get_by_test_id("plan-step")).to_have_text("1 / 2")
    expect(page.get_by_test_id("plan-countdown")).to_have_text(re.compile(r"^(9|10) min \d\d s$"))
    expect(page.get_by_test_id("fastapi-percent")).to_have_text("40 %")
    page.get_by_test_id("plan-pause").click()
    expect(page.get_by_test_id("plan-phase")).to_have_text("paused")
    expect(page.get_by_test_id("plan-resume")).to_be_enabled()
    page.get_by_test_id("plan-start").locator("summary").click()
    page.get_by_test_id("plan-submit").click()
    expect(page.get_by_test_id("plan-error")).to_have_text(
        "409: A plan is already paused: abort it before starting another"
    )
    page.get_by_test_id("plan-abort").click()
    expect(page.get_by_test_id("plan-phase")).to_have_text("aborted")
    expect(page.get_by_test_id("plan-error")).to_be_hidden()
    with gw.client() as client:
        plan = client.get("/_gateway/rollout/plan").json()
        changes = client.get("/_gateway/rollout/history?limit=3", headers=AUTH).json()["changes"]
    assert (plan["steps"], plan["interval_seconds"], plan["gates"]["max_p99_ratio"]) == (
        [40.0, 60.0],
        600.0,
        None,
    )
    assert [(c["actor"], c["event"]["action"]) for c in changes] == [
        ("admin", "aborted"),
        ("admin", "paused"),
        ("admin", "started"),
    ]

    # Forgotten: read-only again, nothing kept in the tab.
    page.get_by_test_id("token-forget").click()
    expect(page.get_by_test_id("readonly-notice")).to_be_visible()
    expect(page.get_by_test_id("fastapi-set")).to_be_disabled()
    assert page.evaluate("sessionStorage.length") == 0
    assert page.context.cookies() == []
    watched.assert_clean(
        {"/_gateway/rollout/history?limit=1": {401}, "/_gateway/rollout/plan": {409}}
    )


def test_a_running_plan_shows_its_checks_against_their_thresholds(
    gw: RunningGateway, traffic: None, watched: Watched
) -> None:
    page = watched.page
    watched.open()
    page.get_by_test_id("token-input").fill(TOKEN)
    page.get_by_test_id("token-use").click()
    page.get_by_test_id("plan-start").locator("summary").click()
    # Twenty steps a second apart: far from promoted when it is aborted.
    steps = list(range(41, 61))
    page.get_by_test_id("plan-steps-input").fill(" ".join(map(str, steps)))
    page.get_by_test_id("plan-interval").fill("1")
    page.get_by_test_id("plan-min-requests").fill("1")
    page.get_by_test_id("plan-max-failed").fill("50")
    page.get_by_test_id("gate-p99-floor").fill("5000")
    page.get_by_test_id("plan-submit").click()
    expect(page.get_by_test_id("plan-steps").locator("li")).to_have_text([f"{p} %" for p in steps])
    # The controller's checks, a row per gate: what it measured, against what.
    gates = page.get_by_test_id("plan-checks").locator("tbody tr")
    expect(gates.first).to_contain_text("error_rate", timeout=WAIT_MS)
    page.get_by_test_id("plan-abort").click()
    expect(page.get_by_test_id("plan-phase")).to_have_text("aborted")
    expect(page.get_by_test_id("plan-no-checks")).to_be_hidden()
    with gw.client() as client:
        checks = client.get("/_gateway/rollout/plan").json()["checks"]  # newest first
    expected = [
        (str(check["number"]) if i == 0 else "", check["verdict"] if i == 0 else "", gate)
        for check in checks
        for i, gate in enumerate(
            [g["name"] for g in check["gates"]]
            or [f"fewer than {check['min_requests']} requests on a stack: no verdict"]
        )
    ]
    shown = gates.evaluate_all(
        "rows => rows.map(r => [0, 1, 3].map(i => r.cells[i].textContent.replace(/^[✓✗] /, '')))"
    )
    assert [tuple(row) for row in shown] == expected
    floors = page.get_by_test_id("plan-checks").locator("tbody tr", has_text="p99_latency")
    expect(floors.first.locator("td").nth(5)).to_contain_text("p99_floor_ms 5000")
    watched.assert_clean()


def test_missing_null_and_empty_stats_are_shown_as_such(
    gw: RunningGateway, watched: Watched
) -> None:
    # The page's reads answered here: the fleet's stats as each may come (unavailable, with
    # gaps, empty), the rollout with a route prefix of its own.
    stats: dict[str, Any] = {"status": 503, "json": {"error": "Fleet counters unavailable"}}
    page = watched.page
    page.route("**/_gateway/stats?*", lambda route: route.fulfill(**stats))
    page.route(
        "**/_gateway/rollout",
        lambda route: route.fulfill(
            json={
                "fastapi_percent": 12.5,
                "routes": {"/api/v1/chat": 25, "/a b": 0},
                "version": 9,
                "shadow_percent": 0,
            }
        ),
    )
    watched.open()
    expect(page.get_by_test_id("stats-unavailable")).to_have_text(
        "stats unavailable (503: Fleet counters unavailable)"
    )
    expect(page.get_by_test_id("chart-p99").locator("svg text.empty")).to_have_text(
        "stats unavailable"
    )
    # The rest of the page works on.
    expect(page.get_by_test_id("fastapi-percent")).to_have_text("12.5 %")
    expect(page.get_by_test_id("flask-percent")).to_have_text("87.5 %")
    rows = page.get_by_test_id("routes-table").locator("tbody tr")
    expect(rows).to_have_text(["(default)12.5 %", "/a b0 %", "/api/v1/chat25 %"])

    now = int(time.time())
    stats = {
        "json": {
            "source": "fleet",
            "now": "2026-01-01T00:00:00Z",
            "step_seconds": 5,
            "times": [now - 10, now - 5, now],
            "stacks": {
                "flask": {
                    "requests": [1, None, 2],
                    "rps": [0.2, None, 0.4],
                    "p99_ms": [None, None, None],
                    "error_rate": [],
                },
            },
            "shadow": {"match": [1, 0]},
            "wsgi": {"busy": None, "threads": [8, 8, 8]},
            "totals": {"flask": {"requests": 3, "rps": 0.01, "p99_ms": None}},
        }
    }
    expect(page.get_by_test_id("flask-requests")).to_have_text("3")
    expect(page.get_by_test_id("stats-unavailable")).to_be_hidden()
    expect(page.get_by_test_id("flask-rps")).to_have_text("0.01 req/s")
    for absent in ("flask-p99", "flask-error-rate", "fastapi-requests", "fastapi-p50"):
        expect(page.get_by_test_id(absent)).to_have_text("—")
    rps = page.get_by_test_id("chart-rps")
    expect(rps).to_have_attribute("data-points", "3")
    expect(rps).to_have_attribute("data-sum", "0.6")
    expect(rps).to_have_attribute("data-last", '{"Flask":0.4,"FastAPI":null}')
    # A gap in a line is a gap: two pieces of a point each, each point a dot.
    flask = rps.locator("path.line.flask")
    expect(flask).to_have_attribute("d", re.compile(r"^M[\d.]+,[\d.]+M[\d.]+,[\d.]+$"))
    expect(rps.locator("circle.point.flask")).to_have_count(2)
    expect(page.get_by_test_id("chart-p99").locator("svg text.empty")).to_have_text("no data")
    expect(page.get_by_test_id("chart-shadow")).to_have_attribute("data-sum", "1")

    stats = {"json": {"times": [], "stacks": {}, "totals": {}}}
    expect(page.get_by_test_id("flask-requests")).to_have_text("—")
    expect(rps).to_have_attribute("data-points", "0")
    expect(rps.locator("svg text.empty")).to_have_text("no data")
    watched.assert_clean()


def test_a_differing_exchange_is_shown_side_by_side_as_text(
    gw: RunningGateway, traffic: None, watched: Watched
) -> None:
    with gw.client() as client:
        refused = client.post("/api/v1/chat", json={"message": "", "note": XSS})
        assert refused.status_code == 400, refused.text
        _wait_for_diff(client, refused.headers["x-request-id"])
    page = watched.page
    watched.open()
    page.get_by_test_id("token-input").fill(TOKEN)
    page.get_by_test_id("token-use").click()

    body = page.get_by_test_id("diff-request-body")
    expect(body).to_contain_text(f'"note": "{XSS}"')
    expect(page.get_by_test_id("diff-target")).to_have_text("POST /api/v1/chat")
    # Shown as text: not run, no element made of it.
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.evaluate("document.scripts.length") == 1
    assert page.locator("#diff-detail script").count() == 0

    # The two answers side by side; the differing path's line highlighted in each.
    breaking = page.locator('[data-testid^="answer-"] .line.sev-breaking')
    expect(breaking).to_have_count(2)
    lines = sorted(text.strip().rstrip(",") for text in breaking.all_text_contents())
    assert lines == ['"error": "Message is REQUIRED"', '"error": "Message is required"']
    assert sorted(breaking.evaluate_all("rows => rows.map(r => r.dataset.path)")) == [
        "$.error",
        "$.error",
    ]
    row = page.get_by_test_id("diff-differences").locator("tr.sev-breaking")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("$.error")
    expect(row).to_contain_text("Message is REQUIRED")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    watched.assert_clean()


def _wait_for_diff(client: httpx.Client, request_id: str) -> dict[str, Any]:
    """The differing exchange of request `request_id`, once the shadow has judged it."""
    deadline = time.monotonic() + 10
    while True:
        diffs = client.get("/_gateway/shadow/diffs", headers=AUTH).json()["diffs"]
        for sample in diffs:
            if sample["request_id"] == request_id:
                return dict(sample)
        assert time.monotonic() < deadline, (
            f"request {request_id} never judged differing: {client.get('/_gateway/shadow').json()}"
            f" {[d['request_id'] for d in diffs]}"
        )
        time.sleep(0.05)
