"""The store: a writer killed with SIGKILL mid-write loses no minute whose ``write()`` had
returned (committed). What the HTTP API acknowledges is covered where the API is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from collectors.store import Store

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from collectors.intervals import MinuteCell, MinuteRow
    from collectors.mapping import SeriesKey
    from collectors.store import Store

    store = Store(Path(sys.argv[1]), tz="America/New_York")
    key = SeriesKey("requests", "openai", "gpt-4o", "chat")
    hist = SeriesKey("latency", "openai", "gpt-4o", "chat")
    batch = 0
    while True:
        ts = 1_700_000_000 + batch * 60
        store.write([MinuteRow(ts, key, MinuteCell(value=1.0)),
                     MinuteRow(ts, hist, MinuteCell(count=1.0, sum=2.0, buckets={2.0: 1.0, float("inf"): 1.0}))])
        # Acknowledge only after write() returned, i.e. after the commit.
        sys.stdout.write(f"{batch}\\n")
        sys.stdout.flush()
        batch += 1
""")


@pytest.mark.parametrize("run", range(20))
def test_sigkill_mid_write_loses_no_committed_minute(tmp_path: Path, run: int) -> None:
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.stdout is not None
    acked = -1
    target = 50 + 17 * run  # kill at a different point each run
    while acked < target:  # event-driven: each line is one commit; EOF if the writer died
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    # Acks the writer emitted before it died may still sit unread in the pipe.
    for line in proc.stdout.read().splitlines():
        if line.strip().isdigit():
            acked = max(acked, int(line))
    proc.stdout.close()
    assert acked >= target, "the writer did not get far enough"
    store = Store(tmp_path, tz="America/New_York")
    minutes = store.counters("requests", 0, 2**40)
    hist = store.histograms("latency", 0, 2**40)
    # Every acknowledged batch is there, whole; at most the one in flight is extra.
    assert acked + 1 <= len(minutes) <= acked + 2
    assert len(hist) == len(minutes)
    assert sum(h.value for h in store.hour_counters("requests", 0, 2**40)) == len(minutes)
    assert sum(h.count for h in store.hour_histograms("latency", 0, 2**40)) == len(minutes)
    store.close()
