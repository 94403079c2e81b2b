"""The gateway's settings that are parsed by hand: named admin tokens."""

from __future__ import annotations

import pytest

from harness.gateway.settings import parse_admin_tokens

from .conftest import gateway_settings


@pytest.mark.parametrize(
    "text",
    [
        "alice:t-1,ci:t-2",
        "alice:t-1; ci:t-2",
        "alice:t-1 ci:t-2\n",
        '{"alice": "t-1", "ci": "t-2"}',
    ],
)
def test_named_tokens_are_read_in_any_usual_spelling(text: str) -> None:
    assert parse_admin_tokens(text) == {"alice": "t-1", "ci": "t-2"}


def test_a_token_may_hold_a_colon_and_the_single_token_is_held_by_admin() -> None:
    assert parse_admin_tokens("ops:a:b") == {"ops": "a:b"}
    settings = gateway_settings(admin_tokens="alice:t-1", admin_token="t-0")
    assert settings.named_tokens() == {"alice": "t-1", "admin": "t-0"}
    assert gateway_settings(admin_token=None).named_tokens() == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (",", "no name:token pair given"),
        ("alice", "entry 1 must be name:token"),
        ("alice:t-1,bob", "entry 2 must be name:token"),
        ("al ice:t-1", "entry 1 must be name:token"),  # "al", then "ice:t-1"
        ("alice:", "the token of 'alice' is empty"),
        ("alice:t-1,alice:t-2", "'alice' is named twice"),
        ("alice:same,bob:same", "two names share one token"),
        ('{"alice": 7}', "must map each name to its token"),
        ("{oops", "not valid JSON"),
    ],
)
def test_a_bad_list_is_refused_naming_the_entry_never_the_token(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_admin_tokens(text)
    for secret in ("t-1", "t-2", "same"):
        assert secret not in str(refused.value)
