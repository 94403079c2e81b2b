"""The gateway's routing policy, as pure functions: which stack serves a request.

Nothing here does I/O or draws randomness itself: `choose` is given the request's facts
and a `draw` source, so the same inputs always give the same decision. Sticky keys are
hashed with SHA-256, never the builtin `hash()`, which is salted per process and would
split one conversation across workers.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Literal, NamedTuple

from shared.schema_errors import show

Backend = Literal["flask", "fastapi"]
BACKENDS: tuple[Backend, ...] = ("flask", "fastapi")
OverrideMode = Literal["off", "open", "token"]
"""Who may pin a request to a stack with the override header: nobody, every client, or a
client that also sends the override token."""
LEGACY_SALT = "dualstack"
"""The salt every deployment routed with before salts were secret: public, so anyone could
work out which stack a conversation lands on. Kept only where a rollout already used it."""
INVALID_OVERRIDE = 'X-Dualstack-Backend must be "flask" or "fastapi"'
BUCKETS = 10_000
"""Sticky keys fall into this many buckets: a percentage with two decimals is exact."""


def validate_percent(value: object) -> float:
    """`value` as a float when it is a real number from 0 to 100; ValueError otherwise.

    Booleans are refused although Python counts them as ints: `true` in a JSON body is a
    mistake, not 1 %. NaN and infinities are refused by the range check.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"percent must be a number from 0 to 100, not {show(value)}")
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number <= 100.0):
        raise ValueError(f"percent must be from 0 to 100, not {show(value)}")
    return number


def validate_prefix(prefix: object) -> str:
    """`prefix` when it is a path prefix a route override can use; ValueError otherwise.

    It must start with `/`, be printable text without whitespace, and not end with `/`
    (unless it is `/`):
    matching is on path-segment boundaries, so `/api/` would never match anything.
    """
    if not isinstance(prefix, str):
        raise ValueError(f"route prefix must be a string, not {show(prefix)}")
    if not prefix.startswith("/"):
        raise ValueError(f"route prefix must start with '/', not {show(prefix)}")
    if any(char.isspace() for char in prefix):
        raise ValueError(f"route prefix must not contain whitespace, not {show(prefix)}")
    if not prefix.isprintable():  # control characters, NUL, lone surrogates
        raise ValueError(f"route prefix must be printable text, not {show(prefix)}")
    if prefix != "/" and prefix.endswith("/"):
        raise ValueError(f"route prefix must not end with '/', not {show(prefix)}")
    return prefix


def _validate_version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"version must be a non-negative integer, not {show(value)}")
    return value


