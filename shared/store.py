"""`SessionStore` (boto3) and `AsyncSessionStore` (aioboto3): the same methods, driving
the same pure plans from `shared.session` over a DynamoDB client given to them.

One deadline, `STORE_TIMEOUT_SECONDS`, bounds each method: all of its plan's calls, their
retries included. A deadline that passes is `StoreUnavailable`, as any outage is.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from shared import session
from shared.aws import AsyncRetrier, Retrier, is_condition_failed, store_error, store_policy
from shared.deadline import Deadline
from shared.session import Plan, RateDecision, SessionRecord
from shared.settings import Settings

Clock = Callable[[], float]


class _Plans:
    """The plans for one table and settings; shared by both stores."""

    def __init__(self, settings: Settings, clock: Clock, table: str | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.table = table or settings.dynamodb_table

    def get(self, session_id: str) -> Plan:
        s = self.settings
        return session.get_plan(self.table, session_id, self.clock(), s.session_history_limit)

    def record_turn(
        self,
        session_id: str,
        user_id: str | None,
        user_text: str,
        agent_text: str,
        fresh: bool,
        turn_id: str | None,
    ) -> Plan:
        s = self.settings
        return session.record_turn_plan(
            self.table,
            session_id,
            user_id,
            user_text,
            agent_text,
            self.clock(),
            turn_id=turn_id or uuid.uuid4().hex,
            ttl_seconds=s.session_ttl_seconds,
            history_limit=s.session_history_limit,
            fresh=fresh,
        )

    def delete(self, session_id: str, user_id: str | None) -> Plan:
        return session.delete_plan(self.table, session_id, user_id, self.clock())

    def check(self) -> Plan:
        return session.check_plan(self.table)

    def seed(self, session_id: str, primary_turn_id: str) -> Plan:
        s = self.settings
        return session.shadow_seed_plan(
            self.table,
            s.dynamodb_table,
            session_id,
            primary_turn_id,
            self.clock(),
            s.session_history_limit,
        )

    def hit(self, client: str) -> Plan:
        s = self.settings
        return session.rate_plan(
            s.dynamodb_table,
            client,
            self.clock(),
            limit=s.rate_limit_requests,
            window=s.rate_limit_window_seconds,
            request_id=uuid.uuid4().hex,
        )

    def failure(self, exc: Exception) -> Exception:
        """The contract error to raise for `exc`, or `exc` itself when it is a bug."""
        return store_error(exc, self.settings) or exc


class SessionStore:
    """Sessions and rate-limit counters in DynamoDB, over a boto3 client (one passed
    through `shared.aws.follow_deadlines`, for its calls to end by the deadline).

    `clock` is the wall clock records are stamped with; `retrier` runs the calls.
    """

    def __init__(
        self,
        client: Any,
        settings: Settings,
        clock: Clock = time.time,
        *,
        retrier: Retrier | None = None,
        table: str | None = None,
    ) -> None:
        self._client = client
        self._plans = _Plans(settings, clock, table)
        self._retrier = retrier or Retrier(store_policy(settings))

    def get(self, session_id: str) -> SessionRecord | None:
        """The live session, or None when absent or expired."""
        result: SessionRecord | None = self._drive(self._plans.get(session_id))
        return result

    def record_turn(
        self,
        session_id: str,
        user_id: str | None,
        user_text: str,
        agent_text: str,
        *,
        fresh: bool = False,
        turn_id: str | None = None,
    ) -> SessionRecord | None:
        """Append one exchange and count the turn; concurrent turns are all kept. None,
        with nothing written, when the live session belongs to another user. `fresh`:
        the caller found no live session, so the turn most likely creates it. `turn_id`:
        the turn's id (`session.turn_id_for`; a random one when None)."""
        result: SessionRecord | None = self._drive(
            self._plans.record_turn(session_id, user_id, user_text, agent_text, fresh, turn_id)
        )
        return result

    def seed(self, session_id: str, primary_turn_id: str) -> tuple[SessionRecord | None, bool]:
        """For a shadow turn, on the shadow table's store: the shadow copy of the session
        and whether it was just seeded from the primary's (`session.shadow_seed_plan`)."""
        result: tuple[SessionRecord | None, bool] = self._drive(
            self._plans.seed(session_id, primary_turn_id)
        )
        return result

    def delete(self, session_id: str, user_id: str | None) -> bool:
        """Delete a live session owned by `user_id`; False when there is none."""
        result: bool = self._drive(self._plans.delete(session_id, user_id))
        return result

    def hit(self, client: str) -> RateDecision:
        """Count one request of `client` against the shared rate-limit budget."""
        result: RateDecision = self._drive(self._plans.hit(client))
        return result

    def check(self) -> None:
        """Raise `StoreUnavailable` unless the table answers."""
        self._drive(self._plans.check())

    def _drive(self, plan: Plan) -> Any:
        deadline = self._retrier.deadline()
        try:
            return self._run(plan, deadline)
        except Exception as exc:
            mapped = self._plans.failure(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _run(self, plan: Plan, deadline: Deadline) -> Any:
        try:
            call = next(plan)
            while True:
                operation = partial(getattr(self._client, call.operation), **call.kwargs)
                try:
                    reply = self._retrier.call(deadline, operation)
                except Exception as exc:
                    if not is_condition_failed(exc):
                        raise
                    call = plan.throw(session.ConditionFailed())
                else:
                    call = plan.send(reply)
        except StopIteration as done:
            return done.value


class AsyncSessionStore:
    """Sessions and rate-limit counters in DynamoDB, over an aioboto3 client.

    `clock` is the wall clock records are stamped with; `retrier` runs the calls.
    """

    def __init__(
        self,
        client: Any,
        settings: Settings,
        clock: Clock = time.time,
        *,
        retrier: AsyncRetrier | None = None,
        table: str | None = None,
    ) -> None:
        self._client = client
        self._plans = _Plans(settings, clock, table)
        self._retrier = retrier or AsyncRetrier(store_policy(settings))

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live session, or None when absent or expired."""
        result: SessionRecord | None = await self._drive(self._plans.get(session_id))
        return result

    async def record_turn(
        self,
        session_id: str,
        user_id: str | None,
        user_text: str,
        agent_text: str,
        *,
        fresh: bool = False,
        turn_id: str | None = None,
    ) -> SessionRecord | None:
        """Append one exchange and count the turn; concurrent turns are all kept. None,
        with nothing written, when the live session belongs to another user. `fresh`:
        the caller found no live session, so the turn most likely creates it. `turn_id`:
        the turn's id (`session.turn_id_for`; a random one when None)."""
        result: SessionRecord | None = await self._drive(
            self._plans.record_turn(session_id, user_id, user_text, agent_text, fresh, turn_id)
        )
        return result

    async def seed(
        self, session_id: str, primary_turn_id: str
    ) -> tuple[SessionRecord | None, bool]:
        """For a shadow turn, on the shadow table's store: the shadow copy of the session
        and whether it was just seeded from the primary's (`session.shadow_seed_plan`)."""
        result: tuple[SessionRecord | None, bool] = await self._drive(
            self._plans.seed(session_id, primary_turn_id)
        )
        return result

    async def delete(self, session_id: str, user_id: str | None) -> bool:
        """Delete a live session owned by `user_id`; False when there is none."""
        result: bool = await self._drive(self._plans.delete(session_id, user_id))
        return result

    async def hit(self, client: str) -> RateDecision:
        """Count one request of `client` against the shared rate-limit budget."""
        result: RateDecision = await self._drive(self._plans.hit(client))
        return result

    async def check(self) -> None:
        """Raise `StoreUnavailable` unless the table answers."""
        await self._drive(self._plans.check())

    async def _drive(self, plan: Plan) -> Any:
        deadline = self._retrier.deadline()
        try:
            # At the deadline the call in flight is cancelled and `asyncio.timeout` raises
            # TimeoutError, a StoreUnavailable.
            async with asyncio.timeout(deadline.left()):
                return await self._run(plan, deadline)
        except Exception as exc:
            mapped = self._plans.failure(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def _run(self, plan: Plan, deadline: Deadline) -> Any:
        try:
            call = next(plan)
            while True:
                operation = partial(getattr(self._client, call.operation), **call.kwargs)
                try:
                    reply = await self._retrier.call(deadline, operation)
                except Exception as exc:
                    if not is_condition_failed(exc):
                        raise
                    call = plan.throw(session.ConditionFailed())
                else:
                    call = plan.send(reply)
        except StopIteration as done:
            return done.value
