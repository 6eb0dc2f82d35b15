"""``diurnal import-csv``: load a time series from a CSV file into the store as a gauge."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from collectors.errors import CsvImportError
from collectors.intervals import MinuteCell, MinuteRow
from collectors.mapping import SeriesKey
from collectors.signals import RESERVED
from collectors.store import Store

log = logging.getLogger("diurnal.import")


@dataclass
class ImportStats:
    rows_read: int
    points: int
    written: int
    first: pd.Timestamp
    last: pd.Timestamp


def read_series(path: Path, *, time_column: str, value_column: str, tz: str, ignore_offset: bool = False) -> pd.Series:
    """Read one value column indexed by aware UTC timestamps.

    Naive timestamps are local wall time in ``tz`` (the repeated autumn hour is inferred from
    order, the skipped spring hour shifted forward). ``ignore_offset`` treats stamps that
    carry an offset (e.g. a wrong ``Z``) as local wall time too. Repeated timestamps are
    averaged; rows without a number are dropped.
    """
    try:
        with path.open("rb") as f:
            head = f.read(8192)
        if b"\x00" in head:
            raise CsvImportError(f"{path} is not a text CSV file (it holds NUL bytes: binary data?)")
        frame = pd.read_csv(path, usecols=[time_column, value_column])
    except FileNotFoundError as exc:
        raise CsvImportError(f"no such file: {path}") from exc
    except IsADirectoryError as exc:
        raise CsvImportError(f"{path} is a directory, not a CSV file") from exc
    except pd.errors.EmptyDataError as exc:
        raise CsvImportError(f"{path} is empty: a header row naming {time_column!r} and {value_column!r} and rows "
                             "of data are needed") from exc
    except UnicodeDecodeError as exc:
        raise CsvImportError(f"{path} is not a text CSV file (byte {exc.start} is not UTF-8)") from exc
    except pd.errors.ParserError as exc:
        raise CsvImportError(f"{path} is not a CSV file pandas can read: {str(exc).strip()}") from exc
    except ValueError as exc:
        cols = ", ".join(pd.read_csv(path, nrows=0).columns) if path.is_file() else "?"
        raise CsvImportError(f"{path}: {exc}; the columns are: {cols}") from exc
    stamps = frame[time_column].astype(str)
    if ignore_offset:
        stamps = stamps.str.replace(r"(Z|[+-]\d\d:?\d\d)$", "", regex=True)
    times = pd.to_datetime(stamps, errors="coerce", utc=False, format="mixed")
    values = pd.to_numeric(frame[value_column], errors="coerce")
    ok = times.notna() & values.notna()
    if not ok.any():
        raise CsvImportError(f"{path}: no row has both a time in {time_column!r} and a number in {value_column!r}")
    if not ok.all():
        # Data rows are numbered as in the file, the header being line 1.
        bad = [int(i) + 2 for i in frame.index[~ok.to_numpy()]]
        shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        log.warning("%s: skipped %d row(s) without both a time in %r and a number in %r: line %s",
                    path, len(bad), time_column, value_column, shown)
    series = pd.Series(values[ok].to_numpy(dtype=float), index=pd.DatetimeIndex(times[ok]))
    if series.index.tz is None:
        try:
            idx = series.index.tz_localize(tz, ambiguous="infer", nonexistent="shift_forward")
        except (ValueError, TypeError):  # not inferable (unsorted, gaps at the change)
            log.warning("%s: ambiguous local times could not be inferred; taking standard time", path)
            idx = series.index.tz_localize(tz, ambiguous=np.zeros(len(series), dtype=bool),
                                           nonexistent="shift_forward")
        series.index = idx
    series.index = series.index.tz_convert("UTC")
    return series.groupby(level=0).mean().sort_index()


def import_series(store: Store, series: pd.Series, *, signal: str, provider: str = "imported") -> int:
    """Write ``series`` (aware index) as gauge points of ``signal``; fill-only. Returns rows written."""
    if signal in RESERVED:
        raise CsvImportError(f"{signal!r} names a router signal; choose another name for an imported series")
    key = SeriesKey(signal, provider)
    rows = [MinuteRow(int(ts.timestamp()) // 60 * 60, key, MinuteCell(value=float(v)))
            for ts, v in series.items()]
    return store.write(rows, fill_only=True)


def import_csv(store: Store, path: Path, *, time_column: str, value_column: str, signal: str,
               provider: str = "imported", ignore_offset: bool = False) -> ImportStats:
    series = read_series(path, time_column=time_column, value_column=value_column, tz=store.tz,
                         ignore_offset=ignore_offset)
    written = import_series(store, series, signal=signal, provider=provider)
    with path.open() as f:
        rows = sum(1 for _ in f) - 1
    return ImportStats(rows, len(series), written, series.index[0], series.index[-1])
