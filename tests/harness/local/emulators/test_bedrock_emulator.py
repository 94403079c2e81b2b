"""The Bedrock emulator on the wire, through the real boto3 client (no patching)."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import pytest
import urllib3.exceptions
from botocore.exceptions import ClientError, EventStreamError, ReadTimeoutError

from harness.local.emulators.bedrock import (
    BedrockAgentEmulator,
    BedrockEmulatorThread,
    compose_reply,
    token_usage,
)
from harness.local.emulators.eventstream import decode_events

AgentClientFactory = Callable[..., Any]


def invoke(client: Any, text: str, session: str = "s1", **extra: Any) -> list[dict[str, Any]]:
    """One InvokeAgent call, its completion stream read to the end."""
    response = client.invoke_agent(
        agentId="A", agentAliasId="B", sessionId=session, inputText=text, **extra
    )
    completion = response["completion"]
    try:
        return list(completion)
    finally:
        # After a stream error the connection is neither drained nor back in the pool;
        # without close() its socket leaks until garbage collection (ResourceWarning).
        completion.close()


def answer(events: list[dict[str, Any]]) -> str:
    return b"".join(e["chunk"]["bytes"] for e in events if "chunk" in e).decode("utf-8")


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def admin(url: str, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection(*address(url), timeout=5)
    try:
        payload = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=payload)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


# Generous: a wait on the emulator's counters only runs out when the test fails.
PATIENCE = 30.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def wait_for_outcome(bedrock: BedrockEmulatorThread, outcome: str) -> None:
    wait_until(
        lambda: bedrock.emulator.stats()["outcomes"].get(outcome) == 1,
        f"no {outcome} outcome recorded",
    )


# -- replies -------------------------------------------------------------------------------


def test_reply_is_compose_reply_and_turns_advance(agent_client: Any) -> None:
    response = agent_client.invoke_agent(
        agentId="A", agentAliasId="B", sessionId="s1", inputText="hi"
    )
    assert response["sessionId"] == "s1"
    assert response["contentType"] == "application/json"
    assert answer(list(response["completion"])) == compose_reply("hi", 1)
    assert answer(invoke(agent_client, "hi")) == compose_reply("hi", 2)
    # Turns are counted per session.
    assert answer(invoke(agent_client, "hi", session="other")) == compose_reply("hi", 1)


def test_trace_comes_first_and_carries_usage(agent_client: Any) -> None:
    events = invoke(agent_client, "how are you", enableTrace=True)
    reply = compose_reply("how are you", 1)
    input_tokens, output_tokens = token_usage("how are you", reply)
    assert (input_tokens, output_tokens) == (23, 15)
    trace = events[0]["trace"]
    usage = {"inputTokens": input_tokens, "outputTokens": output_tokens}
    assert trace["trace"] == {
        "orchestrationTrace": {"modelInvocationOutput": {"metadata": {"usage": usage}}}
    }
    assert (trace["sessionId"], trace["agentId"], trace["agentAliasId"]) == ("s1", "A", "B")
    assert answer(events[1:]) == reply
    assert all("chunk" in e for e in events[1:])


def test_no_trace_unless_enabled(agent_client: Any) -> None:
    assert [list(e) for e in invoke(agent_client, "hi")] == [["chunk"]] * 3


def test_chunk_count_and_utf8_safe_splitting(
    bedrock: BedrockEmulatorThread, agent_client: Any
) -> None:
    bedrock.emulator.configure(chunk_count=7)
    text = "héllo wörld 🌍 ünïcode"
    events = invoke(agent_client, text)
    assert len(events) == 7
    # Every chunk decodes on its own: no multi-byte character is cut in half.
    pieces = [e["chunk"]["bytes"].decode("utf-8") for e in events]
    assert "".join(pieces) == compose_reply(text, 1)


def test_end_session_restarts_turns(agent_client: Any) -> None:
    invoke(agent_client, "hi")
    assert answer(invoke(agent_client, "hi", endSession=True)) == compose_reply("hi", 2)
    assert answer(invoke(agent_client, "hi")) == compose_reply("hi", 1)


def test_a_session_seeded_with_history_continues_after_it(agent_client: Any) -> None:
    history = {
        "conversationHistory": {
            "messages": [
                {"role": "user", "content": [{"text": "one"}]},
                {"role": "assistant", "content": [{"text": "reply one"}]},
                {"role": "user", "content": [{"text": "two"}]},
                {"role": "assistant", "content": [{"text": "reply two"}]},
            ]
        }
    }
    seeded = invoke(agent_client, "three", session="seeded", sessionState=history)
    assert answer(seeded) == compose_reply("three", 3)
    assert answer(invoke(agent_client, "four", session="seeded")) == compose_reply("four", 4)
    # A session that has turns already goes on from them, whatever history comes with it.
    again = invoke(agent_client, "five", session="seeded", sessionState=history)
    assert answer(again) == compose_reply("five", 5)


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directive", "status", "code"),
    [
        ("throttle", 429, "ThrottlingException"),
        ("fail", 500, "InternalServerException"),
        ("denied", 403, "AccessDeniedException"),
    ],
)
def test_http_faults_raise_client_error(
    agent_client: Any, directive: str, status: int, code: str
) -> None:
    with pytest.raises(ClientError) as caught:
        invoke(agent_client, f"hi [[emulator:{directive}]]")
    error = caught.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (code, status)
    # No turn was taken: the next answer is still turn 1.
    assert answer(invoke(agent_client, "hi")) == compose_reply("hi", 1)


def test_stream_throttle_after_one_chunk(agent_client: Any) -> None:
    response = agent_client.invoke_agent(
        agentId="A", agentAliasId="B", sessionId="s1", inputText="go [[emulator:stream-throttle]]"
    )
    received: list[dict[str, Any]] = []
    with pytest.raises(EventStreamError) as caught:
        try:
            received.extend(response["completion"])
        finally:
            response["completion"].close()
    assert caught.value.response["Error"]["Code"] == "throttlingException"
    assert len(received) == 1
    assert compose_reply("go [[emulator:stream-throttle]]", 1).startswith(answer(received))


def test_stream_fail(agent_client: Any) -> None:
    with pytest.raises(EventStreamError) as caught:
        invoke(agent_client, "go [[emulator:stream-fail]]")
    assert caught.value.response["Error"]["Code"] == "internalServerException"


def test_hang_times_out_and_does_not_block_others(
    bedrock: BedrockEmulatorThread, agent_client_for: AgentClientFactory
) -> None:
    slow = agent_client_for(bedrock.url, read_timeout=0.5)
    fast = agent_client_for(bedrock.url)
    errors: list[Exception] = []

    def hang() -> None:
        try:
            invoke(slow, "x [[emulator:hang]]")
        except Exception as error:  # checked below, on the test's thread
            errors.append(error)

    started = time.perf_counter()
    hung = threading.Thread(target=hang)
    hung.start()
    wait_for_outcome(bedrock, "hang")
    # Served while the other request hangs.
    assert answer(invoke(fast, "hi")) == compose_reply("hi", 1)
    # The hang never ends on its own: only the client's read timeout can end the call.
    hung.join(PATIENCE)
    assert not hung.is_alive()
    assert 0.45 < time.perf_counter() - started < PATIENCE
    assert [type(error) for error in errors] == [ReadTimeoutError]


def test_mid_stream_timeout_is_a_raw_urllib3_error(
    bedrock: BedrockEmulatorThread, agent_client_for: AgentClientFactory
) -> None:
    # Documents a botocore quirk callers must handle: a timeout between events is not
    # wrapped in botocore's ReadTimeoutError.
    bedrock.emulator.configure(chunk_delay_ms=1500)
    client = agent_client_for(bedrock.url, read_timeout=0.3)
    response = client.invoke_agent(agentId="A", agentAliasId="B", sessionId="s1", inputText="hi")
    completion = response["completion"]
    try:
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            list(completion)
    finally:
        completion.close()


def test_configured_fault_with_rate_follows_the_seeded_draws(
    bedrock: BedrockEmulatorThread, agent_client: Any
) -> None:
    bedrock.emulator.configure(fault="throttle", fault_rate=0.5, seed=7)
    draws = random.Random(7)
    expected = ["throttle" if draws.random() < 0.5 else "ok" for _ in range(12)]
    outcomes = []
    for _ in range(12):
        try:
            invoke(agent_client, "hi", session="rate")
            outcomes.append("ok")
        except ClientError as error:
            assert error.response["Error"]["Code"] == "ThrottlingException"
            outcomes.append("throttle")
    assert outcomes == expected
    assert {"ok", "throttle"} == set(outcomes)


# -- timing and concurrency -----------------------------------------------------------------


def test_configured_latency_delays_the_answer(
    bedrock: BedrockEmulatorThread, agent_client: Any
) -> None:
    invoke(agent_client, "warm up the connection")
    bedrock.emulator.configure(latency_ms=300)
    started = time.perf_counter()
    invoke(agent_client, "hi")
    assert time.perf_counter() - started >= 0.3


def test_latency_directive_overrides_config(agent_client: Any) -> None:
    invoke(agent_client, "warm up the connection")
    started = time.perf_counter()
    invoke(agent_client, "hi [[emulator:latency=250]]")
    assert time.perf_counter() - started >= 0.25


def test_chunks_are_streamed_not_buffered(
    bedrock: BedrockEmulatorThread, agent_client: Any
) -> None:
    bedrock.emulator.configure(chunk_count=3, chunk_delay_ms=150)
    response = agent_client.invoke_agent(
        agentId="A", agentAliasId="B", sessionId="s1", inputText="hi"
    )
    arrivals = [time.perf_counter() for _ in response["completion"]]
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 0.12
    assert arrivals[2] - arrivals[1] >= 0.12


def test_twenty_concurrent_invocations(
    bedrock: BedrockEmulatorThread, agent_client_for: AgentClientFactory
) -> None:
    # Long enough for twenty calls to reach the emulator before the first is answered,
    # even on a loaded machine.
    bedrock.emulator.configure(latency_ms=2000)
    client = agent_client_for(bedrock.url, pool=20)
    with ThreadPoolExecutor(max_workers=20) as pool:
        replies = pool.map(lambda i: answer(invoke(client, f"q{i}", f"c{i}")), range(20))
        # Served in parallel: all twenty are in the emulator at once, none answered yet
        # (a call is counted when it arrives, its outcome when it is answered).
        wait_until(
            lambda: bedrock.emulator.stats()["invocations"] == 20,
            "the twenty calls never reached the emulator",
        )
        assert bedrock.emulator.stats()["outcomes"] == {}
        assert list(replies) == [compose_reply(f"q{i}", 1) for i in range(20)]
    assert bedrock.emulator.stats()["outcomes"] == {"ok": 20}


def test_stop_is_fast_with_a_hung_client_connected() -> None:
    before = set(threading.enumerate())
    thread = BedrockEmulatorThread()
    url = thread.start()
    (loop,) = [t for t in set(threading.enumerate()) - before if t.name == thread.thread_name]
    body = json.dumps({"inputText": "[[emulator:hang]]"}).encode()
    with socket.create_connection(address(url), timeout=5) as hung:
        hung.sendall(
            b"POST /agents/A/agentAliases/B/sessions/s1/text HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        wait_for_outcome(thread, "hang")
        thread.stop(timeout=PATIENCE)
        # Its thread ended: stop did not wait for the hung client, which never hangs up.
        assert not loop.is_alive()
        assert hung.recv(1) == b""  # the server closed it, without an answer


# -- raw HTTP: routing, errors, keep-alive, Expect --------------------------------------------


def test_unknown_path_and_wrong_method(bedrock: BedrockEmulatorThread) -> None:
    assert admin(bedrock.url, "GET", "/nope") == (
        404,
        {"message": "No route for /nope."},
    )
    status, body = admin(bedrock.url, "GET", "/agents/A/agentAliases/B/sessions/s1/text")
    assert (status, body) == (405, {"message": "Use POST for this path."})


def test_error_headers_follow_rest_json(bedrock: BedrockEmulatorThread) -> None:
    connection = http.client.HTTPConnection(*address(bedrock.url), timeout=5)
    try:
        connection.request(
            "POST",
            "/agents/A/agentAliases/B/sessions/s1/text",
            body=json.dumps({"inputText": "[[emulator:throttle]]"}),
        )
        response = connection.getresponse()
        assert response.status == 429
        assert response.getheader("x-amzn-ErrorType") == "ThrottlingException"
        assert response.getheader("x-amzn-RequestId")
        assert json.loads(response.read()) == {"message": "Rate exceeded (emulated)."}
    finally:
        connection.close()


def test_validation_errors(agent_client: Any) -> None:
    with pytest.raises(ClientError) as caught:
        invoke(agent_client, "hi", session="bad id!")
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as caught:
        invoke(agent_client, "[[emulator:explode]]")
    assert caught.value.response["Error"]["Code"] == "ValidationException"


def test_keep_alive_serves_several_requests_on_one_connection(
    bedrock: BedrockEmulatorThread,
) -> None:
    connection = http.client.HTTPConnection(*address(bedrock.url), timeout=5)
    try:
        sockets = set()
        for turn in (1, 2, 3):
            connection.request(
                "POST",
                "/agents/A/agentAliases/B/sessions/s1/text",
                body=json.dumps({"inputText": "hi"}),
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            assert response.getheader("Transfer-Encoding") == "chunked"
            assert response.getheader("Content-Type") == "application/vnd.amazon.eventstream"
            assert response.getheader("x-amz-bedrock-agent-session-id") == "s1"
            events = decode_events(response.read())
            assert connection.sock is not None
            sockets.add(id(connection.sock))
            assert [h[":event-type"] for h, _ in events] == ["chunk"] * 3
            text = b"".join(base64.b64decode(json.loads(p)["bytes"]) for _, p in events)
            assert text.decode() == compose_reply("hi", turn)
        assert len(sockets) == 1
    finally:
        connection.close()


def test_expect_100_continue(bedrock: BedrockEmulatorThread) -> None:
    body = json.dumps({"inputText": "hi"}).encode()
    with socket.create_connection(address(bedrock.url), timeout=5) as sock:
        sock.sendall(
            b"POST /agents/A/agentAliases/B/sessions/s1/text HTTP/1.1\r\nHost: x\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        reader = sock.makefile("rb")
        assert reader.readline() == b"HTTP/1.1 200 OK\r\n"


# -- admin endpoints ------------------------------------------------------------------------

FAULT_NAMES = "throttle, stream-throttle, fail, stream-fail, hang, denied"
OPTIONS = "latency_ms, chunk_count, chunk_delay_ms, fault, fault_rate, seed"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "blue"}, f"unknown field 'colour' (known: {OPTIONS})"),
        # Nothing is applied when one option is wrong, not even the valid ones before it.
        ({"chunk_count": 5, "chunk_delay": 10}, f"unknown field 'chunk_delay' (known: {OPTIONS})"),
        ({"latency_ms": "5"}, "latency_ms: must be a number, not '5'"),
        ({"latency_ms": True}, "latency_ms: must be a number, not True"),
        ({"chunk_count": 2.5}, "chunk_count: must be an integer, not 2.5"),
        ({"chunk_count": 0}, "chunk_count: must be at least 1, not 0"),
        ({"fault_rate": 1.5}, "fault_rate: must be at most 1, not 1.5"),
        ({"fault": "explode"}, f"unknown fault 'explode' (one of {FAULT_NAMES})"),
    ],
)
def test_a_bad_option_is_a_one_line_error_naming_it(
    bedrock: BedrockEmulatorThread, changes: dict[str, Any], message: str
) -> None:
    before = bedrock.emulator.config
    with pytest.raises(ValueError) as caught:
        bedrock.emulator.configure(**changes)
    assert str(caught.value) == message
    assert admin(bedrock.url, "POST", "/_emulator/config", changes) == (400, {"message": message})
    assert bedrock.emulator.config == before
    assert admin(bedrock.url, "GET", "/_emulator/config") == (200, before.to_json())


def test_a_bad_initial_option_is_a_one_line_error_naming_it() -> None:
    with pytest.raises(ValueError) as caught:
        BedrockAgentEmulator(latency_ms=-1)
    assert str(caught.value) == "latency_ms: must be at least 0, not -1"


def test_admin_config_health_stats_and_reset(
    bedrock: BedrockEmulatorThread, agent_client: Any
) -> None:
    url = bedrock.url
    assert admin(url, "GET", "/_emulator/health") == (200, {"status": "ok"})
    status, config = admin(url, "POST", "/_emulator/config", {"chunk_count": 2, "seed": 3})
    assert status == 200
    assert config == {
        "latency_ms": 0.0,
        "chunk_count": 2,
        "chunk_delay_ms": 0.0,
        "fault": None,
        "fault_rate": 1.0,
        "seed": 3,
    }
    assert admin(url, "GET", "/_emulator/config") == (200, config)
    assert admin(url, "POST", "/_emulator/config", {"fault": "explode"}) == (
        400,
        {"message": f"unknown fault 'explode' (one of {FAULT_NAMES})"},
    )

    events = invoke(agent_client, "hi")
    assert len(events) == 2
    assert answer(events) == compose_reply("hi", 1, seed=3)
    with pytest.raises(ClientError):
        invoke(agent_client, "[[emulator:denied]]")
    status, stats = admin(url, "GET", "/_emulator/stats")
    assert status == 200
    assert (stats["invocations"], stats["outcomes"], stats["sessions"]) == (
        2,
        {"ok": 1, "denied": 1},
        1,
    )

    assert admin(url, "POST", "/_emulator/reset") == (200, {"status": "reset"})
    assert answer(invoke(agent_client, "hi")) == compose_reply("hi", 1, seed=3)


def test_emulator_on_callers_loop() -> None:
    async def scenario() -> tuple[int, bytes]:
        async with BedrockAgentEmulator() as emulator:
            host, port = address(emulator.url)
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /_emulator/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = await reader.read()
            writer.close()
            await writer.wait_closed()
            return len(data), data.split(b"\r\n\r\n", 1)[1]

    length, body = asyncio.run(scenario())
    assert length > 0
    assert body == b'{"status":"ok"}'


def test_stop_closes_hung_connections_before_returning() -> None:
    async def scenario() -> bytes:
        emulator = BedrockAgentEmulator()
        await emulator.start()
        reader, writer = await asyncio.open_connection(*address(emulator.url))
        body = json.dumps({"inputText": "[[emulator:hang]]"}).encode()
        writer.write(
            b"POST /agents/A/agentAliases/B/sessions/s1/text HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        async with asyncio.timeout(PATIENCE):
            # Polling: the server's counters have no event to wait on.
            while emulator.stats()["outcomes"].get("hang") != 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        # The hung client never hangs up: a stop() that waited for it would never return.
        await asyncio.wait_for(emulator.stop(), PATIENCE)
        try:
            # Closed by stop() itself, not later by the loop's shutdown (which only comes
            # after this returns).
            return await asyncio.wait_for(reader.read(), PATIENCE)
        finally:
            writer.close()

    assert asyncio.run(scenario()) == b""
