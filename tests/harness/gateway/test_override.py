"""Who may pin a request to a stack with `X-Dualstack-Backend`: nobody by default, every
client (`open`, for trying things), or a client with the override token (`token`).

Pure tables for the policy and the settings; the gateway itself through Starlette's
TestClient over recording stacks; one served gateway and one `uvicorn gateway:app`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from harness.gateway import policy as policy_module
from harness.gateway.policy import (
    Backend,
    Decision,
    Facts,
    InvalidOverride,
    OverrideMode,
    Policy,
    Rollout,
    choose,
)
from harness.gateway.settings import GatewaySettings
from shared.schema_errors import one_line

from .conftest import StartGateway, gateway_settings
from .test_proxy import MutableRollout, decisions, recording_gateway

BOTH: frozenset[Backend] = frozenset({"flask", "fastapi"})
PATH = "/api/v1/chat"
TOKEN = "0v3rride-T0ken_for.tests~"
INVALID = 'X-Dualstack-Backend must be "flask" or "fastapi"'
STICKY = Decision("flask", "sticky", 5746)  # session-1's bucket under "dualstack", at 0 %
ROOT = Path(__file__).resolve().parents[3]


def no_draw() -> float:
    raise AssertionError("draw() must not be called when something else decides")


def decide(
    mode: OverrideMode,
    override: str | None,
    token: bytes | None = None,
    owners: frozenset[Backend] = BOTH,
) -> Decision | str:
    """The decision at 0 % for session-1, or the InvalidOverride message."""
    pol = Policy(Rollout(0), "dualstack", mode, TOKEN.encode() if mode == "token" else None)
    facts = Facts(PATH, owners, override, "session-1", token)
    try:
        return choose(pol, facts, no_draw)
    except InvalidOverride as error:
        return str(error)


# --- the policy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "override", "token", "expected"),
    [
        # off: never counts, whatever is sent (not an error either).
        ("off", "fastapi", None, STICKY),
        ("off", "fastapi", TOKEN.encode(), STICKY),
        ("off", "django", None, STICKY),
        # open: every client; exactly flask or fastapi, the spaces HTTP allows around it aside.
        ("open", "fastapi", None, Decision("fastapi", "override")),
        ("open", "flask", None, Decision("flask", "override")),
        ("open", " fastapi\t", None, Decision("fastapi", "override")),
        ("open", "FastAPI", None, INVALID),
        ("open", "FLASK", None, INVALID),
        ("open", "django", None, INVALID),
        ("open", "", None, INVALID),
        ("open", "fast api", None, INVALID),
        ("open", "flask, fastapi", None, INVALID),
        ("open", "fastapi\x00", None, INVALID),
        ("open", None, None, STICKY),
        # token: only with the very token; without it the header is ignored, bad value or not.
        ("token", "fastapi", TOKEN.encode(), Decision("fastapi", "override")),
        ("token", "flask", TOKEN.encode(), Decision("flask", "override")),
        ("token", "Fastapi", TOKEN.encode(), INVALID),
        ("token", "fastapi", None, STICKY),
        ("token", "fastapi", b"", STICKY),
        ("token", "fastapi", TOKEN[:-1].encode(), STICKY),
        ("token", "fastapi", (TOKEN + "x").encode(), STICKY),
        ("token", "fastapi", TOKEN.lower().encode(), STICKY),
        ("token", "fastapi", b" " + TOKEN.encode(), STICKY),
        ("token", "django", None, STICKY),
        ("token", "django", b"wrong", STICKY),
    ],
)
def test_where_the_override_counts(
    mode: OverrideMode, override: str | None, token: bytes | None, expected: Decision | str
) -> None:
    assert decide(mode, override, token) == expected


@pytest.mark.parametrize("mode", ["open", "token"])
def test_a_path_one_stack_serves_ignores_even_a_bad_override(mode: OverrideMode) -> None:
    only_flask: frozenset[Backend] = frozenset({"flask"})
    assert decide(mode, "django", TOKEN.encode(), only_flask) == Decision("flask", "owner")


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return given == expected

    monkeypatch.setattr(policy_module.hmac, "compare_digest", spy)
    assert decide("token", "fastapi", b"guess") == STICKY
    assert decide("token", "fastapi", TOKEN.encode()) == Decision("fastapi", "override")
    assert compared == [(b"guess", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_a_token_policy_needs_a_token_and_shows_no_secret() -> None:
    with pytest.raises(ValueError, match='override "token" needs an override token'):
        Policy(Rollout(0), "salt", "token")
    shown = repr(Policy(Rollout(0), "s3cret-salt", "token", b"s3cret-token"))
    assert "s3cret" not in shown
    assert "override='token'" in shown


# --- the settings ---------------------------------------------------------------------------


def test_by_default_no_client_can_pin_a_stack() -> None:
    settings = gateway_settings()
    assert (settings.override_header, settings.override_token) == ("off", None)


def test_token_mode_takes_its_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_OVERRIDE_HEADER", "token")
    monkeypatch.setenv("GATEWAY_OVERRIDE_TOKEN", TOKEN)
    settings = GatewaySettings()
    assert settings.override_header == "token"
    assert settings.override_token is not None
    assert settings.override_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize(
    ("values", "line"),
    [
        pytest.param(
            {"override_header": "token"},
            'OVERRIDE_HEADER: Value error, "token" needs GATEWAY_OVERRIDE_TOKEN, which is not '
            "set (got 'token')",
            id="token-without-a-token",
        ),
        pytest.param(
            {"override_header": "token", "override_token": ""},
            'OVERRIDE_HEADER: Value error, "token" needs GATEWAY_OVERRIDE_TOKEN, which is not '
            "set (got 'token')",
            id="token-with-an-empty-token",
        ),
        pytest.param(
            {"override_header": "token", "override_token": TOKEN + " x"},
            "OVERRIDE_HEADER: Value error, GATEWAY_OVERRIDE_TOKEN must be visible ASCII "
            "characters, without spaces (got 'token')",
            id="token-with-a-space",
        ),
        pytest.param(
            {"override_header": "token", "override_token": TOKEN + "é"},
            "OVERRIDE_HEADER: Value error, GATEWAY_OVERRIDE_TOKEN must be visible ASCII "
            "characters, without spaces (got 'token')",
            id="token-not-ascii",
        ),
        pytest.param(
            {"override_header": "open", "override_token": TOKEN},
            'OVERRIDE_HEADER: Value error, "open" lets every client pin a stack, so the '
            'GATEWAY_OVERRIDE_TOKEN set would guard nothing: use "token", or unset the token '
            "(got 'open')",
            id="open-with-a-token",
        ),
        pytest.param(
            {"override_header": "true"},
            "OVERRIDE_HEADER: Input should be 'off', 'open' or 'token' (got 'true')",
            id="the-old-boolean",
        ),
    ],
)
def test_a_mode_and_token_that_do_not_fit_are_refused_without_showing_the_token(
    values: dict[str, Any], line: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        gateway_settings(**values)
    assert one_line(refused.value) == line
    assert TOKEN not in str(refused.value)


def test_a_token_with_the_override_off_is_allowed() -> None:
    # Switching the override off must not need the secret removed from the deployment.
    settings = gateway_settings(override_header="off", override_token=TOKEN)
    assert settings.override_header == "off"


def test_uvicorn_refuses_token_mode_without_a_token_in_one_line() -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("GATEWAY_")}
    env["GATEWAY_OVERRIDE_HEADER"] = "token"
    finished = subprocess.run(
        [sys.executable, "-m", "uvicorn", "gateway:app", "--host=127.0.0.1", "--port=0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode != 0
    assert finished.stderr.splitlines() == [
        'gateway: GATEWAY_OVERRIDE_HEADER: Value error, "token" needs GATEWAY_OVERRIDE_TOKEN, '
        "which is not set (got 'token')"
    ]


# --- the gateway ----------------------------------------------------------------------------

FASTAPI = {"X-Dualstack-Backend": "fastapi"}
WITH_TOKEN = {**FASTAPI, "X-Dualstack-Override-Token": TOKEN}


def test_by_default_the_override_header_is_ignored() -> None:
    gateway, seen = recording_gateway(MutableRollout(0))
    with TestClient(gateway) as client:
        answers = [client.get("/x/1", headers=h) for h in (FASTAPI, {"X-Dualstack-Backend": "?"})]
    assert [(a.status_code, a.headers["x-dualstack-backend"]) for a in answers] == [
        (200, "flask"),
        (200, "flask"),
    ]
    assert [name for name, _, _ in seen] == ["flask", "flask"]
    assert decisions(gateway) == {("flask", "random"): 2}


@pytest.mark.parametrize(
    ("headers", "served"),
    [
        (WITH_TOKEN, "fastapi"),
        (FASTAPI, "flask"),
        ({**FASTAPI, "X-Dualstack-Override-Token": "wrong"}, "flask"),
        ({"X-Dualstack-Backend": "django", "X-Dualstack-Override-Token": "wrong"}, "flask"),
        ({"X-Dualstack-Override-Token": TOKEN}, "flask"),
    ],
)
def test_in_token_mode_only_the_token_pins_a_stack(headers: dict[str, str], served: str) -> None:
    gateway, seen = recording_gateway(
        MutableRollout(0), override_header="token", override_token=TOKEN
    )
    with TestClient(gateway) as client:
        answer = client.get("/x/1", headers=headers)
    assert (answer.status_code, answer.headers["x-dualstack-backend"]) == (200, served)
    ((stack, _, _),) = seen
    assert stack == served


def test_the_stack_never_gets_the_override_token() -> None:
    gateway, seen = recording_gateway(
        MutableRollout(50), override_header="token", override_token=TOKEN
    )
    body = {"message": "m"}  # split, no session id: the gateway mints one too
    with TestClient(gateway) as client:
        client.post("/api/v1/chat", json=body, headers=WITH_TOKEN)
        client.get("/x/1", headers=WITH_TOKEN)
    assert [(stack, b"x-dualstack-override-token" in headers) for stack, headers, _ in seen] == [
        ("fastapi", False),
        ("fastapi", False),
    ]
    (minted_body,) = [m["body"] for m in seen[0][2]]
    assert seen[0][1][b"content-length"] == str(len(minted_body)).encode()
    assert seen[1][1][b"x-dualstack-backend"] == b"fastapi"  # the rest is passed on


@pytest.mark.parametrize(
    ("settings", "headers"),
    [
        ({"override_header": "open"}, {"X-Dualstack-Backend": "FastAPI"}),
        ({"override_header": "open"}, {"X-Dualstack-Backend": ""}),
        (
            {"override_header": "token", "override_token": TOKEN},
            {"X-Dualstack-Backend": "django", "X-Dualstack-Override-Token": TOKEN},
        ),
    ],
)
def test_where_the_override_counts_a_bad_value_is_a_400_naming_the_allowed_ones(
    settings: dict[str, str], headers: dict[str, str]
) -> None:
    gateway, seen = recording_gateway(MutableRollout(50), **settings)
    with TestClient(gateway) as client:
        answer = client.post(
            "/api/v1/chat", json={"message": "m"}, headers={**headers, "X-Request-ID": "r-1"}
        )
    assert (answer.status_code, answer.json()) == (400, {"error": INVALID})
    assert answer.headers["x-request-id"] == "r-1"
    assert answer.headers["x-dualstack-backend"] == "gateway"
    assert answer.headers["content-type"] == "application/json"
    assert seen == []
    assert decisions(gateway) == {}


def test_the_override_token_sent_twice_is_refused() -> None:
    gateway, seen = recording_gateway(
        MutableRollout(0), override_header="token", override_token=TOKEN
    )
    headers = [
        ("X-Dualstack-Backend", "fastapi"),
        ("X-Dualstack-Override-Token", "wrong"),
        ("X-Dualstack-Override-Token", TOKEN),
    ]
    with TestClient(gateway) as client:
        answer = client.get("/x/1", headers=headers)
    assert (answer.status_code, answer.json()) == (
        400,
        {"error": "Duplicate X-Dualstack-Override-Token header"},
    )
    assert seen == []


def test_a_served_gateway_says_its_mode_and_never_the_token(start_gateway: StartGateway) -> None:
    options = {"override_header": "token", "override_token": TOKEN, "fastapi_percent": 0}
    with start_gateway(**options) as gw, gw.client() as client:
        pinned = client.get("/health", headers=WITH_TOKEN)
        ignored = client.get("/health", headers=FASTAPI)
        health = client.get("/_gateway/health")
        metrics = client.get("/_gateway/metrics")
        rollout = client.get("/_gateway/rollout")
    assert (pinned.headers["x-dualstack-backend"], ignored.headers["x-dualstack-backend"]) == (
        "fastapi",
        "flask",
    )
    assert health.json()["override_header"] == "token"
    for answer in (health, metrics, rollout):
        assert TOKEN not in answer.text
