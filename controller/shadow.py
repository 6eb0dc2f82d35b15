"""The latest shadow report (what acting would have changed over the last week, computed by
:mod:`controller.replay.shadow`), held for the API and the metrics; the service's job
refreshes it every hour."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.errors import ConfigError

__all__ = ["ShadowState"]


@dataclass
class ShadowState:
    """The latest report, or the one line saying why there is none yet."""

    report: dict[str, Any] | None = None
    error: str | None = "not computed yet: the first report comes a minute after start, then every hour"
    at: datetime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def refresh(self, compute: Callable[[], dict[str, Any]], now: datetime) -> None:
        """Replace the report with ``compute()``'s; a :class:`ConfigError` (too few decisions
        kept, no data) replaces it with its message."""
        try:
            report: dict[str, Any] | None = compute()
            error = None
        except ConfigError as exc:
            report, error = None, str(exc)
        with self._lock:
            self.report, self.error, self.at = report, error, now

    def latest(self) -> tuple[dict[str, Any] | None, str | None]:
        with self._lock:
            return self.report, self.error
