"""Building the gateway: the stacks mounted (the WSGI one through a2wsgi), route ownership
read from their own routing, the rollout state in DynamoDB."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import aioboto3
from a2wsgi import WSGIMiddleware
from aiobotocore.config import AioConfig
from starlette.types import ASGIApp

from harness.gateway.admin import build_admin
from harness.gateway.controller import Controller, FleetMeasure, PlanCollector, Webhooks
from harness.gateway.fleet import FleetCounters
from harness.gateway.metrics import GatewayMetrics
from harness.gateway.ownership import Ownership, asgi_matcher, wsgi_matcher
from harness.gateway.policy import Backend, Rollout
from harness.gateway.proxy import Gateway, Stacks
from harness.gateway.rollout import RolloutState, RolloutStore
from harness.gateway.settings import GatewaySettings
from harness.gateway.shadow import build_shadow
from harness.gateway.stats import stats_routes
from harness.gateway.ui import ui_routes
from harness.gateway.upstream import RemoteRoutes, Upstream, UpstreamConfig, parse_routes
from shared import contract

_SHADOW_ENVIRON = "HTTP_" + contract.SHADOW_HEADER.upper().replace("-", "_")


def wsgi_app(app: Any, threads: int) -> ASGIApp:
    """A WSGI app as ASGI through a2wsgi, with `wsgi.input_terminated` set: the body
    a2wsgi hands over ends where the request's does, so chunked uploads reach the app
    whole instead of being read as empty for want of a Content-Length. A request the
    gateway marked as a shadow (`X-Dualstack-Shadow`, which it strips from every client)
    also gets `environ["dualstack.shadow"]` (`contract.SHADOW_ENVIRON_KEY`), the primary's
    request id: a2wsgi does not copy the ASGI scope's extensions to the environ."""

    def terminated(environ: dict[str, Any], start_response: Any) -> Any:
        environ["wsgi.input_terminated"] = True
        shadow = environ.get(_SHADOW_ENVIRON)
        if shadow is not None:
            environ[contract.SHADOW_ENVIRON_KEY] = shadow
        return app(environ, start_response)

    return cast(ASGIApp, WSGIMiddleware(terminated, workers=threads))  # type: ignore[arg-type]


def upstreams(settings: GatewaySettings) -> dict[Backend, Upstream]:
    """The sides `GATEWAY_FLASK_URL` and `GATEWAY_FASTAPI_URL` put behind HTTP: the Flask
    one routed by `GATEWAY_FLASK_ROUTES` (unset: any path), the FastAPI one by its
    `/openapi.json` and `GATEWAY_FASTAPI_ROUTES`."""
    s = settings
    pool = s.upstream_max_in_flight + s.shadow_max_in_flight
    found: dict[Backend, Upstream] = {}
    sides: tuple[tuple[Backend, str | None], ...] = (
        ("flask", s.flask_url),
        ("fastapi", s.fastapi_url),
    )
    for side, url in sides:
        if url is None:
            continue
        config = UpstreamConfig(
            side,
            url,
            s.upstream_connect_timeout_seconds,
            s.upstream_read_timeout_seconds,
            pool,
            s.max_body_bytes,
        )
        if side == "flask":
            found[side] = Upstream(config, routes=RemoteRoutes(parse_routes(s.flask_routes)))
        else:
            extra = parse_routes(s.fastapi_routes) or []
            found[side] = Upstream(
                config,
                openapi=True,
                extra_routes=extra,
                refresh_seconds=s.upstream_routes_refresh_seconds,
            )
    return found


def build_gateway(wsgi: Any, asgi: Any, settings: GatewaySettings) -> Gateway:
    """The gateway in front of a WSGI app and an ASGI app, or of either side running
    elsewhere (upstream mode: `wsgi` or `asgi` None, and its URL in `settings`).

    Route ownership comes from the apps' own routing: a Flask app's url_map, a FastAPI
    app's routes, found through middleware that wraps them; an upstream's from its OpenAPI
    document or the routes listed for it. An app whose routes cannot be read is taken to
    serve every path, so the percentage alone decides. The rollout lives in DynamoDB table
    `settings.state_table`, reached through boto3's usual configuration
    (`AWS_ENDPOINT_URL_DYNAMODB` for the local emulator).
    """
    remote = upstreams(settings)
    for side, app in (("flask", wsgi), ("fastapi", asgi)):
        if (app is None) != (side in remote):  # the composition root sees to it
            raise ValueError(f"the {side} stack needs an app or a URL, and not both")
    flask_up, fastapi_up = remote.get("flask"), remote.get("fastapi")
    ownership = Ownership(
        wsgi_matcher(wsgi) if flask_up is None else flask_up.routes,
        asgi_matcher(asgi) if fastapi_up is None else fastapi_up.routes,
    )
    for upstream in remote.values():
        upstream.routes.add_listener(ownership.changed)
    metrics = GatewayMetrics()
    # The pool holds the primaries' threads and, beside them, the shadows' own.
    threads = settings.wsgi_threads + settings.shadow_wsgi_threads
    stacks = Stacks(
        flask=wsgi_app(wsgi, threads) if flask_up is None else flask_up,
        fastapi=asgi if fastapi_up is None else fastapi_up,
    )
    lifespans: list[tuple[str, ASGIApp]] = [
        (f"the {side} upstream ({upstream.config.url})", upstream)
        for side, upstream in remote.items()
    ]
    if fastapi_up is None:
        lifespans.append((f"the ASGI app ({settings.fastapi_app})", stacks.fastapi))
    shadow = build_shadow({"flask": stacks.flask, "fastapi": stacks.fastapi}, metrics, settings)

    @contextlib.asynccontextmanager
    async def control() -> AsyncIterator[tuple[RolloutState, ASGIApp]]:
        config = AioConfig(
            region_name=settings.aws_region,
            connect_timeout=2,
            read_timeout=2,
            retries={"mode": "standard", "total_max_attempts": 2},
        )
        async with aioboto3.Session().client("dynamodb", config=config) as client:
            initial = Rollout(
                fastapi_percent=settings.fastapi_percent, shadow_percent=settings.shadow_percent
            )
            salt = None if settings.salt is None else settings.salt.get_secret_value()
            state = RolloutState(
                RolloutStore(client, settings.state_table, initial=initial, salt=salt),
                interval=settings.refresh_seconds,
            )
            await state.start()
            fleet = FleetCounters(
                client, settings.state_table, metrics, flush_seconds=settings.fleet_flush_seconds
            )
            webhooks = Webhooks()
            controller = Controller(
                state.store,
                state,
                FleetMeasure(fleet),
                webhooks,
                lease_seconds=settings.controller_lease_seconds,
                # Every worker's last flush of an interval lands within a flush period of
                # its end, plus the write's own time.
                grace_seconds=settings.fleet_flush_seconds + 1.0,
            )
            metrics.registry.register(PlanCollector(state))
            fleet.start()
            controller.start()
            try:
                admin = build_admin(
                    state,
                    tokens=settings.named_tokens(),
                    metrics=metrics.render,
                    about={"override_header": settings.override_header},
                    shadow=shadow,
                    controller=controller,
                    webhooks=webhooks,
                    routes=[*stats_routes(fleet, metrics), *ui_routes()],
                )
                yield state, admin
            finally:
                await controller.stop()
                await fleet.stop()
                await webhooks.close()
                await state.stop()

    return Gateway(
        stacks,
        ownership,
        settings,
        control,
        metrics=metrics,
        shadow=shadow,
        upstream=frozenset(remote),
        lifespans=lifespans,
    )
