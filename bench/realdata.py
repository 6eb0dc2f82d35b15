"""Loaders for the real public series in ``../shared/data/real`` (never copied into the repo).

Each loader returns an hourly series on a regular UTC index (NaN where no data), built by
averaging the source's rows within each hour of the series' own local timezone. Hourly means
keep every series in its own unit per sub-step; the benchmark's scores are scale-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def data_dir(option: str | None = None) -> Path:
    """``--data`` if given, else ``$DIURNAL_REAL_DATA``, else ``../shared/data/real``."""
    return Path(option or os.environ.get("DIURNAL_REAL_DATA") or DEFAULT_DIR)


@dataclass(frozen=True)
class Dataset:
    name: str
    file: str
    tz: str
    role: str  # "seasonal", "cold-start" or "negative-control"
    time_col: str
    value_col: str

    def load(self, root: Path) -> pd.Series:
        df = pd.read_csv(root / self.file)
        if self.name == "hourly_traffic_volume":
            df = df.drop_duplicates(self.time_col)  # one row per weather condition in an hour
        if self.name == "azure_vm_pgbench_latency_ms":
            df = df[df["VM_id"] == 0]
        times = df[self.time_col].astype(str).str.replace("Z", "", regex=False)  # taylor's "Z" is wrong
        return _hourly(times, df[self.value_col], self.tz)


def _hourly(times: pd.Series, values: pd.Series, tz: str) -> pd.Series:
    """Localise naive local ``times`` (dropping ambiguous and nonexistent ones), take hourly
    means, on a regular UTC index."""
    idx = pd.DatetimeIndex(pd.to_datetime(times)).tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    s = pd.Series(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float), index=idx)
    s = s[s.index.notna()].tz_convert("UTC").sort_index()
    hourly = s.resample("1h").mean()
    return hourly.reindex(pd.date_range(hourly.index[0], hourly.index[-1], freq="1h"))


DATASETS = (
    Dataset("taylor_30_min", "taylor_30_min.csv", "Europe/London", "seasonal", "date", "value"),
    Dataset("nyc_taxi", "nyc_taxi.csv", "America/New_York", "seasonal", "timestamp", "value"),
    Dataset("hourly_traffic_volume", "hourly_traffic_volume.csv", "America/Chicago", "seasonal", "date_time",
            "traffic_volume"),
    Dataset("nasa_http_1995_5min", "nasa_http_1995_5min.csv", "America/New_York", "seasonal", "timestamp",
            "requests"),
    Dataset("Twitter_volume_CRM", "Twitter_volume_CRM.csv", "UTC", "seasonal", "timestamp", "value"),
    Dataset("elb_request_count_8c0756", "elb_request_count_8c0756.csv", "UTC", "cold-start", "timestamp", "value"),
    Dataset("azure_vm_pgbench_latency_ms", "azure_vm_pgbench_latency_ms.csv", "UTC", "negative-control",
            "starttime", "value"),
)


def available(root: Path) -> list[Dataset]:
    return [d for d in DATASETS if (root / d.file).exists()]


def weekly_shape(root: Path, name: str) -> tuple[float, ...]:
    """A real series' hour-of-week profile (168 values, Monday 00:00 local first): the median
    of each local hour of the week, scaled so the busiest hour is 1.0. The closed-loop
    benchmark can drive its simulated demand with it (``--shape``)."""
    dataset = next((d for d in DATASETS if d.name == name), None)
    if dataset is None:
        raise ValueError(f"unknown dataset {name!r}; one of: {', '.join(d.name for d in DATASETS)}")
    series = dataset.load(root).tz_convert(dataset.tz).dropna()
    index = pd.DatetimeIndex(series.index)
    hour_of_week = index.day_of_week * 24 + index.hour
    profile = series.groupby(hour_of_week).median().reindex(range(168)).interpolate(limit_direction="both")
    top = float(profile.max())
    if not top > 0:
        raise ValueError(f"{name} has no positive values to take a shape from")
    return tuple(float(max(0.03, v / top)) for v in profile.to_numpy())
