"""`--print-setup`: the tables the harness expects, printed from the definitions the emulators
create their tables from, as CreateTable JSON and as AWS CLI commands."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name
from botocore.model import Shape, StructureShape
from botocore.validate import validate_parameters

from harness.local.emulators import LocalEmulators
from harness.local.emulators import __main__ as emulators_main
from harness.local.emulators.setup import harness_tables

ROOT = Path(__file__).resolve().parents[4]
DYNAMODB_MODEL = botocore.session.get_session().get_service_model("dynamodb")


@pytest.fixture(autouse=True)
def _no_gateway_table_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # The root conftest clears the stacks' settings; the gateway's table name is ours to set.
    monkeypatch.delenv("GATEWAY_STATE_TABLE", raising=False)


@pytest.fixture
def named(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Table names of this test only, set where the stacks and the gateway read them."""
    suffix = uuid.uuid4().hex[:8]
    names = {
        "DYNAMODB_TABLE": f"setup_sessions_{suffix}",
        "DYNAMODB_SHADOW_TABLE": f"setup_shadow_{suffix}",
        "GATEWAY_STATE_TABLE": f"setup_gateway_{suffix}",
    }
    for name, value in names.items():
        monkeypatch.setenv(name, value)
    return names


def print_setup(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert emulators_main.main(list(argv)) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def described(client: Any, name: str) -> dict[str, Any]:
    """What DynamoDB says of table `name`, in the requests' terms (its name left out)."""
    table = client.describe_table(TableName=name)["Table"]
    ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    return {
        "AttributeDefinitions": table["AttributeDefinitions"],
        "KeySchema": table["KeySchema"],
        "BillingMode": table["BillingModeSummary"]["BillingMode"],
        "TTL": ttl,
    }


def requested(entry: dict[str, Any]) -> dict[str, Any]:
    """What one printed entry asks for, in `described`'s terms."""
    create, ttl = entry["CreateTable"], entry["UpdateTimeToLive"]["TimeToLiveSpecification"]
    assert entry["TableName"] == create["TableName"] == entry["UpdateTimeToLive"]["TableName"]
    assert set(create) == {"TableName", "AttributeDefinitions", "KeySchema", "BillingMode"}
    return {
        "AttributeDefinitions": create["AttributeDefinitions"],
        "KeySchema": create["KeySchema"],
        "BillingMode": create["BillingMode"],
        "TTL": {
            "TimeToLiveStatus": "ENABLED" if ttl["Enabled"] else "DISABLED",
            "AttributeName": ttl["AttributeName"],
        },
    }


def test_the_printed_tables_are_the_ones_the_emulators_created(
    emulators: LocalEmulators, capsys: pytest.CaptureFixture[str]
) -> None:
    # The session fixture started with the defaults, as the settings name them unset.
    printed = json.loads(print_setup(capsys, "--print-setup=json"))
    names = [entry["TableName"] for entry in printed]
    assert names == ["chat_sessions", "chat_sessions_shadow", "dualstack_gateway"]
    assert names == [table.name for table in emulators.tables]
    client = emulators.dynamodb.client(emulators.region)
    try:
        for entry in printed:
            assert described(client, entry["TableName"]) == requested(entry)
        assert requested(printed[0]) == {
            "AttributeDefinitions": [{"AttributeName": "session_id", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "session_id", "KeyType": "HASH"}],
            "BillingMode": "PAY_PER_REQUEST",
            "TTL": {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"},
        }
    finally:
        client.close()


def test_the_json_is_createtable_input_that_dynamodb_takes(
    emulators: LocalEmulators, capsys: pytest.CaptureFixture[str], named: dict[str, str]
) -> None:
    printed = json.loads(print_setup(capsys, "--print-setup=json"))
    assert [entry["TableName"] for entry in printed] == list(named.values())
    reference = f"setup_reference_{uuid.uuid4().hex[:8]}"
    emulators.dynamodb.create_table(reference, emulators.region)  # as the emulators do
    client = emulators.dynamodb.client(emulators.region)
    try:
        for entry in printed:
            # Valid by the service model (what boto3 checks before sending), then created.
            for operation in ("CreateTable", "UpdateTimeToLive"):
                shape = DYNAMODB_MODEL.operation_model(operation).input_shape
                assert shape is not None
                validate_parameters(entry[operation], shape)
            client.create_table(**entry["CreateTable"])
            client.get_waiter("table_exists").wait(
                TableName=entry["TableName"], WaiterConfig={"Delay": 1, "MaxAttempts": 10}
            )
            client.update_time_to_live(**entry["UpdateTimeToLive"])
            assert described(client, entry["TableName"]) == described(client, reference)
    finally:
        client.close()


def parse_command(line: str) -> tuple[str, dict[str, Any]]:
    """An `aws dynamodb <operation> --option value...` line as (Operation, request), the
    shorthand values read back through the service model's shapes."""
    aws, service, command, *words = shlex.split(line)
    assert (aws, service) == ("aws", "dynamodb")
    operation = {xform_name(name, "-"): name for name in DYNAMODB_MODEL.operation_names}[command]
    shape = DYNAMODB_MODEL.operation_model(operation).input_shape
    assert isinstance(shape, StructureShape)
    members = {xform_name(name, "-"): name for name in shape.members}
    request: dict[str, Any] = {}
    option = ""
    for word in words:
        if word.startswith("--"):
            option = word[2:]
            if option != "region":
                assert option in members, f"{command} has no --{option}"
            continue
        if option == "region":
            request["--region"] = word
            continue
        member = members[option]
        value = read_shorthand(word, shape.members[member])
        if shape.members[member].type_name == "list":
            request.setdefault(member, []).append(value)
        else:
            request[member] = value
    return operation, request


def read_shorthand(word: str, shape: Shape) -> Any:
    if shape.type_name == "list":
        shape = shape.member  # type: ignore[attr-defined]
    if isinstance(shape, StructureShape):
        pairs = (part.split("=", 1) for part in word.split(","))
        return {key: read_shorthand(value, shape.members[key]) for key, value in pairs}
    if shape.type_name == "boolean":
        assert word in ("true", "false")
        return word == "true"
    return word


def test_the_cli_commands_say_what_the_json_says(
    capsys: pytest.CaptureFixture[str], named: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    printed = json.loads(print_setup(capsys, "--print-setup=json"))
    lines = print_setup(capsys, "--print-setup").splitlines()
    commands = [line for line in lines if not line.startswith("#")]
    assert len(lines) == 4 * len(printed) and len(commands) == 3 * len(printed)
    for entry, at in zip(printed, range(0, len(commands), 3), strict=True):
        create, wait, ttl = commands[at : at + 3]
        region = {"--region": "eu-west-1"}
        assert parse_command(create) == ("CreateTable", {**entry["CreateTable"], **region})
        assert shlex.split(wait) == [
            *("aws", "dynamodb", "wait", "table-exists"),
            *("--table-name", entry["TableName"], "--region", "eu-west-1"),
        ]
        assert parse_command(ttl) == ("UpdateTimeToLive", {**entry["UpdateTimeToLive"], **region})
    # The names the settings give, and the schema, seen in the commands themselves.
    first = shlex.split(commands[0])
    assert first[first.index("--table-name") + 1] == named["DYNAMODB_TABLE"]
    assert first[first.index("--key-schema") + 1] == "AttributeName=session_id,KeyType=HASH"
    assert first[first.index("--billing-mode") + 1] == "PAY_PER_REQUEST"
    last = shlex.split(commands[-1])
    assert last[last.index("--table-name") + 1] == named["GATEWAY_STATE_TABLE"]
    spec = last[last.index("--time-to-live-specification") + 1]
    assert spec == "Enabled=true,AttributeName=ttl"


def test_flags_name_the_tables_as_for_a_run(capsys: pytest.CaptureFixture[str]) -> None:
    # docker-compose.yml's emulators create two gateways' state tables this way.
    argv = ["--print-setup=json", "--table=t", "--gateway-table=g1", "--gateway-table=g2"]
    printed = json.loads(print_setup(capsys, *argv))
    assert [entry["TableName"] for entry in printed] == ["t", "t_shadow", "g1", "g2"]


@pytest.mark.parametrize(
    ("sessions", "shadow", "gateway", "names"),
    [
        ("s", "s_shadow", ["g"], ["s", "s_shadow", "g"]),
        ("s", "s_shadow", [], ["s", "s_shadow"]),
        ("s", "s", ["s", "g", "g"], ["s", "g"]),  # each table once, first place kept
    ],
)
def test_each_table_is_created_once(
    sessions: str, shadow: str, gateway: list[str], names: list[str]
) -> None:
    tables = harness_tables(sessions, shadow=shadow, gateway=gateway)
    assert [table.name for table in tables] == names


def test_a_bad_setting_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_TIMEOUT_SECONDS", "-1")
    assert emulators_main.main(["--print-setup"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: AGENT_TIMEOUT_SECONDS") and err.count("\n") == 1


def test_the_alias_prints_the_same_without_aws(capsys: pytest.CaptureFixture[str]) -> None:
    # `python -m harness.emulators`: no credentials, an endpoint where nothing listens, and
    # it still prints, as it neither starts nor calls anything.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("AWS_") and name not in ("DYNAMODB_TABLE", "GATEWAY_STATE_TABLE")
    }
    env["AWS_ENDPOINT_URL_DYNAMODB"] = "http://127.0.0.1:9"
    alias = subprocess.run(
        [sys.executable, "-m", "harness.emulators", "--print-setup"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (alias.returncode, alias.stderr) == (0, "")
    assert alias.stdout == print_setup(capsys, "--print-setup")
    assert "aws dynamodb create-table --table-name chat_sessions " in alias.stdout


def test_the_readmes_commands_are_the_printed_ones(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Pointed at real AWS, step by step\n", 1)[1]
    shown = section.split("```sh\n", 1)[1].split("```", 1)[0].replace("\\\n", "")
    printed = print_setup(capsys, "--print-setup").splitlines()[1:4]
    assert [shlex.split(line) for line in shown.splitlines()] == [
        shlex.split(line) for line in printed
    ]
