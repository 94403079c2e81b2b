"""The DynamoDB tables the harness expects, defined once: the emulators create them from here
and ``python -m harness.emulators --print-setup`` prints them for a real AWS account.

Every table has the session table's schema: the string hash key ``session_id``, on-demand
billing, TTL on ``ttl`` (the gateway's state table keeps its items under keys no session id
can take, and its fleet counters expire through the same attribute). The definitions are
request bodies as data (CreateTable, UpdateTimeToLive), so what is created locally, the JSON
and the AWS CLI commands printed are one thing written three ways, never three definitions.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore import xform_name

__all__ = [
    "KEY_ATTRIBUTE",
    "TTL_ATTRIBUTE",
    "TableSetup",
    "aws_cli_commands",
    "harness_tables",
    "setup_json",
]

KEY_ATTRIBUTE = "session_id"
TTL_ATTRIBUTE = "ttl"
_BILLING_MODE = "PAY_PER_REQUEST"


@dataclass(frozen=True)
class TableSetup:
    """One table: its name, what it holds (and which setting names it), and the requests
    that create it."""

    name: str
    purpose: str = ""

    def create_request(self) -> dict[str, Any]:
        """The CreateTable request (boto3's ``create_table(**request)``)."""
        return {
            "TableName": self.name,
            "AttributeDefinitions": [{"AttributeName": KEY_ATTRIBUTE, "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": KEY_ATTRIBUTE, "KeyType": "HASH"}],
            "BillingMode": _BILLING_MODE,
        }

    def ttl_request(self) -> dict[str, Any]:
        """The UpdateTimeToLive request that turns TTL on, once the table is active."""
        return {
            "TableName": self.name,
            "TimeToLiveSpecification": {"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        }


def harness_tables(
    sessions: str, *, shadow: str, gateway: Sequence[str] = ()
) -> tuple[TableSetup, ...]:
    """The sessions table, its shadow copy and the gateway's state table(s), in creation
    order, each name once."""
    named = [
        TableSetup(sessions, "the sessions both stacks read and write (DYNAMODB_TABLE)"),
        TableSetup(
            shadow,
            "the sessions of shadowed turns "
            "(DYNAMODB_SHADOW_TABLE, default <DYNAMODB_TABLE>_shadow)",
        ),
        *(
            TableSetup(
                name, "the gateway's rollout state, salt and fleet counters (GATEWAY_STATE_TABLE)"
            )
            for name in gateway
        ),
    ]
    seen: set[str] = set()
    tables = []
    for table in named:
        if table.name not in seen:
            seen.add(table.name)
            tables.append(table)
    return tuple(tables)


def setup_json(tables: Sequence[TableSetup]) -> str:
    """The tables as JSON: a list of ``{"TableName", "Purpose", "CreateTable",
    "UpdateTimeToLive"}``, each request ready for boto3 or ``aws ... --cli-input-json``."""
    return json.dumps(
        [
            {
                "TableName": table.name,
                "Purpose": table.purpose,
                "CreateTable": table.create_request(),
                "UpdateTimeToLive": table.ttl_request(),
            }
            for table in tables
        ],
        indent=2,
    )


def aws_cli_commands(tables: Sequence[TableSetup], region: str) -> str:
    """The AWS CLI commands that create `tables` in `region`: create, wait until active
    (TTL can only be set then), turn TTL on; a comment line before each table."""
    lines: list[str] = []
    for table in tables:
        where = ["--region", region]
        lines += [
            f"# {table.name}: {table.purpose}" if table.purpose else f"# {table.name}",
            _command("create-table", table.create_request(), where),
            shlex.join(
                ["aws", "dynamodb", "wait", "table-exists", "--table-name", table.name, *where]
            ),
            _command("update-time-to-live", table.ttl_request(), where),
        ]
    return "\n".join(lines)


def _command(operation: str, request: Mapping[str, Any], extra: Sequence[str]) -> str:
    # Each request field becomes its CLI option (TableName: --table-name), its value in the
    # CLI's shorthand syntax, so the commands say exactly what the requests say.
    argv = ["aws", "dynamodb", operation]
    for field, value in request.items():
        argv.append("--" + xform_name(field, "-"))
        if isinstance(value, list):
            argv += [_shorthand(element) for element in value]
        else:
            argv.append(_shorthand(value))
    return shlex.join([*argv, *extra])


def _shorthand(value: object) -> str:
    if isinstance(value, Mapping):
        return ",".join(f"{key}={_scalar(part)}" for key, part in value.items())
    return _scalar(value)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value and not set(value) & set(",={}[] "):
        return value
    # Nested structures and values that need quoting in the shorthand are not used by
    # these requests; refuse rather than print a command the CLI would misread.
    raise TypeError(f"no plain CLI shorthand for {value!r}")
