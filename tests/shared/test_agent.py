"""The Bedrock request/reply codec and error classification, as pure functions."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    EventStreamError,
    ReadTimeoutError,
)

from shared import agent, aws, errors
from shared.settings import Settings


def test_build_request_is_the_invoke_agent_call() -> None:
    settings = Settings(bedrock_agent_id="AGENT1", bedrock_agent_alias_id="ALIAS1")
    assert agent.build_request(settings, "sess-1", "hello") == {
        "agentId": "AGENT1",
        "agentAliasId": "ALIAS1",
        "sessionId": "sess-1",
        "inputText": "hello",
        "enableTrace": True,
    }


@pytest.mark.parametrize(
    ("session_id", "kept"),
    [("ab", True), ("a" * 100, True), ("a:b.c-d_e", True), ("a", False), ("a" * 101, False)],
)
def test_agent_session_id_fits_bedrock_limits(session_id: str, kept: bool) -> None:
    mapped = agent.agent_session_id(session_id)
    assert (mapped == session_id) is kept
    assert 2 <= len(mapped) <= 100
    assert agent.agent_session_id(session_id) == mapped  # stable across calls and stacks


def test_parse_reply_joins_chunks_and_sums_usage() -> None:
    usage = {"inputTokens": 7, "outputTokens": 5}
    events = [
        {
            "trace": {
                "trace": {
                    "orchestrationTrace": {"modelInvocationOutput": {"metadata": {"usage": usage}}}
                }
            }
        },
        {"chunk": {"bytes": "héllo, ".encode()}},
        {"trace": {"trace": {"orchestrationTrace": {"rationale": {"text": "thinking"}}}}},
        {"chunk": {"bytes": "wörld".encode()[:3]}},
        {"chunk": {"bytes": "wörld".encode()[3:]}},
    ]
    assert agent.parse_reply(events) == agent.AgentReply("héllo, wörld", 12)


def test_parse_reply_without_trace_has_no_token_count() -> None:
    assert agent.parse_reply([{"chunk": {"bytes": b"ok"}}]) == agent.AgentReply("ok", None)


def _client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "secret detail"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "InvokeAgent",
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_client_error("ThrottlingException", 429), errors.AgentThrottled),
        (
            EventStreamError(
                {"Error": {"Code": "throttlingException", "Message": "x"}}, "InvokeAgent"
            ),
            errors.AgentThrottled,
        ),
        (ReadTimeoutError(endpoint_url="http://x"), errors.AgentTimeout),
        (TimeoutError(), errors.AgentTimeout),
        (_client_error("AccessDeniedException", 403), errors.AgentFailed),
        (
            EventStreamError(
                {"Error": {"Code": "internalServerException", "Message": "x"}}, "InvokeAgent"
            ),
            errors.AgentFailed,
        ),
        (EndpointConnectionError(endpoint_url="http://x"), errors.AgentFailed),
        (ValueError("boom"), errors.AgentFailed),
    ],
)
def test_agent_error_classification(exc: Exception, expected: type[errors.ServiceError]) -> None:
    mapped = aws.agent_error(exc, Settings(agent_retry_after_seconds=7))
    assert type(mapped) is expected
    assert "secret" not in mapped.message
    assert mapped.headers() == ({"Retry-After": "7"} if expected is errors.AgentThrottled else {})


@pytest.mark.parametrize(
    ("exc", "unavailable"),
    [
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ReadTimeoutError(endpoint_url="http://x"), True),
        (_client_error("ProvisionedThroughputExceededException"), True),
        (_client_error("ResourceNotFoundException"), True),
        (_client_error("ValidationException"), False),
        (KeyError("bug"), False),
    ],
)
def test_store_error_classification(exc: Exception, unavailable: bool) -> None:
    mapped = aws.store_error(exc, Settings(store_retry_after_seconds=3))
    assert (mapped is not None) is unavailable
    if mapped is not None:
        assert (mapped.status, mapped.headers()) == (503, {"Retry-After": "3"})


def test_both_aws_clients_keep_the_configured_number_of_connections() -> None:
    settings = Settings(aws_max_pool_connections=37)
    assert aws.agent_config(settings).max_pool_connections == 37
    assert aws.store_config(settings).max_pool_connections == 37
    assert Settings().aws_max_pool_connections > 10  # above botocore's default
