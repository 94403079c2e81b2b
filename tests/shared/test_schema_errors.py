"""One pydantic error as one line, shared by every schema (rules, corpus, emulator options)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.schema_errors import explain_error, first_error


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    size: Annotated[int, Field(ge=1, le=9)] = 1
    mode: Literal["a", "b", "c"] = "a"
    side: Literal["left", "right"] = "left"


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    items: list[_Inner] = []
    names: dict[Annotated[str, Field(pattern="^[a-z]+$")], int] = {}
    code: Annotated[str, Field(pattern="^[A-Z]+$")] = "A"


@pytest.mark.parametrize(
    ("data", "skip", "expected"),
    [
        ({"itemz": []}, 0, ("", "unknown field 'itemz' (known: items, names, code)")),
        (
            {"items": [{"sise": 2}]},
            0,
            ("items[0]", "unknown field 'sise' (known: size, mode, side)"),
        ),
        ({"items": [{"sise": 2}]}, 2, ("", "unknown field 'sise' (known: size, mode, side)")),
        ({"items": [{}, {"size": 10}]}, 0, ("items[1].size", "must be at most 9, not 10")),
        ({"items": [{"size": 0}]}, 2, ("size", "must be at least 1, not 0")),
        ({"items": [{"size": True}]}, 2, ("size", "must be an integer, not True")),
        ({"items": [{"mode": "d"}]}, 2, ("", "unknown mode 'd' (one of a, b, c)")),
        ({"items": [{"side": "up"}]}, 2, ("side", "must be left or right, not 'up'")),
        (
            {"names": {"Ab": 1}},
            0,
            ("names", "key 'Ab': string should match pattern '^[a-z]+$', not 'Ab'"),
        ),
        ({"names": {"ab": "1"}}, 0, ("names.ab", "must be an integer, not '1'")),
        ({"code": "a"}, 0, ("code", "string should match pattern '^[A-Z]+$', not 'a'")),
        ({"items": "x"}, 0, ("items", "must be a list, not 'x'")),
        ({"items": ["x"]}, 0, ("items[0]", "must be a mapping, not 'x'")),
        # An unknown field is reported before anything else, misspelt fields being the news.
        ({"code": 5, "itemz": []}, 0, ("", "unknown field 'itemz' (known: items, names, code)")),
    ],
)
def test_explain_error(data: Any, skip: int, expected: tuple[str, str]) -> None:
    with pytest.raises(ValidationError) as caught:
        _Outer.model_validate(data)
    assert explain_error(first_error(caught.value), _Outer, skip) == expected
