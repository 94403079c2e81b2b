"""deploy/iam/*.json grant exactly what the code calls: every DynamoDB and Bedrock operation
found in the source is granted, on the tables the settings name, and nothing else is.

The source is scanned, not listed here, so a new call (or a dropped one) fails this test
until the policy follows: a method called on a client (`client.get_item(...)`) or an
operation named by its string as a call's argument (`Call("get_item", ...)`,
`self._call("put_item", ...)`), for every operation of the services' botocore models."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore import xform_name

from harness.gateway.settings import GatewaySettings
from harness.local.emulators.setup import harness_tables
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
IAM = ROOT / "deploy" / "iam"
STACKS = ("legacy_flask", "fastapi_app", "shared")
GATEWAY = ("harness/gateway", "gateway.py")
# botocore service -> IAM action prefix.
SERVICES = {"dynamodb": "dynamodb", "bedrock-agent-runtime": "bedrock", "cloudwatch": "cloudwatch"}
# A transaction has no permission of its own: each element needs its item action.
TRANSACTION_ELEMENTS = {
    "TransactWriteItems": {
        "Put": "PutItem",
        "Update": "UpdateItem",
        "Delete": "DeleteItem",
        "ConditionCheck": "ConditionCheckItem",
    },
    "TransactGetItems": {"Get": "GetItem"},
}
PLACEHOLDER_TABLE_ARN = "arn:aws:dynamodb:REGION:ACCOUNT:table/{}"
AGENT_ALIAS_ARN = "arn:aws:bedrock:REGION:ACCOUNT:agent-alias/AGENT_ID/ALIAS_ID"


def _operations() -> dict[str, str]:
    """Every operation of the scanned services, by boto3 method name: its IAM action."""
    session = botocore.session.get_session()
    return {
        xform_name(operation): f"{prefix}:{operation}"
        for service, prefix in SERVICES.items()
        for operation in session.get_service_model(service).operation_names
    }


OPERATIONS = _operations()


def _sources(roots: Iterable[str]) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        path = ROOT / root
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def called_actions(roots: Iterable[str]) -> dict[str, set[str]]:
    """The IAM actions the code under `roots` needs, each with where it is called."""
    found: dict[str, set[str]] = {}
    for path in _sources(roots):
        tree = ast.parse(path.read_text(), str(path))
        keys = {
            key.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Dict)
            for key in node.keys
            if isinstance(key, ast.Constant) and isinstance(key.value, str)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            names = [node.func.attr] if isinstance(node.func, ast.Attribute) else []
            names += [
                a.value
                for a in node.args
                if isinstance(a, ast.Constant) and isinstance(a.value, str)
            ]
            for name in names:
                if name not in OPERATIONS:
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                action = OPERATIONS[name]
                elements = TRANSACTION_ELEMENTS.get(action.partition(":")[2])
                if elements is None:
                    found.setdefault(action, set()).add(where)
                    continue
                # The element kinds the module builds ({"Put": {...}}) are what it asks.
                used = [item for kind, item in elements.items() if kind in keys]
                assert used, f"{where}: a transaction whose elements were not found"
                for item in used:
                    found.setdefault(f"dynamodb:{item}", set()).add(where)
    return found


def load(name: str) -> dict[str, Any]:
    policy = json.loads((IAM / name).read_text())
    assert isinstance(policy, dict)
    return policy


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    assert policy["Version"] == "2012-10-17"
    found = policy["Statement"]
    assert isinstance(found, list) and found
    for statement in found:
        assert statement["Effect"] == "Allow"
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
    return found


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def grants(policy: dict[str, Any]) -> dict[str, set[str]]:
    """{action: the resources it is granted on}."""
    granted: dict[str, set[str]] = {}
    for statement in statements(policy):
        for action in _listed(statement["Action"]):
            assert "*" not in action, f"a wildcard action: {action}"
            granted.setdefault(action, set()).update(_listed(statement["Resource"]))
    return granted


def of_service(granted: Iterable[str], *prefixes: str) -> set[str]:
    return {action for action in granted if action.partition(":")[0] in prefixes}


def table_arns(*names: str) -> set[str]:
    return {PLACEHOLDER_TABLE_ARN.format(name) for name in names}


@pytest.fixture
def tables(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The tables' default names, as the settings give them and the emulators create them."""
    monkeypatch.delenv("GATEWAY_STATE_TABLE", raising=False)
    settings, gateway = Settings(), GatewaySettings()
    planned = harness_tables(
        settings.dynamodb_table, shadow=settings.shadow_table, gateway=[gateway.state_table]
    )
    return dict(zip(("sessions", "shadow", "gateway"), (t.name for t in planned), strict=True))


def test_the_scan_finds_the_calls_it_is_meant_to() -> None:
    # The scanner itself: a method call, an operation named as an argument, a transaction's
    # elements; a dict key or a variable of the same name is no call.
    sample = ROOT / "shared" / "session.py"
    found = called_actions(["shared/session.py"])
    assert "dynamodb:GetItem" in found and all(
        w.startswith("shared/") for w in found["dynamodb:GetItem"]
    )
    assert sample.read_text().count('Call("get_item"') == len(found["dynamodb:GetItem"])
    gateway = called_actions(GATEWAY)
    assert "dynamodb:Query" not in gateway  # shadow.py's {"query": ...} is a URL's
    assert {"dynamodb:ConditionCheckItem", "dynamodb:DeleteItem"} <= set(gateway)
    assert "dynamodb:TransactWriteItems" not in gateway


def test_the_stacks_policy_grants_what_the_stacks_call_and_no_more(
    tables: dict[str, str],
) -> None:
    called = called_actions(STACKS)
    granted = grants(load("stacks-policy.json"))
    assert of_service(granted, "dynamodb", "bedrock") == of_service(called, "dynamodb", "bedrock")
    for action in of_service(called, "dynamodb"):
        assert granted[action] == table_arns(tables["sessions"], tables["shadow"]), action
    assert granted["bedrock:InvokeAgent"] == {AGENT_ALIAS_ARN}
    assert of_service(granted, "cloudwatch") == set()  # FastAPI's metrics policy has it


def test_the_gateway_policy_grants_what_the_gateway_calls_and_no_more(
    tables: dict[str, str],
) -> None:
    called = called_actions(GATEWAY)
    granted = grants(load("gateway-policy.json"))
    assert set(granted) == of_service(called, "dynamodb")
    assert set(called) == of_service(called, "dynamodb")  # no other service
    for action, resources in granted.items():
        assert resources == table_arns(tables["gateway"]), action


def test_fastapi_metrics_may_only_be_put_in_their_namespace() -> None:
    (statement,) = statements(load("fastapi-metrics-policy.json"))
    assert _listed(statement["Action"]) == ["cloudwatch:PutMetricData"]
    # PutMetricData has no resource ARN: the namespace condition is the only limit.
    assert statement["Resource"] == "*"
    namespace = Settings.model_fields["metrics_namespace"].default
    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": namespace}}
    # The one CloudWatch call the stacks make is this one (found by the scan: a scan that
    # missed it, or the call gone, fails here too).
    assert of_service(called_actions(STACKS), "cloudwatch") == {"cloudwatch:PutMetricData"}


def test_the_readme_shows_the_policy_files() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Pointed at real AWS, step by step\n", 1)[1].split("\n## ", 1)[0]
    shown = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]
    files = ["stacks-policy.json", "gateway-policy.json", "fastapi-metrics-policy.json"]
    assert shown == [load(name) for name in files]
    assert sorted(path.name for path in IAM.iterdir()) == sorted(files)
