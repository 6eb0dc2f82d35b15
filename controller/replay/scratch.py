"""Scratch directories for a replay (the walk's own store, the history fetched from
Prometheus) that do not outlive a process killed with SIGKILL.

Each is named after the process that made it (``<prefix><pid>-<random>``). A ``finally``
removes it when the replay ends, however it ends, short of SIGKILL; what a killed replay left
is removed by the next one: every directory of the prefix whose process is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["scratch_dir", "sweep_stale"]

log = logging.getLogger("diurnal.replay")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def sweep_stale(prefix: str) -> list[Path]:
    """Remove this user's ``prefix`` directories in the temp dir whose process has exited;
    returns those removed."""
    removed = []
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        pid, _, rest = path.name[len(prefix):].partition("-")
        if not (pid.isdigit() and rest and path.is_dir()) or path.is_symlink():
            continue
        try:
            if path.stat().st_uid != os.getuid() or _alive(int(pid)):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    if removed:
        log.info("removed %d scratch dir(s) a killed replay left: %s", len(removed), ", ".join(map(str, removed)))
    return removed


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A new directory ``<prefix><pid>-...`` in the temp dir for the ``with`` block, removed
    after it; stale ones of the same prefix are swept first."""
    sweep_stale(prefix)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
