"""The controller's errors, under the one root :class:`DiurnalError` (drawn in full in
:mod:`collectors.errors`, where the root lives so that the collectors' errors share it), and
:class:`ErrorThrottle`, which logs an error that repeats without flooding the log."""

import logging
import time

from collectors.errors import DiurnalError

__all__ = ["ConfigError", "DiurnalError", "ErrorThrottle", "NotReadyError", "RepeatFilter"]

log = logging.getLogger("diurnal")


class ConfigError(DiurnalError):
    """A setting is missing or invalid. The message names the field and the fix."""


class NotReadyError(DiurnalError):
    """The requested value does not exist yet (e.g. no decision has been made)."""


class RepeatFilter(logging.Filter):
    """Lets each repeating log message (same logger and template) through once per ``every``
    seconds, saying how many were held back: for libraries' warnings that diurnal does not
    raise itself (the scheduler's "skipped: maximum number of running instances")."""

    def __init__(self, every: float = 60.0, clock: object = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()  # type: ignore[operator]
        last, held = self._seen.get(key, (-float("inf"), 0))
        if now - last < self.every:
            self._seen[key] = (last, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self.every:.0f}s)"
        return True


class ErrorThrottle:
    """Logs the first failure of a kind, again when its detail changes, then at most once per
    ``every`` seconds (never again while it stays the same: ``every=None``), and once when it
    recovers: a router that is down, or a prewarm with no cluster, should not flood the log.
    ``failures`` counts the attempts (the caller's counter metric counts them too)."""

    def __init__(self, what: str, every: float | None = 60.0, clock: object = time.monotonic, *,
                 meanwhile: str = "retrying") -> None:
        self.what = what
        self.every = every
        self.meanwhile = meanwhile
        self._clock = clock
        self.failures = 0
        self._last_log = -float("inf")
        self._detail: str | None = None

    def failed(self, detail: str) -> None:
        self.failures += 1
        now = self._clock()  # type: ignore[operator]
        if self.failures == 1:
            repeats = ("repeats are not logged until it changes or recovers" if self.every is None
                       else f"repeats are logged every {self.every:.0f}s")
            log.warning("%s failed: %s (%s; %s)", self.what, detail, self.meanwhile, repeats)
        elif detail != self._detail:
            log.warning("%s still failing after %d attempts, now with: %s", self.what, self.failures, detail)
        elif self.every is not None and now - self._last_log >= self.every:
            log.warning("%s still failing after %d attempts: %s", self.what, self.failures, detail)
        else:
            return
        self._last_log = now
        self._detail = detail

    def succeeded(self) -> None:
        if self.failures:
            log.info("%s recovered after %d failed attempts", self.what, self.failures)
        self.failures = 0
        self._detail = None
