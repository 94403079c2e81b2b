"""The live progress line on stderr: redrawn in place on a terminal, a line per run
otherwise (so a CI log stays readable)."""

from __future__ import annotations

import time
from typing import TextIO

from load_test.engine import Counters
from load_test.stats import Summary


class ProgressLine:
    """The progress line of one run, labelled `label`, planned to last about `planned_s`
    seconds: an `engine.ProgressCallback`, called with the live counters."""

    def __init__(self, stream: TextIO, label: str, planned_s: float | None) -> None:
        self.stream = stream
        self.label = label
        self.planned_s = planned_s
        self.live = stream.isatty()
        self._last = (time.monotonic(), 0)
        self._rate = 0.0
        if not self.live:
            self._write(f"{label}: running\n")

    def __call__(self, counters: Counters) -> None:
        """Redraw the line (on a terminal) from the live counters."""
        now = time.monotonic()
        then, ok_then = self._last
        if now - then >= 0.25:
            self._rate = (counters.ok - ok_then) / (now - then)
            self._last = (now, counters.ok)
        if not self.live:
            return
        elapsed = now - counters.started
        planned = f"/{self.planned_s:.0f}" if self.planned_s else ""
        self._write(
            f"\r\x1b[K{self.label}  {elapsed:5.1f}{planned} s  sent {counters.sent}  "
            f"ok {counters.ok}  errors {counters.errors}  in flight {counters.in_flight}  "
            f"{self._rate:7.1f} req/s"
        )

    def finish(self, summary: Summary) -> None:
        """Replace the live line by the run's result."""
        errors = ", ".join(f"{n} {kind}" for kind, n in summary.errors.items() if n)
        lead = "\r\x1b[K" if self.live else ""
        if summary.ok:
            figures = (
                f"{summary.rps:.1f} req/s, p50 {summary.latency.p50_ms:.0f} ms, "
                f"p99 {summary.latency.p99_ms:.0f} ms"
            )
        else:
            figures = "no successful answer"
        self._write(f"{lead}{self.label}: {figures}, {summary.ok} ok, {errors or 'no'} errors\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def say(stream: TextIO, text: str) -> None:
    """A status line."""
    stream.write(text + "\n")
    stream.flush()
