"""moto's DynamoDB server on loopback, through a real boto3 client."""

from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

from harness.local.emulators.dynamodb import DynamoDBEmulator


def test_table_round_trip_and_ttl(dynamodb: DynamoDBEmulator) -> None:
    assert dynamodb.url.startswith("http://127.0.0.1:")
    dynamodb.create_table("sessions_test")
    dynamodb.create_table("sessions_test")  # idempotent
    client = dynamodb.client()
    try:
        description = client.describe_table(TableName="sessions_test")["Table"]
        assert description["KeySchema"] == [{"AttributeName": "session_id", "KeyType": "HASH"}]
        assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert client.describe_time_to_live(TableName="sessions_test")["TimeToLiveDescription"] == {
            "TimeToLiveStatus": "ENABLED",
            "AttributeName": "ttl",
        }

        item = {"session_id": {"S": "s1"}, "turns": {"N": "2"}, "ttl": {"N": "1700000000"}}
        client.put_item(TableName="sessions_test", Item=item)
        got = client.get_item(TableName="sessions_test", Key={"session_id": {"S": "s1"}})
        assert got["Item"] == item
    finally:
        client.close()


def test_connections_are_kept_alive(dynamodb: DynamoDBEmulator) -> None:
    # botocore pools its connections; werkzeug's dev server closed each after one request.
    host, port = dynamodb.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    headers = {
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": "DynamoDB_20120810.ListTables",
        "Authorization": (
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, "
            "SignedHeaders=host, Signature=0"
        ),
    }
    replies, sockets = [], []
    try:
        for _ in range(3):
            connection.request("POST", "/", body=b"{}", headers=headers)
            response = connection.getresponse()
            replies.append((response.status, response.getheader("Connection")))
            assert "TableNames" in json.loads(response.read())
            sockets.append(connection.sock)
    finally:
        connection.close()
    assert replies == [(200, None)] * 3
    assert sockets[0] is not None
    assert all(sock is sockets[0] for sock in sockets)  # never reconnected


def test_concurrent_conditional_writes_stay_atomic(dynamodb: DynamoDBEmulator) -> None:
    """Each conditional update is applied whole or not at all, as on DynamoDB: 40 concurrent
    appends, each conditional on its own id's absence, all land exactly once."""
    dynamodb.create_table("sessions_atomic")
    client = dynamodb.client()
    key = {"session_id": {"S": "hot"}}

    def append(n: int) -> None:
        client.update_item(
            TableName="sessions_atomic",
            Key=key,
            UpdateExpression="SET #ids = list_append(if_not_exists(#ids, :empty), :id) ADD #t :one",
            ConditionExpression="attribute_not_exists(#ids) OR NOT contains(#ids, :n)",
            ExpressionAttributeNames={"#ids": "ids", "#t": "turns"},
            ExpressionAttributeValues={
                ":empty": {"L": []},
                ":id": {"L": [{"S": f"t{n}"}]},
                ":n": {"S": f"t{n}"},
                ":one": {"N": "1"},
            },
        )

    def claim(n: int) -> bool:
        try:
            client.put_item(
                TableName="sessions_atomic",
                Item={"session_id": {"S": "once"}, "owner": {"N": str(n)}},
                ConditionExpression="attribute_not_exists(session_id)",
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            list(pool.map(append, range(40)))
            claimed = list(pool.map(claim, range(20)))
        item = client.get_item(TableName="sessions_atomic", Key=key, ConsistentRead=True)["Item"]
    finally:
        client.close()
    assert item["turns"] == {"N": "40"}
    assert sorted(entry["S"] for entry in item["ids"]["L"]) == sorted(f"t{n}" for n in range(40))
    assert claimed.count(True) == 1