def _matches(prefix: str, path: str) -> bool:
    # On a segment boundary: "/api/v1/chat" covers "/api/v1/chat/x", not "/api/v1/chatty".
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class Rollout:
    """The share of traffic FastAPI gets: a default, and overrides per path prefix; and the
    share of conversations mirrored to the stack that did not serve them (`shadow_percent`).

    Validated on construction (ValueError), so an invalid rollout cannot exist; `routes`
    is copied, sorted by prefix, so the caller's mapping can change without effect.
    """

    fastapi_percent: float
    routes: Mapping[str, float] = field(default_factory=dict)
    version: int = 0
    shadow_percent: float = 0.0

    def __post_init__(self) -> None:
        # Frozen: normalise through object.__setattr__, as dataclasses document.
        object.__setattr__(self, "fastapi_percent", validate_percent(self.fastapi_percent))
        object.__setattr__(self, "shadow_percent", validate_percent(self.shadow_percent))
        routes = {validate_prefix(p): validate_percent(v) for p, v in self.routes.items()}
        object.__setattr__(self, "routes", dict(sorted(routes.items())))
        object.__setattr__(self, "version", _validate_version(self.version))

    def __hash__(self) -> int:
        # Explicit, as `routes` is a dict: equal rollouts (and policies) can key a cache.
        return hash(
            (self.fastapi_percent, tuple(self.routes.items()), self.version, self.shadow_percent)
        )

    def percent_for(self, path: str) -> float:
        """The percentage for `path`: its longest matching route prefix's, else the default."""
        if not self.routes:
            return self.fastapi_percent
        best: str | None = None
        for prefix in self.routes:
            if _matches(prefix, path) and (best is None or len(prefix) > len(best)):
                best = prefix
        return self.fastapi_percent if best is None else self.routes[best]

    def to_json(self) -> dict[str, Any]:
        """The rollout as JSON-ready data, as the admin API shows it."""
        return {
            "fastapi_percent": self.fastapi_percent,
            "routes": dict(self.routes),
            "version": self.version,
            "shadow_percent": self.shadow_percent,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rollout:
        """The rollout `to_json` gave; ValueError when `data` is not one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a rollout must be a JSON object, not {show(data)}")
        unknown = set(data) - {"fastapi_percent", "routes", "version", "shadow_percent"}
        if unknown:
            raise ValueError(f"unknown rollout fields: {', '.join(sorted(map(str, unknown)))}")
        if "fastapi_percent" not in data:
            raise ValueError("a rollout needs fastapi_percent")
        routes = data.get("routes", {})
        if not isinstance(routes, Mapping):
            raise ValueError(f"routes must be a JSON object, not {show(routes)}")
        return cls(
            fastapi_percent=data["fastapi_percent"],
            routes=routes,
            version=data.get("version", 0),
            shadow_percent=data.get("shadow_percent", 0.0),
        )


class Facts(NamedTuple):
    """What the gateway knows about a request when it must pick a stack.

    A named tuple rather than a frozen dataclass: one is built per request, and a tuple
    is several times cheaper to build."""

    path: str
    owners: frozenset[Backend]
    """Stacks that serve this path; empty when neither does (both would answer 404)."""
    override: str | None = None
    """The raw `X-Dualstack-Backend` request header, if any."""
    sticky_key: str | None = None
    """The conversation's key (its session id, else the user id), if any."""
    override_token: bytes | None = None
    """The raw `X-Dualstack-Override-Token` request header, if any (read only when the
    override header is there)."""


class InvalidOverride(ValueError):
    """The override header counts for this request, and names no stack: a 400."""


@dataclass(frozen=True)
class Policy:
    """The rollout and the knobs that decide how requests are split.

    The salt and the token are secrets: left out of the repr, so a logged policy shows
    neither."""

    rollout: Rollout
    salt: str = field(repr=False)
    override: OverrideMode = "off"
    override_token: bytes | None = field(default=None, repr=False)
    """With `override` "token": the header value that makes the override count."""

    def __post_init__(self) -> None:
        if self.override == "token" and not self.override_token:
            raise ValueError('override "token" needs an override token')

    @property
    def override_enabled(self) -> bool:
        """Whether some request can be pinned by the override header."""
        return self.override != "off"

    def override_counts(self, token: bytes | None) -> bool:
        """Whether the override header counts for a request that sent `token` (None: no
        `X-Dualstack-Override-Token`). Compared in constant time, so the time taken says
        nothing of how much of a wrong token was right."""
        if self.override == "open":
            return True
        if self.override == "off" or token is None or self.override_token is None:
            return False
        return hmac.compare_digest(token, self.override_token)


class Decision(NamedTuple):
    """The stack chosen, why, and the sticky bucket when one decided it."""

    backend: Backend
    reason: Literal["owner", "override", "sticky", "random"]
    bucket: int | None = None


# The decisions that carry no bucket, made once: `choose` runs on every request.
_OWNER = {b: Decision(b, "owner") for b in BACKENDS}
_OVERRIDE = {b: Decision(b, "override") for b in BACKENDS}
_RANDOM = {b: Decision(b, "random") for b in BACKENDS}


def bucket(salt: str, key: str) -> int:
    """The sticky bucket (0 to `BUCKETS` - 1) of `key`: the same in every process.

    `surrogatepass` so that any `str` hashes, lone surrogates included.
    """
    digest = hashlib.sha256(f"{salt}\x00{key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def shadow_salt(salt: str) -> str:
    """The salt that samples conversations for shadowing, derived from the routing salt: as
    secret as it, and another, so the conversations shadowed are independent of the split
    (a shadowed conversation is as likely to be served by either stack)."""
    return hashlib.sha256(f"{salt}\x00shadow".encode("utf-8", "surrogatepass")).hexdigest()


def mirrors(salt: str, key: str | None, percent: float, draw: Callable[[], float]) -> bool:
    """Whether a request is shadowed at `percent`: by its conversation key's bucket under
    `salt` (`shadow_salt` of the routing salt), so a conversation is shadowed whole and
    raising the share only adds conversations; a request without a key by `draw()`."""
    if key:
        return bucket(salt, key) < round(percent * 100, 6)
    return draw() * 100 < percent


def _backend(fastapi: bool) -> Backend:
    return "fastapi" if fastapi else "flask"


def choose(policy: Policy, facts: Facts, draw: Callable[[], float]) -> Decision:
    """Pick the stack for one request.

    In order: the only stack that serves the path; the override header, where it counts
    (`Policy.override_counts`), which must then say exactly `flask` or `fastapi` (spaces and
    tabs around it aside, as HTTP allows) or `InvalidOverride` is raised; the sticky key's
    bucket, FastAPI iff `bucket < percent * 100` (float noise
    rounded off, so 0.07 % is exactly 7 buckets), so raising the percentage only moves keys
    from Flask to FastAPI; else `draw()` (uniform in [0, 1)), FastAPI iff
    `draw() * 100 < percent`. `draw` is called only in that last case.
    """
    owners = facts.owners
    if len(owners) == 1:
        for owner in owners:
            return _OWNER[owner]
    if facts.override is not None and policy.override_counts(facts.override_token):
        wanted = facts.override.strip(" \t")
        if wanted not in _OVERRIDE:
            raise InvalidOverride(INVALID_OVERRIDE)
        return _OVERRIDE[wanted]
    percent = policy.rollout.percent_for(facts.path)
    if facts.sticky_key:
        slot = bucket(policy.salt, facts.sticky_key)
        # Rounded: 0.07 * 100 is 7.000000000000001 in floats, which would let bucket 7 in.
        # Rounding is monotonic, so a higher percentage still never moves a key back.
        return Decision(_backend(slot < round(percent * 100, 6)), "sticky", slot)
    return _RANDOM["fastapi" if draw() * 100 < percent else "flask"]
