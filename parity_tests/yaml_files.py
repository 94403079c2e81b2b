"""The suite's YAML files (the corpus, the rules) read with one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.diff import Rules, RulesError, parse_rules


def parse_yaml(text: str, source: str, error: type[ValueError] = ValueError) -> Any:
    """The parsed content of YAML `text` read from `source`; `error` (one line, naming the
    source and where the YAML broke) when it cannot be parsed."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise error(f"{source}: invalid YAML{where}: {problem}") from exc


def read_yaml(path: str | Path, error: type[ValueError] = ValueError) -> Any:
    """The parsed content of YAML file `path`; `error` (one line, naming the file and where
    the YAML broke) when it cannot be read or parsed."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read: {exc}") from exc
    return parse_yaml(text, str(path), error)


def load_rules(path: str | Path) -> Rules:
    """The rules in YAML file `path`; RulesError (one line, naming the file) when it cannot be
    read or parsed, or breaks the schema."""
    return parse_rules(read_yaml(path, RulesError), str(path))
