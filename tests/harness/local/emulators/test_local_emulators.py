"""LocalEmulators and ``python -m harness.local.emulators``: both services, one environment."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from harness.local.emulators import LocalEmulators
from harness.local.emulators import __main__ as emulators_main
from harness.local.emulators.bedrock import compose_reply

ROOT = Path(__file__).resolve().parents[4]


def test_local_emulators_env_reaches_both_services() -> None:
    with LocalEmulators(table="chat_sessions_local", bedrock_options={"chunk_count": 2}) as local:
        env = local.env()
        assert env == {
            "AWS_ENDPOINT_URL_DYNAMODB": local.dynamodb_url,
            "AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME": local.bedrock_url,
            "AWS_ENDPOINT_URL_CLOUDWATCH": local.cloudwatch_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        # A session built from exactly these values, as a stack would build it.
        session = boto3.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
        )
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"})
        dynamodb = session.client(
            "dynamodb", endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"], config=config
        )
        agent = session.client(
            "bedrock-agent-runtime",
            endpoint_url=env["AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME"],
            config=config,
        )
        cloudwatch = session.client(
            "cloudwatch", endpoint_url=env["AWS_ENDPOINT_URL_CLOUDWATCH"], config=config
        )
        try:
            cloudwatch.put_metric_data(
                Namespace="Test/LocalEmulators",
                MetricData=[{"MetricName": "Probe", "Value": 1.0, "Unit": "Count"}],
            )
            listed = cloudwatch.list_metrics(Namespace="Test/LocalEmulators")["Metrics"]
            assert {m["MetricName"] for m in listed} == {"Probe"}
            # Described, not listed: the session's emulator holds more than a page of tables.
            table = dynamodb.describe_table(TableName="chat_sessions_local")["Table"]
            assert table["TableStatus"] == "ACTIVE"
            local.bedrock.configure(chunk_count=4)  # changed at run time
            response = agent.invoke_agent(
                agentId="A", agentAliasId="B", sessionId="s1", inputText="hi"
            )
            events = list(response["completion"])
            assert len(events) == 4
            assert b"".join(e["chunk"]["bytes"] for e in events).decode() == compose_reply("hi", 1)
        finally:
            dynamodb.close()
            agent.close()
            cloudwatch.close()


def test_cli_prints_exports_and_stops_on_sigterm() -> None:
    env = {**os.environ, "DYNAMODB_TABLE": "cli_table", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.local.emulators", "--chunk-count", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(7)]
        exports = dict(line.removeprefix("export ").rstrip("\n").split("=", 1) for line in lines)
        assert list(exports) == [
            "AWS_ENDPOINT_URL_DYNAMODB",
            "AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME",
            "AWS_ENDPOINT_URL_CLOUDWATCH",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
        ]
        assert all(line.startswith("export ") for line in lines)

        client = boto3.client(
            "dynamodb",
            endpoint_url=exports["AWS_ENDPOINT_URL_DYNAMODB"],
            region_name=exports["AWS_REGION"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        try:
            assert "cli_table" in client.list_tables()["TableNames"]
        finally:
            client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert stdout == ""
    assert "stopping emulators" in stderr


def test_ctrl_c_with_keep_alive_clients_stops_cleanly() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.local.emulators"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    connections: list[http.client.HTTPConnection] = []
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(7)]
        exports = dict(line.removeprefix("export ").rstrip("\n").split("=", 1) for line in lines)
        answers = []
        for name, path in (
            ("AWS_ENDPOINT_URL_DYNAMODB", "/"),
            ("AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME", "/_emulator/health"),
        ):
            connection = http.client.HTTPConnection(urlsplit(exports[name]).netloc, timeout=10)
            connections.append(connection)
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            answers.append((response.status, response.getheader("Connection")))
        # And a request the Bedrock emulator never answers, in flight at the signal.
        hung = http.client.HTTPConnection(
            urlsplit(exports["AWS_ENDPOINT_URL_BEDROCK_AGENT_RUNTIME"]).netloc, timeout=10
        )
        connections.append(hung)
        hung.request(
            "POST",
            "/agents/AGENT/agentAliases/ALIAS/sessions/s-1/text",
            body=b'{"inputText": "[[emulator:hang]]"}',
        )
        # Both connections stay open: kept alive by the clients, not closed by the servers.
        assert answers == [(200, None), (200, "keep-alive")]
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        for connection in connections:
            connection.close()
        if process.returncode is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.endswith("stopping emulators\n"), stderr


def test_external_dynamodb_gets_the_table_and_is_left_running() -> None:
    from harness.local.emulators.dynamodb import DynamoDBEmulator

    with DynamoDBEmulator() as outside:
        with LocalEmulators(table="external_table", external_dynamodb_url=outside.url) as local:
            assert local.env()["AWS_ENDPOINT_URL_DYNAMODB"] == outside.url
        client = outside.client()
        try:
            # The table was created there, and stopping LocalEmulators left it serving.
            table = client.describe_table(TableName="external_table")["Table"]
            assert table["TableStatus"] == "ACTIVE"
        finally:
            client.close()


def _unraisable_from(filename: str, function: str) -> Any:
    """An unraisable-hook argument for a TypeError raised in `function` of `filename`."""
    namespace: dict[str, Any] = {}
    code = f"def {function}():\n    for waiter in None:\n        pass\n"
    exec(compile(code, filename, "exec"), namespace)
    try:
        namespace[function]()
    except TypeError as error:
        return SimpleNamespace(exc_value=error, exc_traceback=error.__traceback__, object=None)
    raise AssertionError("the function did not raise")


@pytest.mark.parametrize(
    ("version", "filename", "function", "dropped"),
    [
        ((3, 13, 0, "final", 0), "/py/lib/asyncio/base_events.py", "_wakeup", True),
        ((3, 13, 0, "final", 0), "/py/lib/asyncio/base_events.py", "_detach", False),
        ((3, 13, 0, "final", 0), "/app/mine/base_events.py", "_wakeup", False),
        ((3, 13, 1, "final", 0), "/py/lib/asyncio/base_events.py", "_wakeup", False),
        ((3, 11, 7, "final", 0), "/py/lib/asyncio/base_events.py", "_wakeup", False),
    ],
    ids=["the-bug", "other-function", "other-file", "fixed-python", "older-python"],
)
def test_only_cpython_3130s_wakeup_error_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
    version: tuple[object, ...],
    filename: str,
    function: str,
    dropped: bool,
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    monkeypatch.setattr(sys, "version_info", version)
    emulators_main._ignore_cpython_3130_wakeup_bug()
    unraisable = _unraisable_from(filename, function)
    sys.unraisablehook(unraisable)
    assert seen == ([] if dropped else [unraisable])
