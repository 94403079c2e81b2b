"""Apps named by import string, as gunicorn and uvicorn name them: `package.module:name`,
the name a dotted attribute path, and a trailing `()` calling a factory
(`legacy_flask:create_app()`). The one loader of the project: the gateway mounts its stacks
with it, the parity suite and the load test name the stacks with it."""

from __future__ import annotations

import importlib
from typing import Any

from shared.schema_errors import one_line


class AppLoadError(ValueError):
    """An import string that names nothing usable; the message is one line naming it."""


def import_object(spec: str) -> Any:
    """The object `module:attribute` names (the attribute may be dotted); AppLoadError when
    the string is malformed, the module fails to import, or the attribute is missing."""
    return _find(spec, spec)


def _find(spec: str, target: str) -> Any:
    # `target` is what is looked up, `spec` the string as the user wrote it, which every
    # message names (with a factory's `()`, as in the setting).
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise AppLoadError(f"{spec!r} is not an import string 'module:attribute'")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:  # a module failing at import is as unusable as a missing one
        raise AppLoadError(f"cannot import {module_name!r} for {spec!r}: {one_line(exc)}") from None
    for name in attribute.split("."):
        try:
            found = getattr(found, name)
        except AttributeError:
            raise AppLoadError(
                f"{spec!r}: {module_name!r} has no attribute {attribute!r}"
            ) from None
        except Exception as exc:  # a module `__getattr__` that builds the app lazily, and fails
            raise AppLoadError(f"{spec!r}: getting {name!r} failed: {one_line(exc)}") from None
    return found


def load_app(spec: str) -> Any:
    """The app `spec` names, gunicorn's convention: with a trailing `()` the named factory is
    called with no arguments and its result is the app. AppLoadError on any failure, the
    factory's own included, and when what it names is not callable (not an app)."""
    call = spec.endswith("()")
    found = _find(spec, spec.removesuffix("()"))
    if call:
        if not callable(found):
            raise AppLoadError(f"{spec!r}: {spec.removesuffix('()')!r} is not callable")
        try:
            found = found()
        except Exception as exc:
            raise AppLoadError(f"{spec!r}: the factory failed: {one_line(exc)}") from None
    # WSGI and ASGI apps are callables: anything else would fail on the first request, far
    # from the setting that named it.
    if not callable(found):
        what = "the factory returned" if call else "it names"
        raise AppLoadError(f"{spec!r}: {what} a {type(found).__name__}, not an app")
    return found
