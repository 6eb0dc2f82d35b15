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
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    size = os.fstat(fd).st_size
                    # A line cut short earlier (a full disk) is ended, so this one stays whole.
                    data = b"\n" + line if size and os.pread(fd, 1, size - 1) != b"\n" else line
                    os.write(fd, data)  # one write of a whole line: readers never see half of it
                finally:
                    os.close(fd)
            except OSError as exc:  # the audit must not stop the control loop
                self.failures += 1
                log.warning("cannot append to the audit log %s: %s", self.path, exc)

    def read(self) -> list[dict[str, Any]]:
        """Every whole record. A line cut short (a full disk lets a write through in part) is
        skipped with a warning, never taken for a decision."""
        if not self.path.exists():
            return []
        records, broken = [], 0
        for line in self.path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                broken += 1
        if broken:
            log.warning("skipped %d incomplete lines of the audit log %s", broken, self.path)
        return records
