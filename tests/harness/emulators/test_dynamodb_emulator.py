"""moto's DynamoDB server on loopback, through a real boto3 client."""

from __future__ import annotations

from harness.emulators.dynamodb import DynamoDBEmulator


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
