"""Manual overrides: pins on single knobs with an expiry, kept in ``data_dir/overrides.json``
(written atomically, so a restart keeps them and a crash never leaves half a file)."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from controller.actuators.atomic import atomic_write
from policies import Override

__all__ = ["OverrideStore"]


class OverrideStore:
    """Thread-safe; expired overrides are dropped when read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._items: dict[str, Override] = {}
        if path.exists():
            for raw in json.loads(path.read_text()):
                o = Override(raw["id"], raw["knob"], float(raw["value"]), datetime.fromisoformat(raw["expires_at"]),
                             raw.get("reason", ""),
                             datetime.fromisoformat(raw["created_at"]) if raw.get("created_at") else None)
                self._items[o.id] = o

    def _save(self) -> None:
        rows = [{**asdict(o), "expires_at": o.expires_at.isoformat(),
                 "created_at": o.created_at.isoformat() if o.created_at else None} for o in self._items.values()]
        atomic_write(self.path, json.dumps(rows, indent=1).encode())

    def add(self, knob: str, value: float, expires_at: datetime, reason: str, now: datetime
            ) -> tuple[Override, list[Override]]:
        """Pin ``knob``; an active override on the same knob is replaced (one pin per knob, so
        what is listed is what applies). Returns the new one and those it replaced."""
        o = Override(secrets.token_hex(6), knob, value, expires_at, reason, now)
        with self._lock:
            live = {k: v for k, v in self._items.items() if v.expires_at > now}
            replaced = [v for v in live.values() if v.knob == knob]
            self._items = {k: v for k, v in live.items() if v.knob != knob}
            self._items[o.id] = o
            self._save()
        return o, replaced

    def remove(self, oid: str) -> bool:
        with self._lock:
            if self._items.pop(oid, None) is None:
                return False
            self._save()
            return True

    def active(self, now: datetime) -> list[Override]:
        with self._lock:
            return sorted((o for o in self._items.values() if o.expires_at > now),
                          key=lambda o: (o.created_at or o.expires_at, o.id))
