"""The load test's scenarios for locust, for teams that already run it (and for load that
one machine cannot generate: locust's master and workers spread it over several).

    locust -f load_test/locustfile.py --host http://127.0.0.1:8000 ChatConversations
    locust -f load_test/locustfile.py --headless -u 64 -r 16 -t 60s --host URL ChatConversations
    LOAD_TEST_WAIT=0 locust -f load_test/locustfile.py ...     # no pause: the closed loop

Name the user class: without one, locust runs both classes, half the users each.

The users are the ones `python -m load_test` simulates (`load_test.scenarios`): chat
conversations of `LOAD_TEST_TURNS` turns (5), continued through the `session_id` answered,
and health checks. Each user waits between its requests, as people do: `LOAD_TEST_WAIT`
seconds, "MIN,MAX" (drawn uniformly between; default "0.5,1.5") or one number ("0": no
wait, each user sends its next request as soon as the last is answered).

Requests are named by the stack that answered them, from the `X-Dualstack-Backend`
response header (`POST /api/v1/chat [fastapi]`, `POST /api/v1/chat [flask]`), so locust's
table compares the two stacks behind a gateway; an answer without the header (a stack
served alone, a connection error) is named by method and path only. Errors are counted as
failures by kind: the status, or the exception. Importing this module imports locust,
which patches the standard library for gevent: load it only through locust.
"""

from __future__ import annotations

import itertools
import os

from locust import FastHttpUser, between, task

from load_test.client import Response
from load_test.engine import BACKEND_HEADER
from load_test.scenarios import ChatScenario, HealthScenario, User, parse_wait

DEFAULT_WAIT = "0.5,1.5"

_numbers = itertools.count()


class _ScenarioUser(FastHttpUser):
    abstract = True
    wait_time = between(*parse_wait(os.environ.get("LOAD_TEST_WAIT", DEFAULT_WAIT)))

    def make_user(self, number: int) -> User:
        """The scenario's user behind this locust user."""
        raise NotImplementedError

    def on_start(self) -> None:
        """Each locust user plays one scenario user."""
        self.user = self.make_user(next(_numbers))

    @task
    def send(self) -> None:
        """One request of the scenario, named by the backend that answered it; a status
        of 400 or more, or no answer, is a failure."""
        request = self.user.next_request()
        name = f"{request.method} {request.path}"
        with self.client.request(
            request.method,
            request.path,
            data=request.body.decode() or None,
            headers=dict(request.headers),
            name=name,
            catch_response=True,
        ) as received:
            status = received.status_code or 0
            headers = {key.lower(): value for key, value in received.headers.items()}
            self.user.observe(
                Response(status, headers, received.content or b"") if status else None
            )
            backend = headers.get(BACKEND_HEADER) if status else None
            if backend:
                received.request_meta["name"] = f"{name} [{backend}]"
            if status == 0:
                received.failure(f"connection: {received.error}")
            elif status >= 400:
                received.failure(f"status {status}")


class ChatConversations(_ScenarioUser):
    """Chat turns: new and continuing conversations."""

    def make_user(self, number: int) -> User:
        """A chat user holding conversations one after another."""
        return ChatScenario(int(os.environ.get("LOAD_TEST_TURNS", "5"))).new_user(number)


class HealthChecks(_ScenarioUser):
    """`GET /health`."""

    def make_user(self, number: int) -> User:
        """A health-polling user."""
        return HealthScenario().new_user(number)
