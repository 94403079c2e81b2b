"""The rules shadow comparisons are judged by: the parity suite's, built in, or a JSON file.

The gateway cannot read YAML (PyYAML is a tool's library, kept out of a production install),
and the parity suite's `parity_tests/rules.yaml` is not in the production image either. So
the gateway carries `PARITY_RULES`, that file's content as data, which a test keeps equal
to it; `GATEWAY_SHADOW_RULES` names a JSON file instead (JSON is YAML too, so the parity
suite can read the same file). A YAML rules file becomes one with
`python -c 'import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)'`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.diff import Rules, RulesError, parse_rules

PARITY_RULES: dict[str, Any] = {
    "volatile": [
        {"path": "header:x-request-id", "check": "id"},
        {"path": "$.request_id", "check": "id"},
        {"path": "$.processing_time_ms", "check": "duration_ms"},
        {"path": "$.timestamp", "check": "timestamp"},
        {"path": "$.created_at", "check": "iso8601"},
        {"path": "$.updated_at", "check": "iso8601"},
        {"path": "$.history[*].at", "check": "iso8601"},
        {"path": "$.ttl", "check": "timestamp", "max_age_seconds": 90000},
        {"path": "$.checks.*.latency_ms", "check": "duration_ms"},
    ],
    "expected": [
        {
            "path": "$.version",
            "kind": "value",
            "endpoint": "GET /health",
            "reason": "each stack reports its own version (legacy 1.0.0, migrated 2.0.0)",
        },
        {
            "path": "$.environment",
            "kind": "added",
            "endpoint": "GET /health",
            "reason": "FastAPI adds the environment it runs in to /health "
            "(contract allows added fields)",
        },
        {
            "path": "$.error_code",
            "kind": "added",
            "reason": "FastAPI adds a machine-readable error code to every error "
            "(contract allows it)",
        },
        {
            "path": "$.tokens_used",
            "kind": "added",
            "endpoint": "POST /api/v1/chat",
            "reason": "FastAPI reports the agent's token usage on chat answers "
            "(contract allows it)",
        },
        {
            "path": "$.timestamp",
            "kind": "added",
            "endpoint": "POST /api/v1/chat",
            "reason": "FastAPI stamps its chat answers with the time (contract allows added "
            "fields)",
        },
        {
            "path": "$.request_id",
            "kind": "added",
            "reason": "FastAPI repeats the request id in its error answers (contract allows it)",
        },
        {
            "path": "header:content-encoding",
            "kind": "header_added",
            "tokens": ["gzip"],
            "reason": "FastAPI gzips answers of 1000 bytes or more when the client accepts gzip",
        },
        {
            "path": "header:vary",
            "tokens": ["accept-encoding"],
            "reason": "FastAPI's answers of 1000 bytes or more vary by Accept-Encoding (gzip)",
        },
    ],
}
"""`parity_tests/rules.yaml` as data (its comments say why each rule is there)."""


def load_rules(path: str | None) -> Rules:
    """The rules in JSON file `path`; the parity suite's (`PARITY_RULES`) when None.
    RulesError, one line naming the file, when it cannot be read, parsed or used."""
    if path is None:
        return parse_rules(PARITY_RULES, "the parity suite's rules")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"{path}: cannot read: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RulesError(
            f"{path}: not JSON ({exc}); the gateway reads rules as JSON only "
            "(convert a YAML rules file to JSON)"
        ) from None
    return parse_rules(data, path)
