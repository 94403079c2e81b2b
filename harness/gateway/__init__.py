"""The gateway: one ASGI app in front of a WSGI app (mounted through a2wsgi) and an ASGI app,
routing a share of traffic to each, sticky per conversation, adjustable at run time.

`build_gateway(wsgi, asgi, settings)` builds it from two app objects; `gateway.py` at the top
of the repository is the composition root that builds it from `GATEWAY_*` settings.
"""

from harness.gateway.apps import AppLoadError, load_app
from harness.gateway.build import build_gateway, wsgi_app
from harness.gateway.proxy import Gateway
from harness.gateway.settings import GatewaySettings

__all__ = ["AppLoadError", "Gateway", "GatewaySettings", "build_gateway", "load_app", "wsgi_app"]
