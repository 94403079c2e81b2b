"""`SessionStore` (boto3) and `AsyncSessionStore` (aioboto3): the same methods, driving
the same pure plans from `shared.session` over a DynamoDB client given to them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from shared import session
from shared.aws import is_condition_failed, store_error
from shared.session import Plan, RateDecision, SessionRecord
from shared.settings import Settings

Clock = Callable[[], float]


class _Plans:
    """The plans for one table and settings; shared by both stores."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock

    def get(self, session_id: str) -> Plan:
        s = self.settings
        return session.get_plan(s.dynamodb_table, session_id, self.clock(), s.session_history_limit)

    def record_turn(
        self, session_id: str, user_id: str | None, user_text: str, agent_text: str
    ) -> Plan:
        s = self.settings
        return session.record_turn_plan(
            s.dynamodb_table,
            session_id,
            user_id,
            user_text,
            agent_text,
            self.clock(),
            turn_id=uuid.uuid4().hex,
            ttl_seconds=s.session_ttl_seconds,
            history_limit=s.session_history_limit,
        )

    def delete(self, session_id: str, user_id: str | None) -> Plan:
        return session.delete_plan(self.settings.dynamodb_table, session_id, user_id, self.clock())

    def hit(self, client: str) -> Plan:
        s = self.settings
        return session.rate_plan(
            s.dynamodb_table,
            client,
            self.clock(),
            limit=s.rate_limit_requests,
            window=s.rate_limit_window_seconds,
        )

    def failure(self, exc: Exception) -> Exception:
        """The contract error to raise for `exc`, or `exc` itself when it is a bug."""
        return store_error(exc, self.settings) or exc


class SessionStore:
    """Sessions and rate-limit counters in DynamoDB, over a boto3 client."""

    def __init__(self, client: Any, settings: Settings, clock: Clock = time.time) -> None:
        self._client = client
        self._plans = _Plans(settings, clock)

    def get(self, session_id: str) -> SessionRecord | None:
        """The live session, or None when absent or expired."""
        result: SessionRecord | None = self._drive(self._plans.get(session_id))
        return result

    def record_turn(
        self, session_id: str, user_id: str | None, user_text: str, agent_text: str
    ) -> SessionRecord:
        """Append one exchange and count the turn; concurrent turns are all kept."""
        result: SessionRecord = self._drive(
            self._plans.record_turn(session_id, user_id, user_text, agent_text)
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
        try:
            self._client.describe_table(TableName=self._plans.settings.dynamodb_table)
        except Exception as exc:
            mapped = self._plans.failure(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    def _drive(self, plan: Plan) -> Any:
        try:
            call = next(plan)
            while True:
                try:
                    reply = getattr(self._client, call.operation)(**call.kwargs)
                except Exception as exc:
                    if not is_condition_failed(exc):
                        mapped = self._plans.failure(exc)
                        if mapped is exc:
                            raise
                        raise mapped from exc
                    call = plan.throw(session.ConditionFailed())
                else:
                    call = plan.send(reply)
        except StopIteration as done:
            return done.value


class AsyncSessionStore:
    """Sessions and rate-limit counters in DynamoDB, over an aioboto3 client."""

    def __init__(self, client: Any, settings: Settings, clock: Clock = time.time) -> None:
        self._client = client
        self._plans = _Plans(settings, clock)

    async def get(self, session_id: str) -> SessionRecord | None:
        """The live session, or None when absent or expired."""
        result: SessionRecord | None = await self._drive(self._plans.get(session_id))
        return result

    async def record_turn(
        self, session_id: str, user_id: str | None, user_text: str, agent_text: str
    ) -> SessionRecord:
        """Append one exchange and count the turn; concurrent turns are all kept."""
        result: SessionRecord = await self._drive(
            self._plans.record_turn(session_id, user_id, user_text, agent_text)
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
        try:
            await self._client.describe_table(TableName=self._plans.settings.dynamodb_table)
        except Exception as exc:
            mapped = self._plans.failure(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def _drive(self, plan: Plan) -> Any:
        try:
            call = next(plan)
            while True:
                try:
                    reply = await getattr(self._client, call.operation)(**call.kwargs)
                except Exception as exc:
                    if not is_condition_failed(exc):
                        mapped = self._plans.failure(exc)
                        if mapped is exc:
                            raise
                        raise mapped from exc
                    call = plan.throw(session.ConditionFailed())
                else:
                    call = plan.send(reply)
        except StopIteration as done:
            return done.value
