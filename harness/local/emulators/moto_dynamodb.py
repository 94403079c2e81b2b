"""moto's DynamoDB as one WSGI app, without the per-request costs that are not DynamoDB's.

Imported only when a ``DynamoDBEmulator`` starts: it pulls in moto, Flask and every moto
backend. ``build_app()`` returns the app the emulator serves:

- DynamoDB requests (``X-Amz-Target: DynamoDB_20120810.*``) go straight to moto's
  ``DynamoHandler``, skipping moto's all-services dispatcher (which matches the request
  against every service) and Flask's request context. The handler, its parsing, its
  expression evaluation and its backend are moto's own.
- Item attribute values (``AttributeValue`` shapes) are serialized by a direct walk that
  yields exactly what moto's model-driven serializer yields for them: that serializer looks
  up each of the ten possible members of every value of every item through six alias
  providers, which made it most of the cost of a ``GetItem`` of a chat session.
- Everything else (``/moto-api``, DynamoDB Streams, other services) goes to moto's usual
  dispatcher.
- One lock around every request: moto's backend takes none, so two concurrent conditional
  updates of one item could otherwise both pass (seen: 50 concurrent turns counted as 52).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterable, MutableMapping
from enum import Enum
from typing import Any

from botocore.exceptions import ClientError
from botocore.model import OperationNotFoundError
from flask import Response
from moto import settings
from moto.core.model import OperationModel, StructureShape
from moto.core.request import Request
from moto.core.responses import ActionContext, ActionResult
from moto.core.serialize import JSONSerializer, get_serializer_class
from moto.core.utils import get_service_model
from moto.dynamodb.responses import DynamoHandler
from moto.moto_api import recorder
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

__all__ = ["AtomicApp", "DynamoDBApp", "build_app"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_TARGET_PREFIX = "DynamoDB_20120810."
_STRINGS = ("S", "N")
_STRING_SETS = ("SS", "NS")
# The members of botocore's AttributeValue shape, in the order moto's serializer writes them.
_MEMBERS = ("S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL")
_TYPES = frozenset(_MEMBERS)


class AtomicApp:
    """Real DynamoDB applies each request to an item atomically, conditions included; moto's
    backend takes no lock, so two concurrent conditional updates of one item can both pass
    (seen: 50 concurrent turns counted as 52). One lock around every request restores the
    guarantee the stacks' session writes rely on."""

    def __init__(self, app: WSGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            return list(self._app(environ, start_response))


class _AttributeValueSerializer(JSONSerializer):
    """moto's JSON serializer, with attribute values written by `_attribute_value`.

    Anything that is not a plain attribute-value dict (keys among the ten type names) still
    takes moto's path, and so does everything once any moto service has registered a response
    transformer (they match on key paths), so the output is moto's in every case.
    """

    def _serialize_type_structure(
        self, serialized: MutableMapping[str, Any], value: Any, shape: StructureShape, key: str
    ) -> None:
        transformers = getattr(self._value_picker, "response_transformers", None)
        if key and shape.name == "AttributeValue" and not transformers:
            fast = _attribute_value(value)
            if fast is not _SLOW:
                serialized[key] = fast
                return
        super()._serialize_type_structure(serialized, value, shape, key)


class _Slow:
    """Marks a value `_attribute_value` leaves to moto's serializer."""


_SLOW: Any = _Slow()


def _base64(value: Any) -> str:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return base64.b64encode(raw).strip().decode("utf-8")


def _string(value: Any) -> Any:
    # moto's string serializer: an Enum's value, then str() of anything but None, {} and [].
    if type(value) is str:
        return value
    if isinstance(value, Enum):
        value = value.value
    return str(value) if value not in [None, {}, []] else value


def _attribute_value(value: Any) -> Any:
    """What moto's serializer makes of one attribute value, or `_SLOW` when unsure."""
    if type(value) is not dict or not value.keys() <= _TYPES:
        return _SLOW
    out: dict[str, Any] = {}
    for name in _MEMBERS:
        member = value.get(name)
        if member is None:
            continue
        if name in _STRINGS:
            out[name] = _string(member)
        elif name in _STRING_SETS:
            out[name] = [_string(v) for v in member]
        elif name == "B":
            out[name] = _base64(member)
        elif name == "BS":
            out[name] = [_base64(v) for v in member]
        elif name == "M":
            if type(member) is not dict:
                return _SLOW
            entries: dict[str, Any] = {}
            for k, v in member.items():
                if v is None:
                    continue
                converted = _attribute_value(v)
                if converted is _SLOW:
                    return _SLOW
                entries[k] = converted
            out[name] = entries
        elif name == "L":
            if type(member) is not list:
                return _SLOW
            items: list[Any] = []
            for v in member:
                converted = _attribute_value(v) if v is not None else None
                if converted is _SLOW:
                    return _SLOW
                items.append(converted)
            out[name] = items
        else:  # NULL and BOOL: booleans, written as they are
            out[name] = member
    return out


class _DynamoHandler(DynamoHandler):
    """moto's handler; only its results go through `_AttributeValueSerializer`."""

    def serialized(self, action_result: ActionResult) -> tuple[int, dict[str, Any], Any]:
        # moto's `BaseResponse.serialized`, with the serializer class swapped.
        service_model = get_service_model(self.boto3_service_name)
        try:
            operation_model = service_model.operation_model(self._get_action())
        except OperationNotFoundError:
            assert isinstance(action_result.result, Exception)
            operation_model = OperationModel({}, service_model)
        protocol = self.determine_response_protocol(service_model)
        serializer_cls = get_serializer_class(service_model.service_name, protocol)
        if serializer_cls is JSONSerializer:
            serializer_cls = _AttributeValueSerializer
        context = ActionContext(service_model, operation_model, serializer_cls, self)
        status_code, headers, body = action_result.execute_result(context)
        headers.update(self.response_headers)
        return status_code, headers, body


class DynamoDBApp:
    """DynamoDB requests to moto's handler directly; anything else to ``fallback``."""

    def __init__(self, fallback: WSGIApp) -> None:
        self._fallback = fallback

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not _is_plain_dynamodb(environ):
            return self._fallback(environ, start_response)
        return self._dispatch(environ)(environ, start_response)

    @staticmethod
    def _dispatch(environ: dict[str, Any]) -> Response:
        # What moto's Flask view (`convert_to_flask_response`) does, minus Flask's context.
        request = Request(environ)
        request.from_wsgi_server = True
        recorder._record_request(request)
        try:
            status, headers, content = _DynamoHandler.dispatch(
                request, request.raw_url, dict(request.headers)
            )
        except ClientError as exc:
            status, headers, content = 400, {}, exc.response["Error"]["Message"]
        response = Response(response=content, status=status, headers=headers)
        if not settings.DISABLE_GLOBAL_CORS:
            # What flask_cors adds to moto's app for a request without an Origin.
            response.headers["Access-Control-Allow-Origin"] = "*"
        return response


def _is_plain_dynamodb(environ: dict[str, Any]) -> bool:
    # A browser's (CORS) request, a stream or an old API version takes moto's usual path.
    return (
        environ.get("REQUEST_METHOD") == "POST"
        and environ.get("PATH_INFO") == "/"
        and environ.get("HTTP_X_AMZ_TARGET", "").startswith(_TARGET_PREFIX)
        and "HTTP_ORIGIN" not in environ
    )


def build_app() -> AtomicApp:
    """The app the emulator serves: `DynamoDBApp` over moto's dispatcher, under one lock."""
    return AtomicApp(DynamoDBApp(DomainDispatcherApplication(create_backend_app)))
