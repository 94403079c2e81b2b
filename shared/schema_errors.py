"""One pydantic validation error as one line, for every schema validated with pydantic (the
parity rules and corpus, the emulator's options): `where: problem`, the unknown or missing
field, the wrong type or the bound named in words a person reads."""

from __future__ import annotations

from collections.abc import Callable, Collection
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import ValidationError
from pydantic_core import ErrorDetails

_SHOWN = 60
"""Longest rendering of a rejected value in a message (it may be huge)."""


def show(value: object) -> str:
    """`value` as a message shows it: its repr, cut short when long (it may be huge)."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


_TYPES = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "dataclass_type": "a mapping",
}
_BOUNDS = {
    "greater_than": ("greater than", "gt"),
    "greater_than_equal": ("at least", "ge"),
    "less_than": ("less than", "lt"),
    "less_than_equal": ("at most", "le"),
}
UNKNOWN_FIELD = ("extra_forbidden", "unexpected_keyword_argument", "invalid_key")
"""The error types of a key the schema does not know."""
_MISSING = ("missing", "missing_argument", "missing_keyword_only_argument")


def first_error(error: ValidationError) -> ErrorDetails:
    """The one of `error`'s errors to report: the first unknown field, else the first error
    (a misspelt field is also missing under its right name; the spelling is the news)."""
    errors = error.errors()
    return next((item for item in errors if item["type"] in UNKNOWN_FIELD), errors[0])


def explain_error(error: ErrorDetails, schema: Any, skip: int = 0) -> tuple[str, str]:
    """One error of a pydantic `ValidationError` as `(where, problem)`, for a one-line message.

    `where` is the error's location after its first `skip` parts (which the caller names its
    own way: a file's case, a rules section's entry), written `a.b[0].c`, or "" when the
    problem is the entry's own; `schema` is the type that was validated, whose field names an
    unknown field's problem lists. An unknown or missing field, or a value outside a long
    list of choices, is named in the problem: `unknown field 'heders' (known: ...)`.
    """
    loc, kind = error["loc"], error["type"]
    ctx, given = error.get("ctx", {}), show(error.get("input"))
    where, name, prefix = loc[skip:], loc[-1] if loc else None, ""
    if len(where) >= 2 and where[-1] == "[key]":  # a mapping's key was wrong, not its value
        where, name, prefix = where[:-2], None, f"key {show(where[-2])}: "
    choices = get_args(_type_at(schema, loc)) if kind == "literal_error" else ()
    if kind in UNKNOWN_FIELD and name is not None:
        known = ", ".join(_fields(_type_at(schema, loc[:-1])))
        where, problem = where[:-1], f"unknown field {show(name)}"
        problem += f" (known: {known})" if known else ""
    elif kind in _MISSING and name is not None:
        where, problem = where[:-1], f"missing {show(name)}"
    elif len(choices) > 2 and isinstance(name, str):
        # A long list of choices reads best after the value that is not one of them.
        allowed = ", ".join(map(str, choices))
        where, problem = where[:-1], f"unknown {name} {given} (one of {allowed})"
    elif choices:
        problem = f"must be {' or '.join(map(str, choices))}, not {given}"
    elif kind in ("value_error", "assertion_error"):
        problem = str(ctx["error"])
    elif kind in _TYPES:
        problem = f"must be {_TYPES[kind]}, not {given}"
    elif kind in _BOUNDS:
        words, bound = _BOUNDS[kind]
        limit = ctx[bound]
        if isinstance(limit, float) and limit.is_integer():  # 0, not 0.0, for a float field
            limit = int(limit)
        problem = f"must be {words} {limit}, not {given}"
    elif kind == "too_short" and ctx.get("field_type") == "List":
        problem = "must be a non-empty list"
    else:
        message = error["msg"]
        problem = f"{message[:1].lower()}{message[1:]}, not {given}"
    place = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in where)
    return place.removeprefix("."), prefix + problem


def _bare(kind: Any) -> Any:
    # Annotated[X, ...] and X | None are X, as far as field names and literals go.
    while True:
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        elif get_origin(kind) in (Union, UnionType):
            kind = next(arg for arg in get_args(kind) if arg is not NoneType)
        else:
            return kind


def _fields(kind: Any) -> dict[str, Any]:
    # The fields of a pydantic model or dataclass by the name the input uses (its alias).
    found = getattr(kind, "__pydantic_fields__", None)
    if not isinstance(found, dict):
        return {}
    return {info.alias or name: info.annotation for name, info in found.items()}


def _type_at(schema: Any, loc: tuple[int | str, ...]) -> Any:
    # Down the schema along an error's location: a field, a list's item, a mapping's value.
    kind = _bare(schema)
    for part in loc:
        fields = _fields(kind)
        if isinstance(part, str) and part in fields:
            kind = fields[part]
        else:
            args = get_args(kind)
            kind = (args[0] if isinstance(part, int) else args[-1]) if args else None
        kind = _bare(kind)
    return kind


def one_line(
    error: BaseException,
    name: Callable[[str], str] = str.upper,
    secret: Collection[str] = (),
) -> str:
    """Any error as one line for a person: a pydantic error as `NAME: message (got value)`
    for each field at fault, `name` turning a field into what the person set (an environment
    variable: upper case by default), the value left out for the `secret` fields; any other
    error its text, whitespace squeezed, or its type when it has none."""
    if isinstance(error, ValidationError):
        problems = []
        for problem in error.errors():
            field, *rest = [str(part) for part in problem["loc"]] or [error.title]
            where = ".".join([name(field), *rest])
            got = "" if field in secret else f" (got {show(problem.get('input'))})"
            problems.append(f"{where}: {problem['msg']}{got}")
        return "; ".join(problems)
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
