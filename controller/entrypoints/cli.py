"""The ``diurnal`` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from collectors.errors import CollectorError, CsvImportError
from collectors.redact import redact
from controller.errors import ConfigError
from controller.loop import package_version
from controller.settings import Settings, load_settings

if TYPE_CHECKING:
    import pandas as pd

    from collectors.store import Store


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``
    and ``exc_info`` where there is one. The redacting filter runs before it, on the message."""

    def format(self, record: logging.LogRecord) -> str:
        import json
        from datetime import UTC, datetime

        doc = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class _Parser(argparse.ArgumentParser):
    """Bad arguments get one line naming the command and the argument, and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"unknown IANA timezone {value!r} (e.g. America/New_York, Europe/Berlin, "
                                         "UTC)") from exc
    return value


def _number(kind: type[int] | type[float] = int, *, at_least: float | None = None) -> Callable[[str], float]:
    """An argparse type: a ``kind`` number of at least ``at_least``, or more than 0 without it."""
    def parse(value: str) -> float:
        try:
            number = kind(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{value!r} is not {'a whole number' if kind is int else 'a number'}") \
                from exc
        if at_least is None and not number > 0:  # NaN too
            raise argparse.ArgumentTypeError(f"{value} must be more than 0")
        if at_least is not None and not number >= at_least:
            raise argparse.ArgumentTypeError(f"{value} is too small: at least {at_least:g}")
        return number
    return parse


def _moment(value: str) -> str:
    from datetime import datetime

    try:
        datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time (e.g. 2026-11-16T09:30, local time "
                                         "unless it carries an offset)") from exc
    return value


def _output_file(value: str) -> Path:
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a directory; give a file name")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the directory {path.parent} does not exist")
    return path


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"data_dir": args.data_dir} if getattr(args, "data_dir", None) else {}
    return load_settings(args.config, **overrides)


def cmd_check_config(args: argparse.Namespace) -> int:
    s = load_settings(args.file)
    providers = ", ".join(f"{n}={p.baseline_weight:g}" for n, p in s.policy.providers.items()) or "none (equal shares)"
    print(f"{args.file}: OK")
    print(f"  timezone {s.timezone}; mode {s.guardrails.mode}; data_dir {s.data_dir}")
    print(f"  router {redact(s.router.metrics_url or '(not set)')} with the {s.router.preset} preset")
    print(f"  providers: {providers}")
    print(f"  API on {s.api.host}:{s.api.port}; writes {'need the token' if s.api.token else 'disabled (no api.token)'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from controller.entrypoints.service import run

    s = _settings(args)
    _logging(s.log_level, s)
    run(s)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from controller.entrypoints.demo import cleanup, run_demo, summary
    from controller.entrypoints.service import refresh_shadow, serve

    _logging("WARNING")
    print(f"Running diurnal against the simulated router for {args.weeks} weeks "
          f"(time compressed; the last week is scored against static weights)...", flush=True)
    result = run_demo(weeks=args.weeks, seed=args.seed, data_dir=args.data_dir,
                      progress=lambda msg: print(msg, flush=True))
    print()
    print(summary(result), flush=True)
    if args.data_dir is not None:
        print(f"\nEvery decision is in {args.data_dir / 'audit.jsonl'}; explain one with\n"
              f"  diurnal explain --data-dir {args.data_dir} --changes 20\n"
              f"  diurnal explain --data-dir {args.data_dir} --at {result.scored_start:%Y-%m-%d}T07:30", flush=True)
    if args.serve:
        settings = result.settings.model_copy(update={"api": result.settings.api.model_copy(update={"port": args.port})})
        refresh_shadow(result.controller)  # the week's shadow report, served at once (then hourly)
        print(f"\nServing the demo's state on http://{settings.api.host}:{args.port} "
              "(/v1/decision, /v1/forecast, /v1/profile, /v1/report, /metrics). Ctrl-C to stop.", flush=True)
        serve(result.controller, settings)  # returns on Ctrl-C or SIGTERM
    cleanup(result, keep=args.data_dir is not None)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from controller.entrypoints.service import run_backfill
    from controller.loop import Controller

    s = _settings(args)
    _logging(s.log_level, s)
    ctl = Controller.from_settings(s, journal=False)  # `diurnal run` may own this data dir's journal
    try:
        stats = run_backfill(ctl, s, weeks=args.weeks, progress=lambda m: print(m, flush=True))
    finally:
        ctl.close()
    print(f"backfilled {stats.samples} samples in {stats.chunks} chunks from {redact(s.prometheus.url or '')}: "
          f"{stats.rows_written} minute rows stored ({stats.retries} retries)")
    return 0


@contextlib.contextmanager
def _store(args: argparse.Namespace, *, read_only: bool = False) -> Iterator[tuple[Settings, str, Store]]:
    """The settings, the timezone (``--timezone`` or the settings') and the store, closed after.
    ``read_only``: the store must exist and is never changed (its hours stay rolled up in the
    zone it has; see :func:`_stored_hourly` for another one)."""
    from collectors.store import Store

    s = _settings(args)
    tz = args.timezone or s.timezone
    store = Store(s.data_dir, tz=tz, read_only=read_only)
    try:
        yield s, tz, store
    finally:
        store.close()


def _same_hours(index: pd.DatetimeIndex, tz: str) -> bool:
    """Whether every hour of ``index`` (UTC instants where a local hour began) starts a local
    hour in ``tz`` too: true between zones a whole number of hours apart."""
    local = index.tz_convert(tz)
    return bool(((local.minute == 0) & (local.second == 0)).all())


def cmd_import_csv(args: argparse.Namespace) -> int:
    from collectors.csv_import import import_csv

    with _store(args) as (s, tz, store):
        st = import_csv(store, args.file, time_column=args.time_column, value_column=args.value_column,
                        signal=args.signal, provider=args.provider, ignore_offset=args.ignore_offset)
    print(f"imported {st.points} points ({st.rows_read} rows) of {args.signal!r} from {args.file}: "
          f"{st.first:%Y-%m-%d %H:%M} .. {st.last:%Y-%m-%d %H:%M} UTC, {st.written} new; "
          f"hours in {tz}; store {s.data_dir}")
    return 0


def _stored_hourly(args: argparse.Namespace, weeks: float | None = None) -> tuple[Settings, str, pd.Series] | int:
    """``args.signal`` per local hour over the last ``weeks`` of the store (default: the
    settings' ``forecast.history_weeks``), for ``args.provider`` or all together; an exit code
    instead when there is nothing to read."""
    from collectors.signals import hourly, known_signals

    with _store(args, read_only=True) as (s, tz, store):
        span = store.span()
        if span is None:
            print(f"diurnal: the store in {s.data_dir} is empty", file=sys.stderr)
            return 1
        known = known_signals(store)
        if args.signal not in known:
            print(f"diurnal: no signal {args.signal!r} in the store in {s.data_dir}; it has: {', '.join(known)}",
                  file=sys.stderr)
            return 2
        provider = None if args.provider in (None, "*") else args.provider
        end = span[1] + 3600
        try:
            span_weeks = s.forecast.history_weeks if weeks is None else weeks
            series = hourly(store, args.signal, store.tz, end - int(span_weeks * 7 * 86400), end, provider)
        except ValueError as exc:
            print(f"diurnal: {exc}", file=sys.stderr)
            return 2
        if tz != store.tz and not _same_hours(series.index, tz):
            print(f"diurnal: the store's hours are rolled up in {store.tz}, and {tz}'s hours start at other "
                  f"instants; reading never rebuilds them: use --timezone {store.tz}, or run diurnal with "
                  f"timezone {tz} (which rebuilds the rollups from the minutes kept)", file=sys.stderr)
            return 2
        return s, tz, series * _shown(args.signal)[0]


def _shown(signal: str) -> tuple[float, str]:
    """How a signal is shown: the factor from its stored unit and the unit. Rates per second
    are shown per minute (req/min), as the plan, the demo and the dashboards show them; an
    imported series in its own unit."""
    from collectors.signals import DERIVED

    d = DERIVED.get(signal)
    if d is None:
        return 1.0, "its own unit"
    if d.unit.endswith("per second"):
        return 60.0, d.unit.replace("per second", "per minute")
    return 1.0, d.unit


def _unit(signal: str) -> str:
    return _shown(signal)[1]


def cmd_profile(args: argparse.Namespace) -> int:
    import json

    from collectors.hour_of_week import profile, profile_cells
    from controller.entrypoints.render import heatmap, heatmap_png, top_deviations

    read = _stored_hourly(args, args.weeks)
    if isinstance(read, int):
        return read
    _, tz, series = read
    prof = profile(series, tz)
    if args.json:
        print(json.dumps({"signal": args.signal, "unit": _unit(args.signal), "series": args.provider or "*", "tz": tz,
                          "cells": profile_cells(prof)}))
        return 0
    title = (f"Hour-of-week {args.signal} in {_unit(args.signal)} ({args.provider or 'all series'}), "
             f"median per slot, {tz}")
    print(heatmap(prof, title=title + ":", unit=args.signal))
    devs = top_deviations(prof, args.signal)
    print("\nTop deviations from the weekly median:" if devs else "\nNo hour deviates 15% or more from the weekly median.")
    for line in devs:
        print(f"  {line}")
    if args.png:
        heatmap_png(prof, str(args.png), title=title, unit=args.signal)
        print(f"\nwrote {args.png}")
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    import json

    import pandas as pd

    from controller.fit import LOAD_SIGNALS
    from controller.forecast import fit, gate

    read = _stored_hourly(args)
    if isinstance(read, int):
        return read
    s, tz, series = read
    fs = s.forecast
    observed = series.dropna()
    if len(observed) < 2:
        print(f"diurnal: no {args.signal} data for {args.provider or 'all series'} in the store", file=sys.stderr)
        return 1
    result = fit(series.loc[observed.index[0]:], args.hours, tz=tz, coverage=fs.coverage,
                 min_history=pd.Timedelta(days=fs.min_history_days),
                 weekly_history=pd.Timedelta(days=fs.weekly_history_days),
                 under_penalty=fs.under_penalty if args.signal in LOAD_SIGNALS else 1.0,
                 backtest_days=fs.backtest_days, exclude=[(w.start, w.end) for w in fs.exclude])
    code, message = gate(result, skill_gate=fs.skill_gate, seasonality_gate=fs.seasonality_gate)
    sel = result.selection
    frame = result.frame
    if args.json:
        def num(v: float) -> float | None:
            return None if v != v else float(v)  # NaN -> null

        print(json.dumps({
            "signal": args.signal, "unit": _unit(args.signal), "series": args.provider or "*", "tz": tz,
            "model": result.model,
            "stage": result.stage, "history_days": result.history_days, "gate": code, "message": message,
            "skill": num(sel.skill) if sel else None,
            "seasonality_gain": num(sel.seasonality_gain) if sel else None,
            "backtest_mae": {k: num(v) for k, v in sel.scores.items()} if sel else {},
            "points": [{"at": ts.isoformat(), **{b: num(r[b]) for b in ("mean", "lower", "upper")}}
                       for ts, r in frame.iterrows()],
        }))
        return 0
    print(f"{args.signal} in {_unit(args.signal)} ({args.provider or 'all series'}), "
          f"{result.history_days:.1f} days of history, {tz}")
    print(f"{code}: {message}")
    if sel is None:
        return 0
    print("backtest MAE per candidate (lower is better):")
    for name, mae in sorted(sel.scores.items(), key=lambda kv: kv[1]):
        print(f"  {'*' if name == sel.model else ' '} {name:<26} {mae:.4g}")
    pct = round(fs.coverage * 100)
    print(f"\nnext {args.hours} hours (mean, {pct}% band):")
    for ts, row in frame.iterrows():
        print(f"  {ts.tz_convert(tz):%a %m-%d %H:%M %Z}  {row['mean']:>10.4g}   [{row['lower']:.4g} .. {row['upper']:.4g}]")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    import httpx

    from controller.actuators.audit import AuditLog
    from controller.entrypoints.explain import changes, record_at, render

    if args.url:
        try:
            resp = httpx.get(f"{args.url.rstrip('/')}/v1/decision", params={"explain": 1}, timeout=10)
        except httpx.HTTPError as exc:
            print(redact(f"diurnal: cannot reach {args.url}: {exc}"), file=sys.stderr)
            return 1
        if resp.status_code != 200:
            print(redact(f"diurnal: {args.url} answered HTTP {resp.status_code}: {resp.text[:200]}"), file=sys.stderr)
            return 1
        body = resp.json()
        print(render(body, args.timezone or body.get("tz") or "UTC"))  # the sidecar's zone, unless asked
        return 0
    s = _settings(args)
    tz = args.timezone or s.timezone
    records = AuditLog(s.data_dir / "audit.jsonl").read()
    if not records:
        print(f"diurnal: no decisions in {s.data_dir / 'audit.jsonl'} yet", file=sys.stderr)
        return 1
    if args.changes:
        print(changes(records, tz, args.changes))
        return 0
    at = None
    if args.at:
        at = datetime.fromisoformat(args.at)
        if at.tzinfo is None:
            at = at.replace(tzinfo=ZoneInfo(tz))
    rec = record_at(records, at)
    if rec is None:
        print(f"diurnal: no decision at or before {args.at}", file=sys.stderr)
        return 1
    print(render(rec, tz))
    return 0


def _logging(level: str, settings: Settings | None = None) -> None:
    """Log to stderr through a filter that masks URL credentials and every configured secret
    (uvicorn's loggers too: the API is served with ``log_config=None``), as text or as one JSON
    object per line (``log_format``)."""
    from collectors.redact import RedactingFilter
    from controller.settings import secret_values

    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings is not None and settings.log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    redacting = RedactingFilter(secret_values(settings) if settings is not None else ())
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(redacting)
    # These log a line per scrape or job run at INFO; the sidecar reports failures itself.
    for noisy in ("apscheduler", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))


def cmd_litellm_hook(args: argparse.Namespace) -> int:
    """Print (or write) the LiteLLM proxy hook, a file that stands alone."""
    from controller.actuators import litellm_hook

    source = Path(litellm_hook.__file__).read_text()
    if args.output is None:
        sys.stdout.write(source)
    else:
        args.output.write_text(source)
        print(f"wrote {args.output}; list it in the proxy's config as callbacks: "
              f'["prometheus", "{args.output.stem}.hook"]', file=sys.stderr)
    return 0


def _local(value: str, tz: str) -> datetime:
    from zoneinfo import ZoneInfo

    at = datetime.fromisoformat(value)
    return at.replace(tzinfo=ZoneInfo(tz)) if at.tzinfo is None else at


def cmd_replay(args: argparse.Namespace) -> int:
    import json

    from controller.replay import replay, stderr_progress
    from controller.replay.report import html_page, json_report, terminal

    s = _settings(args)
    _logging("WARNING" if s.log_level == "INFO" else s.log_level, s)  # the progress bar, not a log line a minute
    since, until = _local(args.since, s.timezone), _local(args.until, s.timezone) if args.until else None
    if until is not None and until <= since:
        print(f"diurnal replay: --until {args.until} is not after --since {args.since}", file=sys.stderr)
        return 2
    progress = stderr_progress if sys.stderr.isatty() or args.progress else None
    with contextlib.ExitStack() as stack:
        if args.prometheus:
            from collectors.store import Store
            from controller.entrypoints.service import run_backfill
            from controller.loop import Controller
            from controller.replay.scratch import scratch_dir

            scratch = stack.enter_context(scratch_dir("diurnal-replay-source-"))
            fetched = s.model_copy(update={"data_dir": scratch, "prometheus": s.prometheus.model_copy(
                update={"url": args.prometheus})})
            ctl = Controller.from_settings(fetched, journal=False)
            end = until or ctl.clock_now()
            weeks = (end - since).total_seconds() / 604800 + s.forecast.history_weeks
            try:
                run_backfill(ctl, fetched, weeks=weeks, end=end,
                             progress=(lambda m: print(m, file=sys.stderr, flush=True)) if progress else None)
            finally:
                ctl.close()
            source = stack.enter_context(contextlib.closing(Store(scratch, tz=s.timezone, read_only=True)))
        else:
            _, _, source = stack.enter_context(_store(args, read_only=True))
        done = replay(s, source, since, until, pool_units=args.pool_units, progress=progress)
    print(terminal(done.walk, done.estimate, s.timezone))
    if args.json:
        args.json.write_text(json.dumps(json_report(done.walk, done.estimate, s.timezone), indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.html:
        args.html.write_text(html_page(done.walk, done.estimate, s.timezone))
        print(f"wrote {args.html}")
    return 130 if done.walk.interrupted else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.closedloop import main as bench_main

    return bench_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="diurnal", description="Time-aware sidecar for LLM routers.")
    parser.add_argument("--version", action="version", version=f"diurnal {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the sidecar: scrape the router, decide, serve the API")
    run.add_argument("--config", type=Path, help="YAML settings file (environment DIURNAL_* overrides it)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="run against the built-in simulated router, time compressed")
    demo.add_argument("--weeks", type=_number(at_least=2), default=4,
                      help="simulated weeks; the last is scored (default 4: hour-of-week forecasts need 3 weeks)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the simulated world")
    demo.add_argument("--data-dir", type=Path, help="keep the store here (default: a temp dir, removed after)")
    demo.add_argument("--serve", action="store_true", help="keep the API up afterwards")
    demo.add_argument("--port", type=_number(), default=8787, help="API port with --serve")
    demo.set_defaults(func=cmd_demo)

    bf = sub.add_parser("backfill", help="read weeks of history from Prometheus (query_range) into the store")
    bf.add_argument("--config", type=Path, help="YAML settings file (prometheus.url and credentials)")
    bf.add_argument("--data-dir", type=Path, help="the data directory (default: settings' data_dir)")
    bf.add_argument("--weeks", type=_number(float), help="weeks to read (default: prometheus.backfill_weeks)")
    bf.set_defaults(func=cmd_backfill)

    imp = sub.add_parser("import-csv", help="load a time series from a CSV file into the store")
    imp.add_argument("file", type=Path)
    imp.add_argument("--time-column", required=True, help="column with timestamps")
    imp.add_argument("--value-column", required=True, help="column with the numbers")
    imp.add_argument("--signal", required=True, help="name to store the series under, e.g. demand")
    imp.add_argument("--provider", default="imported", help="series label (default: imported)")
    imp.add_argument("--timezone", type=_timezone,
                     help="IANA zone of naive timestamps and of the hours (default: settings)")
    imp.add_argument("--ignore-offset", action="store_true",
                     help="read timestamps as local wall time even if they carry an offset such as Z")
    imp.add_argument("--config", type=Path, help="YAML settings file (data_dir)")
    imp.add_argument("--data-dir", type=Path, help="the data directory (default: settings' data_dir)")
    imp.set_defaults(func=cmd_import_csv)

    prof = sub.add_parser("profile", help="hour-of-week heatmap of a signal (terminal, PNG or JSON)")
    prof.add_argument("--signal", default="latency_p95", help="derived or imported signal (default latency_p95)")
    prof.add_argument("--provider", help="one provider (default: all together)")
    prof.add_argument("--weeks", type=_number(float), default=8, help="weeks of history, ending at the newest data")
    prof.add_argument("--timezone", type=_timezone, help="IANA zone of the hours (default: settings)")
    prof.add_argument("--png", type=_output_file, help="also write the heatmap as a PNG")
    prof.add_argument("--json", action="store_true", help="print the profile as JSON")
    prof.add_argument("--config", type=Path, help="YAML settings file (data_dir)")
    prof.add_argument("--data-dir", type=Path, help="the data directory (default: settings' data_dir)")
    prof.set_defaults(func=cmd_profile)

    fc = sub.add_parser("forecast", help="forecast a signal from the store: chosen model, skill, gate, bands")
    fc.add_argument("--signal", default="request_rate", help="derived or imported signal (default request_rate)")
    fc.add_argument("--provider", help="one provider (default: all together)")
    fc.add_argument("--hours", type=_number(), default=24, help="hours ahead (default 24)")
    fc.add_argument("--timezone", type=_timezone, help="IANA zone of the seasonality (default: settings)")
    fc.add_argument("--json", action="store_true", help="print the forecast as JSON")
    fc.add_argument("--config", type=Path, help="YAML settings file (data_dir, forecast.*)")
    fc.add_argument("--data-dir", type=Path, help="the data directory (default: settings' data_dir)")
    fc.set_defaults(func=cmd_forecast)

    ex = sub.add_parser("explain", help="the decision in force and why, knob by knob")
    ex.add_argument("--url", help="ask a running sidecar (e.g. http://127.0.0.1:8787) instead of the audit log")
    ex.add_argument("--at", type=_moment, help="the decision in force at this time (ISO 8601; local time if no offset)")
    ex.add_argument("--changes", type=_number(), metavar="N", help="list the last N weight or prewarm changes")
    ex.add_argument("--timezone", type=_timezone,
                    help="IANA zone for times (default: the sidecar's with --url, else settings)")
    ex.add_argument("--config", type=Path, help="YAML settings file (data_dir)")
    ex.add_argument("--data-dir", type=Path, help="data directory with audit.jsonl (default: settings)")
    ex.set_defaults(func=cmd_explain)

    rp = sub.add_parser("replay", help="walk a stored period through diurnal (act mode, no look-ahead) and estimate "
                                       "what it, static weights and latency-based routing would have cost and "
                                       "risked against what the router did")
    rp.add_argument("--since", type=_moment, required=True,
                    help="start of the period (ISO 8601; local time unless it carries an offset)")
    rp.add_argument("--until", type=_moment, help="end of the period (default: the newest data)")
    rp.add_argument("--prometheus", metavar="URL", help="read the history from this Prometheus (the backfill's "
                                                        "chunked query_range) instead of the store")
    rp.add_argument("--pool-units", type=_number(at_least=0), metavar="N",
                    help="the self-hosted pool's size as it ran (default: the prewarm action's min_units)")
    rp.add_argument("--json", type=_output_file, metavar="FILE", help="also write the report as JSON")
    rp.add_argument("--html", type=_output_file, metavar="FILE", help="also write a self-contained HTML page")
    rp.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    rp.add_argument("--config", type=Path, help="YAML settings file (policy, prices, prewarm, timezone)")
    rp.add_argument("--data-dir", type=Path, help="the data directory (default: settings' data_dir)")
    rp.set_defaults(func=cmd_replay, timezone=None)

    bench = sub.add_parser("bench", add_help=False,
                           help="closed-loop benchmark: diurnal against static, reactive, HPA, cron and an "
                                "oracle on simulated weeks (`diurnal bench --help`)")
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)

    hook = sub.add_parser("litellm-hook", help="print the LiteLLM proxy hook that applies diurnal's weights "
                                                "(save it beside the proxy's config.yaml as diurnal_litellm.py)")
    hook.add_argument("-o", "--output", type=_output_file, default=None, help="write it to this file instead")
    hook.set_defaults(func=cmd_litellm_hook)

    check = sub.add_parser("check-config", help="validate a settings file and name any bad field")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # its own parser, options and --help included
        return cmd_bench(argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokenPipeError:  # piped to `head`, which stopped reading: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush is quiet too
        return 0
    except ConfigError as exc:
        print(f"diurnal: {exc}", file=sys.stderr)
        return 2
    except CsvImportError as exc:  # the file given is not what was asked for: bad input
        print(f"diurnal: {exc}", file=sys.stderr)
        return 2
    except CollectorError as exc:
        print(f"diurnal: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
