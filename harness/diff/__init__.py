"""The diff engine: two responses in, every difference a client could notice out, each classed
by severity under a rules file. Pure and free of I/O; the parity suite and the gateway's
shadow comparisons judge responses with it.

Four modules, each importing only the ones before it: `model` (the vocabulary: responses,
differences, kinds, severities, paths), `compare` (the raw differences of two responses) and
`rules` (what differs by design), then `classify` (`diff`: compare, then class by the rules
and the noise check).
"""

from harness.diff.classify import NOISY_KINDS, diff
from harness.diff.compare import DEFAULT_HEADERS, LIST_HEADERS, compare, noisy_paths
from harness.diff.model import (
    HEADER_ORDER_REASON,
    KINDS,
    LONGER_LIST_REASON,
    MAX_DECODED_BYTES,
    NOISE_REASON,
    SEVERITIES,
    Difference,
    Kind,
    Response,
    Segment,
    Severity,
    Wildcard,
    decode_body,
    flatten,
    header_tokens,
    is_unexpected,
    json_type,
    key_segment,
    parse_path,
    summarize,
)
from harness.diff.rules import (
    CHECKS,
    DEFAULT_MAX_AGE_SECONDS,
    FAILED_CHECK,
    VOLATILE_REASON,
    Expected,
    Rules,
    RulesError,
    RuleUsage,
    Volatile,
    check_volatile,
    compile_pattern,
    describe,
    matches,
    parse_rules,
)

__all__ = [
    "CHECKS",
    "DEFAULT_HEADERS",
    "DEFAULT_MAX_AGE_SECONDS",
    "FAILED_CHECK",
    "HEADER_ORDER_REASON",
    "KINDS",
    "LIST_HEADERS",
    "LONGER_LIST_REASON",
    "MAX_DECODED_BYTES",
    "NOISE_REASON",
    "NOISY_KINDS",
    "SEVERITIES",
    "VOLATILE_REASON",
    "Difference",
    "Expected",
    "Kind",
    "Response",
    "RuleUsage",
    "Rules",
    "RulesError",
    "Segment",
    "Severity",
    "Volatile",
    "Wildcard",
    "check_volatile",
    "compare",
    "compile_pattern",
    "decode_body",
    "describe",
    "diff",
    "flatten",
    "header_tokens",
    "is_unexpected",
    "json_type",
    "key_segment",
    "matches",
    "noisy_paths",
    "parse_path",
    "parse_rules",
    "summarize",
]
