"""Capture live traffic for replay: requests as JSON lines that `python -m parity_tests
--corpus FILE.jsonl` replays (`parity_tests.capture` reads the format).

Conversations are sampled whole (`percent`, by the conversation key with a salt of their
own). A request is written as the gateway forwarded it (a minted `session_id` included), with
the primary's status; credentials (`Authorization`, `Cookie`, tokens) are never written, and
the body fields named by `redact` (JSON paths) hold keyed pseudonyms: the same value gives the
same pseudonym, so conversations still group, and no raw value is stored.

Writing is off the request path: `offer` puts the record on a bounded queue (a full queue
drops it, counted) and a writer thread appends it, rotating the file past `max_bytes` (the
last `backups` rotated files kept, `FILE.1.jsonl` the newest).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.diff import parse_path
from harness.gateway.policy import BUCKETS, bucket

NEVER_WRITTEN = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-amz-security-token",
        "x-dualstack-override-token",
    }
)
"""Headers a capture never holds: credentials, whatever their value."""


@dataclass(frozen=True)
class CaptureConfig:
    """Where and how much to capture (`GATEWAY_CAPTURE_*`)."""

    path: Path
    percent: float = 100.0
    redact: tuple[str, ...] = ()
    max_bytes: int = 64 * 1024 * 1024
    backups: int = 3
    queue_size: int = 1024


@dataclass
class CaptureStats:
    """What the writer did: records written, dropped (queue full), rotations."""

    written: int = 0
    dropped: int = 0
    rotations: int = 0
    failed: int = 0
    """Records that could not be written (a full disk, a removed directory)."""


@dataclass
class CaptureWriter:
    """Samples conversations and writes their requests off the request path."""

    config: CaptureConfig
    secret: str
    """The deployment's secret (the routing salt): keys the sample and the pseudonyms, so
    neither can be worked out from outside."""
    clock: Callable[[], float] = time.time
    stats: CaptureStats = field(default_factory=CaptureStats)

    def __post_init__(self) -> None:
        self._sample_salt = hashlib.sha256(f"{self.secret}\x00capture".encode()).hexdigest()
        self._pseudonym_key = hashlib.sha256(f"{self.secret}\x00pseudonym".encode()).digest()
        self._redact = [parse_path(p) for p in self.config.redact]
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(self.config.queue_size)
        self._thread: threading.Thread | None = None

    # -- on the request path: cheap, never blocking ---------------------------------------

    def wants(self, key: str | None) -> bool:
        """Whether the conversation `key` is captured (a request without one: a draw)."""
        share = self.config.percent * BUCKETS / 100
        if key is None:
            return random.random() * BUCKETS < share
        return bucket(self._sample_salt, key) < share

    def offer(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes | None,
        key: str | None,
        status: int,
        arrived: float | None = None,
    ) -> bool:
        """Queue one request for writing; False (and counted) when the queue is full.
        `arrived`: when the request came (the clock's time when None); it orders a
        conversation's requests, whose answers may complete in another order."""
        record = {
            "time": self.clock() if arrived is None else arrived,
            "method": method,
            "path": path + (f"?{query.decode('latin-1')}" if query else ""),
            "headers": headers,
            "body": body,
            "key": key,
            "status": status,
        }
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.stats.dropped += 1
            return False
        return True

    # -- the writer thread ----------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (the file's folder is created)."""
        self.config.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while (record := self._queue.get()) is not None:
            try:
                self._write(self.line(record))
            except OSError:
                self.stats.failed += 1

    def line(self, record: dict[str, Any]) -> str:
        """The JSON line for a queued record: headers filtered, body redacted."""
        out: dict[str, Any] = {
            "time": record["time"],
            "method": record["method"],
            "path": record["path"],
            "headers": [
                [name.decode("latin-1"), value.decode("latin-1")]
                for name, value in record["headers"]
                if name.lower().decode("latin-1") not in NEVER_WRITTEN
            ],
            "key": record["key"],
            "status": record["status"],
        }
        body: bytes | None = record["body"]
        if body:
            out.update(self._body(body))
        return json.dumps(out, ensure_ascii=False)

    def _body(self, body: bytes) -> dict[str, str]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return {"body_base64": base64.b64encode(body).decode("ascii")}
        if self._redact:
            with contextlib.suppress(ValueError):
                value = json.loads(text)
                if isinstance(value, dict):
                    for path in self._redact:
                        self._pseudonymise(value, path)
                    text = json.dumps(value, ensure_ascii=False)
        return {"body": text}

    def _pseudonymise(self, value: Any, path: Sequence[Any]) -> None:
        *parents, last = path
        for segment in parents:
            if not _holds(value, segment):
                return
            value = value[segment]
        if _holds(value, last):
            value[last] = self.pseudonym(value[last])

    def pseudonym(self, value: Any) -> Any:
        """A keyed, stable stand-in for `value` (None stays None): `p-` and 24 hex digits,
        a valid contract id wherever an id was."""
        if value is None:
            return None
        raw = json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return "p-" + hmac.new(self._pseudonym_key, raw, hashlib.sha256).hexdigest()[:24]

    def _write(self, line: str) -> None:
        path = self.config.path
        data = (line + "\n").encode("utf-8", "surrogatepass")
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size + len(data) > self.config.max_bytes:
                self._rotate()
        with path.open("ab") as out:
            out.write(data)
        self.stats.written += 1

    def _rotate(self) -> None:
        path = self.config.path
        backups = self.config.backups
        numbered = [path.with_suffix(f".{n}{path.suffix}") for n in range(1, backups + 1)]
        if backups:
            numbered[-1].unlink(missing_ok=True)
            for older, newer in zip(reversed(numbered[1:]), reversed(numbered[:-1]), strict=True):
                if newer.exists():
                    newer.replace(older)
            path.replace(numbered[0])
        else:
            path.unlink()
        self.stats.rotations += 1


def _holds(value: Any, segment: Any) -> bool:
    """Whether JSON `value` has the key or index `segment` (a path's wildcards match none)."""
    if isinstance(value, dict):
        return isinstance(segment, str) and segment in value
    if isinstance(value, list):
        return isinstance(segment, int) and -len(value) <= segment < len(value)
    return False
