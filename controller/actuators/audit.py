"""The audit log: one JSON line per new decision (``data_dir/audit.jsonl``), append-only,
with the inputs behind it and every reason. Rotated to ``audit.jsonl.1`` past ``max_bytes``."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["AuditLog"]

log = logging.getLogger("diurnal.audit")


class AuditLog:
    def __init__(self, path: Path, max_bytes: int = 50 * 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.failures = 0

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.path.exists() and self.path.stat().st_size + len(line) > self.max_bytes:
                    os.replace(self.path, self.path.with_name(self.path.name + ".1"))
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line)  # one write of a whole line: readers never see half of it
                finally:
                    os.close(fd)
            except OSError as exc:  # the audit must not stop the control loop
                self.failures += 1
                log.warning("cannot append to the audit log %s: %s", self.path, exc)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
