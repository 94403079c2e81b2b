"""dynalite, the second local DynamoDB: its install, its process, and the glue that makes it
answer as DynamoDB does where dynalite 4.0.0 does not (list removals, transactions).

The store tests run on moto and on dynalite side by side: each asserts DynamoDB's own answer,
so a store (or a glue) that differs fails. dynalite must be installed beforehand (`make test`
does it where Node is); these tests never download it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from harness.local.emulators import STORES, LocalEmulators
from harness.local.emulators import dynalite as dynalite_module
from harness.local.emulators.dynalite import DynaliteServer, choose_store, install, installed
from harness.local.emulators.dynamodb import DynamoDB, DynamoDBEmulator

ROOT = Path(__file__).resolve().parents[4]

NOT_INSTALLED = "dynalite is not installed: `python -m harness.local.emulators.dynalite install`"
needs_dynalite = pytest.mark.skipif(installed() is None, reason=NOT_INSTALLED)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[DynamoDB]:
    """moto's DynamoDB, then dynalite's, each fresh on loopback with the session table."""
    if request.param == "dynalite" and installed() is None:
        pytest.skip(
            "dynalite is not installed: `python -m harness.local.emulators.dynalite install`"
        )
    running: DynamoDB = DynaliteServer() if request.param == "dynalite" else DynamoDBEmulator()
    with running:
        running.create_table("sessions")
        yield running


def _key(name: str) -> dict[str, Any]:
    return {"session_id": {"S": name}}


def _list(client: Any, name: str) -> list[str]:
    item = client.get_item(TableName="sessions", Key=_key(name), ConsistentRead=True)["Item"]
    return [value["S"] for value in item["h"]["L"]]


@pytest.mark.parametrize(
    ("expression", "left"),
    [
        # DynamoDB: the indexes name elements of the list before the update, in any order.
        ("REMOVE #h[0], #h[1], #h[2]", ["3", "4", "5", "6", "7"]),
        ("REMOVE #h[2], #h[0]", ["1", "3", "4", "5", "6", "7"]),
        ("REMOVE #h[1], #h[6], #h[3]", ["0", "2", "4", "5", "7"]),
        ("REMOVE #h[0], #g[1], #h[1]", ["2", "3", "4", "5", "6", "7"]),
    ],
)
def test_list_removals_name_the_elements_of_the_list_before_the_update(
    store: DynamoDB, expression: str, left: list[str]
) -> None:
    client = store.client()
    try:
        eight = {"L": [{"S": str(i)} for i in range(8)]}
        client.put_item(TableName="sessions", Item={**_key("x"), "h": eight, "g": eight})
        client.update_item(
            TableName="sessions",
            Key=_key("x"),
            UpdateExpression=expression,
            ExpressionAttributeNames={"#h": "h", "#g": "g"} if "#g" in expression else {"#h": "h"},
        )
        assert _list(client, "x") == left
    finally:
        client.close()


def test_a_transaction_applies_all_its_writes_or_none(store: DynamoDB) -> None:
    client = store.client()
    try:
        client.put_item(TableName="sessions", Item={**_key("a"), "v": {"N": "1"}})
        client.put_item(TableName="sessions", Item={**_key("c"), "v": {"N": "1"}})
        with pytest.raises(client.exceptions.TransactionCanceledException) as refused:
            client.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": "sessions", "Item": {**_key("b"), "v": {"N": "1"}}}},
                    {"Delete": {"TableName": "sessions", "Key": _key("a")}},
                    {
                        "ConditionCheck": {
                            "TableName": "sessions",
                            "Key": _key("c"),
                            "ConditionExpression": "v = :v",
                            "ExpressionAttributeValues": {":v": {"N": "2"}},
                        }
                    },
                ]
            )
        assert refused.value.response["CancellationReasons"] == [
            {"Code": "None"},
            {"Code": "None"},
            {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"},
        ]
        assert "Item" not in client.get_item(TableName="sessions", Key=_key("b"))
        assert client.get_item(TableName="sessions", Key=_key("a"))["Item"]["v"] == {"N": "1"}

        client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": "sessions", "Item": {**_key("b"), "v": {"N": "2"}}}},
                {"Delete": {"TableName": "sessions", "Key": _key("a")}},
                {
                    "ConditionCheck": {
                        "TableName": "sessions",
                        "Key": _key("d"),
                        "ConditionExpression": "attribute_not_exists(session_id)",
                    }
                },
            ]
        )
        assert client.get_item(TableName="sessions", Key=_key("b"))["Item"]["v"] == {"N": "2"}
        assert "Item" not in client.get_item(TableName="sessions", Key=_key("a"))
        with pytest.raises(client.exceptions.ClientError, match="multiple operations on one item"):
            client.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": "sessions", "Item": _key("b")}},
                    {"Delete": {"TableName": "sessions", "Key": _key("b")}},
                ]
            )
    finally:
        client.close()


def test_concurrent_transactions_on_one_item_let_exactly_one_win(store: DynamoDB) -> None:
    """Twenty transactions each claim one item on condition of its absence: one lands."""
    client = store.client()

    def claim(n: int) -> bool:
        try:
            client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": "sessions",
                            "Item": {**_key("once"), "owner": {"N": str(n)}},
                            "ConditionExpression": "attribute_not_exists(session_id)",
                        }
                    },
                    {"Put": {"TableName": "sessions", "Item": {**_key(f"log-{n}")}}},
                ]
            )
        except client.exceptions.TransactionCanceledException:
            return False
        return True

    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            claimed = list(pool.map(claim, range(20)))
        winner = client.get_item(TableName="sessions", Key=_key("once"))["Item"]["owner"]["N"]
        logs = [
            n
            for n in range(20)
            if "Item" in client.get_item(TableName="sessions", Key=_key(f"log-{n}"))
        ]
    finally:
        client.close()
    assert claimed.count(True) == 1
    assert logs == [int(winner)] == [claimed.index(True)]


@needs_dynalite
def test_dynalite_serves_on_loopback_without_ttl_and_its_stop_ends_its_process() -> None:
    server = DynaliteServer()
    url = server.start()
    try:
        assert url.startswith("http://127.0.0.1:")
        assert server.process is not None
        pid = server.process.pid
        server.create_table("sessions_dynalite")
        server.create_table("sessions_dynalite")  # idempotent
        assert server.ttl_enabled is False  # dynalite has no UpdateTimeToLive
        client = server.client()
        try:
            table = client.describe_table(TableName="sessions_dynalite")["Table"]
            assert table["KeySchema"] == [{"AttributeName": "session_id", "KeyType": "HASH"}]
            assert table["TableStatus"] == "ACTIVE"
        finally:
            client.close()
    finally:
        server.stop()
    assert server.process is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped: the process (and its group) is gone


def test_dynalite_refuses_to_start_when_not_installed(tmp_path: Path) -> None:
    server = DynaliteServer(package=None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(dynalite_module.CACHE_ENV, str(tmp_path))
        with pytest.raises(RuntimeError, match=r"dynalite 4\.0\.0 is not installed in .*: run"):
            server.start()
    assert list(tmp_path.iterdir()) == []  # nothing downloaded, nothing written


def test_without_node_auto_falls_back_to_moto_and_install_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv(dynalite_module.CACHE_ENV, str(tmp_path / "cache"))
    store, why = choose_store("auto")
    assert (store, why) == (
        "moto",
        "moto, as dynalite needs Node: node and npm are not both on PATH",
    )
    assert choose_store("moto") == ("moto", "")
    with pytest.raises(RuntimeError, match="cannot install dynalite: node and npm are not both"):
        install()
    with pytest.raises(RuntimeError, match="cannot install dynalite"):
        choose_store("dynalite")


@needs_dynalite
def test_local_emulators_with_dynalite_give_the_stacks_its_url() -> None:
    with LocalEmulators(dynamodb="dynalite", extra_tables=()) as local:
        assert local.dynamodb.kind == "dynalite"
        assert local.env()["AWS_ENDPOINT_URL_DYNAMODB"] == local.dynamodb_url
        assert local.ttl_note == (
            "TTL is off: dynalite has no UpdateTimeToLive, so expired sessions stay stored "
            "(the stacks treat them as absent)"
        )
        client = local.dynamodb.client()
        try:
            names = client.list_tables()["TableNames"]
        finally:
            client.close()
        assert local.table in names


@needs_dynalite
def test_the_emulators_command_runs_dynalite_and_stops_it_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.local.emulators", "--dynamodb", "dynalite"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        exports = {}
        for line in process.stdout:
            name, _, value = line.strip().removeprefix("export ").partition("=")
            exports[name] = value
            if name == "AWS_DEFAULT_REGION":
                break
        url = exports["AWS_ENDPOINT_URL_DYNAMODB"]
        node = subprocess.run(  # its own children only: other runs may have a dynalite too
            ["pgrep", "-P", str(process.pid), "-f", "serve-dynalite.js"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert url.startswith("http://127.0.0.1:")
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "TTL is off: dynalite has no UpdateTimeToLive" in stderr
    assert f"emulators up: DynamoDB (dynalite) {url} (table chat_sessions)" in stderr
    assert node, "no dynalite process was running"
    for pid in node:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
