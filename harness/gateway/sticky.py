"""The conversation key a request is routed by, found by the configured rules."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from harness.gateway.body import add_json_field, json_object
from harness.gateway.settings import StickyRule


@dataclass(frozen=True)
class Sticky:
    key: str | None
    body: bytes  # the body to forward: the original, or with a minted key added
    minted: bool = False
    unminted: bool = False
    """A rule would have minted a key but could not without changing what the app makes
    of the body (not UTF-8, or pushed past the app's size limit): the body is forwarded
    as it came, and the request routed by the rules after it."""


def _path_regex(pattern: str) -> re.Pattern[str]:
    head, _, tail = pattern.partition("{key}")
    return re.compile(re.escape(head) + r"(?P<key>[^/]+)" + re.escape(tail) + r"\Z")


def _under(prefix: str, path: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix.rstrip("/") + "/")


class StickyRules:
    """Evaluates rules in order; the first that yields a key wins."""

    def __init__(
        self, rules: Sequence[StickyRule], mint: Callable[[], str] = lambda: str(uuid.uuid4())
    ) -> None:
        self._rules = [
            (
                rule,
                _path_regex(rule.pattern) if rule.source == "path" else None,
                rule.field.lower().encode("latin-1"),
            )
            for rule in rules
        ]
        self._mint = mint

    def find(
        self, path: str, method: str, headers: Mapping[bytes, bytes], body: bytes, is_json: bool
    ) -> Sticky:
        """The key for this request, minting one into a JSON body where a rule says so.

        `headers` are the request's as ASGI gives them (lower-case names, raw bytes): only
        the value a header rule reads is decoded."""
        unminted = False
        for rule, regex, name in self._rules:
            if not _under(rule.prefix, path):
                continue
            if regex is not None:
                found = regex.match(path)
                if found:
                    return Sticky(found.group("key"), body, unminted=unminted)
            elif rule.source == "header":
                raw = headers.get(name)
                if raw:
                    return Sticky(raw.decode("latin-1"), body, unminted=unminted)
            elif rule.source == "json" and is_json and body:
                payload = json_object(body)
                if payload is None:
                    continue
                value = payload.get(rule.field)
                if isinstance(value, str) and value:
                    return Sticky(value, body)
                if rule.mint and value is None and method == "POST":
                    minted = self._mint()
                    grown = _spliced(body, rule.field, minted, rule.max_body_bytes)
                    if grown is not None:
                        return Sticky(minted, grown, minted=True)
                    unminted = True
        return Sticky(None, body, unminted=unminted)


def _spliced(body: bytes, field: str, value: str, limit: int) -> bytes | None:
    """`body` with `"field": value` added, when that changes nothing else the app makes of
    it: a UTF-8 body (the splice is UTF-8 text; JSON may come as UTF-16 or UTF-32) that
    stays within the app's `limit`. None otherwise."""
    if json.detect_encoding(body) not in ("utf-8", "utf-8-sig"):
        return None
    try:
        grown = add_json_field(body, field, value)
    except ValueError:
        return None
    return grown if len(grown) <= limit else None
