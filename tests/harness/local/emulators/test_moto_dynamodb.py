"""The emulator's DynamoDB app answers exactly as moto's own server app does.

Each request goes to both apps (they share moto's process-global backend); only the request
id differs. Reads run against an item holding every attribute type, nested; writes that a
condition rejects leave the state as it was, so they can be sent twice too.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from harness.local.emulators.http11 import Request
from harness.local.emulators.moto_dynamodb import build_app
from harness.local.emulators.wsgi_server import build_environ

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Response = tuple[str, list[tuple[str, str]], bytes]

_AUTH = (
    "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, "
    "SignedHeaders=host;x-amz-target, Signature=0"
)
_BLOB = base64.b64encode(b"\x00\xff binary \xfe").decode()

ITEM: dict[str, Any] = {
    "session_id": {"S": "s1"},
    "text": {"S": "héllo \u2603"},
    "empty": {"S": ""},
    "count": {"N": "12.50"},
    "negative": {"N": "-3"},
    "blob": {"B": _BLOB},
    "names": {"SS": ["a", "b"]},
    "numbers": {"NS": ["1", "2.5"]},
    "blobs": {"BS": [_BLOB, base64.b64encode(b"x").decode()]},
    "flag": {"BOOL": False},
    "nothing": {"NULL": True},
    "history": {
        "L": [
            {"M": {"role": {"S": "user"}, "text": {"S": "hi"}, "n": {"N": "1"}}},
            {"L": [{"S": "nested"}, {"BOOL": True}, {"M": {}}, {"L": []}]},
            {"B": _BLOB},
        ]
    },
    "map": {"M": {"inner": {"M": {"deep": {"NS": ["7"]}}}, "set": {"SS": ["z"]}}},
}


def _call(app: App, operation: str, body: dict[str, Any]) -> Response:
    data = json.dumps(body).encode()
    headers = {
        "host": "127.0.0.1:1",
        "content-type": "application/x-amz-json-1.0",
        "content-length": str(len(data)),
        "x-amz-target": f"DynamoDB_20120810.{operation}",
        "authorization": _AUTH,
    }
    environ = build_environ(
        Request("POST", "/", "HTTP/1.1", headers, data), ("127.0.0.1", 1), ("127.0.0.1", 2)
    )
    started: list[Any] = []

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> None:
        started.extend([status, response_headers])

    payload = b"".join(app(environ, start_response))
    status, response_headers = started
    kept = sorted((k, v) for k, v in response_headers if k.lower() != "x-amzn-requestid")
    return status, kept, payload


@pytest.fixture(scope="module")
def table() -> Iterator[str]:
    name = f"parity_{uuid.uuid4().hex[:8]}"
    app = build_app()
    _call(
        app,
        "CreateTable",
        {
            "TableName": name,
            "AttributeDefinitions": [{"AttributeName": "session_id", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "session_id", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    assert _call(app, "PutItem", {"TableName": name, "Item": ITEM})[0] == "200 OK"
    yield name
    _call(app, "DeleteTable", {"TableName": name})


def _requests(table: str) -> list[tuple[str, dict[str, Any]]]:
    key = {"session_id": {"S": "s1"}}
    return [
        ("GetItem", {"TableName": table, "Key": key}),
        ("GetItem", {"TableName": table, "Key": key, "ConsistentRead": True}),
        ("GetItem", {"TableName": table, "Key": {"session_id": {"S": "absent"}}}),
        (
            "GetItem",
            {
                "TableName": table,
                "Key": key,
                "ProjectionExpression": "#h[0], #m.inner, blob",
                "ExpressionAttributeNames": {"#h": "history", "#m": "map"},
            },
        ),
        ("GetItem", {"TableName": "no_such_table", "Key": key}),
        ("GetItem", {"TableName": table, "Key": {"session_id": {"N": "1"}}}),
        ("Scan", {"TableName": table}),
        (
            "Query",
            {
                "TableName": table,
                "KeyConditionExpression": "session_id = :s",
                "ExpressionAttributeValues": {":s": {"S": "s1"}},
            },
        ),
        (
            "BatchGetItem",
            {"RequestItems": {table: {"Keys": [key, {"session_id": {"S": "absent"}}]}}},
        ),
        # Rejected by their conditions: nothing changes, the error (with the item) is the reply.
        (
            "UpdateItem",
            {
                "TableName": table,
                "Key": key,
                "UpdateExpression": "ADD #c :one",
                "ConditionExpression": "attribute_not_exists(session_id)",
                "ExpressionAttributeNames": {"#c": "count"},
                "ExpressionAttributeValues": {":one": {"N": "1"}},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            },
        ),
        (
            "PutItem",
            {
                "TableName": table,
                "Item": ITEM,
                "ConditionExpression": "attribute_not_exists(session_id)",
            },
        ),
        ("UpdateItem", {"TableName": table, "Key": key, "UpdateExpression": "SET"}),
        ("DescribeTable", {"TableName": table}),
        ("DescribeTimeToLive", {"TableName": table}),
    ]


@pytest.mark.parametrize("index", range(len(_requests("t"))))
def test_replies_equal_motos_own(table: str, index: int) -> None:
    operation, body = _requests(table)[index]
    stock = _call(DomainDispatcherApplication(create_backend_app), operation, body)
    ours = _call(build_app(), operation, body)
    assert ours == stock


def test_item_round_trips_through_the_fast_writer(table: str) -> None:
    status, _, payload = _call(
        build_app(), "GetItem", {"TableName": table, "Key": {"session_id": {"S": "s1"}}}
    )
    assert (status, json.loads(payload)) == ("200 OK", {"Item": ITEM})


def test_non_dynamodb_requests_reach_motos_dispatcher() -> None:
    environ = build_environ(
        Request("GET", "/moto-api/data.json", "HTTP/1.1", {"host": "h"}, b""), ("h", 1), ("c", 2)
    )
    started: list[str] = []
    payload = b"".join(build_app()(environ, lambda status, headers: started.append(status)))
    assert started == ["200 OK"]
    assert "dynamodb" in json.loads(payload)
