"""``diurnal run``: scrape the router on a schedule, tick the controller, serve the API."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import uvicorn
from apscheduler.schedulers.background import BackgroundScheduler

from collectors.backfill import (
    BackfillError,
    BackfillStats,
    PrometheusAPI,
    backfill,
    backfill_fleet,
)
from collectors.errors import CollectorError, ExpositionError, ScrapeError, StoreError
from collectors.exposition import OPENMETRICS_CONTENT_TYPE
from collectors.fleet import FleetQuery, vector_samples
from collectors.hour_of_week import local_hour_start_at
from collectors.redact import redact
from controller.actuators import LeaderElector, LeaseClient
from controller.entrypoints.api import create_app
from controller.entrypoints.tracing import setup_tracing
from controller.errors import ConfigError, ErrorThrottle, RepeatFilter
from controller.httpclient import bounded_client
from controller.loop import Controller, package_version
from controller.settings import Settings

log = logging.getLogger("diurnal.service")

ACCEPT = f"{OPENMETRICS_CONTENT_TYPE};version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


class Scraper:
    """Reads the router's /metrics with httpx and feeds the controller."""

    def __init__(self, controller: Controller, client: httpx.Client, url: str, settings: Settings) -> None:
        self.controller = controller
        self.client = client
        self.url = url
        self.shown = redact(url)  # what logs and errors may say
        self.closed = False
        token = settings.router.bearer_token
        self._headers = {"Accept": ACCEPT}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        self.throttle = ErrorThrottle(f"scrape of {self.shown}")

    def fetch(self) -> tuple[str, str | None]:
        try:
            resp = self.client.get(self.url, headers=self._headers)
        except httpx.TimeoutException as exc:
            self.controller.metrics.scrapes.labels("unreachable").inc()
            raise ScrapeError(f"no answer from {self.shown} within its deadline") from exc
        except httpx.TransportError as exc:
            self.controller.metrics.scrapes.labels("unreachable").inc()
            raise ScrapeError(redact(f"cannot reach {self.shown}: {exc}")) from exc
        if resp.status_code != 200:
            self.controller.metrics.scrapes.labels("http_error").inc()
            raise ScrapeError(f"{self.shown} answered HTTP {resp.status_code}")
        return resp.text, resp.headers.get("content-type")

    def close(self) -> None:
        """Stop scraping (at shutdown): a scrape in flight ends quietly."""
        self.closed = True
        self.client.close()

    def scrape_once(self, at: datetime | None = None) -> bool:
        """One scrape; never raises. Returns whether data was ingested."""
        if self.closed:
            return False
        try:
            text, ctype = self.fetch()
            self.controller.ingest_exposition(text, at, content_type=ctype)
        except ScrapeError as exc:
            self.throttle.failed(str(exc))
            return False
        except ExpositionError as exc:
            self.controller.metrics.scrapes.labels("malformed").inc()
            self.throttle.failed(str(exc))
            return False
        except Exception as exc:  # the loop must survive anything
            if self.closed:
                return False  # the client was closed under it: shutting down
            self.controller.metrics.scrapes.labels("error").inc()
            log.exception("unexpected error while scraping %s", self.shown)
            self.throttle.failed(repr(exc))
            return False
        self.controller.metrics.scrapes.labels("ok").inc()
        self.throttle.succeeded()
        return True


def tick(controller: Controller, sched: BackgroundScheduler | None = None) -> None:
    """One control tick; never raises (a failure is logged and counted). With ``sched``, the
    decision's future prewarm steps become date jobs (see :func:`schedule_prewarm`)."""
    try:
        controller.step()
        if sched is not None:
            schedule_prewarm(sched, controller)
    except Exception:
        controller.metrics.tick_errors.inc()
        log.exception("control tick failed; the loop goes on")


def schedule_prewarm(sched: BackgroundScheduler, controller: Controller) -> None:
    """One date job per planned prewarm step (per action and peak): it runs a tick at the
    step's time, so the step is carried out on time rather than up to a tick late. A plan
    that changes replaces its job; a plan that is gone loses it."""
    d = controller.decision
    if d is None:
        return
    wanted: dict[str, datetime] = {}
    for p in d.prewarm:
        if p.at > d.at:
            wanted[f"prewarm:{p.action}:{(p.peak_at or p.at).isoformat()}"] = p.at
    for job in sched.get_jobs():
        if job.id.startswith("prewarm:") and job.id not in wanted:
            job.remove()
    for jid, at in wanted.items():
        existing = sched.get_job(jid)
        if existing is not None and getattr(existing, "next_run_time", None) == at:
            continue
        sched.add_job(tick, "date", args=[controller, sched], run_date=at, id=jid, replace_existing=True)


class FleetReader:
    """router.source prometheus: reads each window of the fleet query (:mod:`collectors.fleet`)
    once it ended ``prometheus.lag_seconds`` ago, in order, from where the store's cursor
    says the last run stopped; at most ``max_windows`` per run, so a long outage is caught
    up over several runs rather than in one long stall."""

    def __init__(self, controller: Controller, api: PrometheusAPI, query: FleetQuery, settings: Settings, *,
                 start: int, max_windows: int = 60) -> None:
        self.controller = controller
        self.api = api
        self.query = query
        self.lag = settings.prometheus.lag_seconds
        self.next_end = start  # the end of the next window to read
        self.max_windows = max_windows
        self.closed = False
        self.throttle = ErrorThrottle(f"fleet query of {redact(api.base_url)}")

    def newest_end(self, now: float) -> int:
        w = self.query.window_seconds
        return int((now - self.lag) // w * w)

    def read_once(self) -> int:
        """Read the windows due; never raises. Returns how many were read."""
        if self.closed:
            return 0
        m = self.controller.metrics
        w = self.query.window_seconds
        newest = self.newest_end(self.controller.clock_now().timestamp())
        read = 0
        while self.next_end <= newest and read < self.max_windows and not self.closed:
            started = time.perf_counter()
            try:
                result = self.api.query(self.query.expr, self.next_end)
            except BackfillError as exc:
                m.scrapes.labels(exc.kind).inc()
                self.throttle.failed(str(exc))
                break
            except Exception as exc:  # the loop must survive anything
                if self.closed:
                    break
                m.scrapes.labels("error").inc()
                log.exception("unexpected error while querying the fleet")
                self.throttle.failed(repr(exc))
                break
            m.fleet_query_seconds.observe(time.perf_counter() - started)
            try:
                self.controller.ingest_fleet(vector_samples(result), self.next_end, w)
            except StoreError as exc:  # not read: the same window again next run
                self.throttle.failed(str(exc))
                break
            m.scrapes.labels("ok").inc()
            self.throttle.succeeded()
            self.next_end += w
            read += 1
        m.fleet_lag.set(max(0.0, self.controller.clock_now().timestamp() - (self.next_end - w)))
        return read

    def close(self) -> None:
        self.closed = True


def fleet_start(controller: Controller, settings: Settings, *, catch_up_seconds: float = 24 * 3600) -> int:
    """The end of the first window the fleet input reads: on from the store's cursor when
    that is within ``catch_up_seconds``, else the first window of the current local hour
    (backfill, with the same query, then ends where this begins: no seam, nothing twice)."""
    w = settings.prometheus.window_seconds
    now = controller.clock_now().timestamp() - settings.prometheus.lag_seconds
    cursor = controller.fleet_cursor()
    if cursor is not None and cursor >= now - catch_up_seconds:
        return cursor + w
    if cursor is not None:
        log.warning("the fleet input stopped %.1f h ago, more than it catches up (%.0f h): the store has a gap "
                    "before this hour", (now - cursor) / 3600, catch_up_seconds / 3600)
    hour = local_hour_start_at(int(now), settings.timezone)
    return hour + w


def leader_elector(settings: Settings) -> LeaderElector:
    """The elector ``ha`` asks for, on the Kubernetes API ``publish.kubernetes`` names (else
    the in-cluster one) with the pod's service account."""
    ha, k = settings.ha, settings.publish.kubernetes
    api_url = k.api_url
    if not api_url:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ConfigError("ha.enabled needs the Kubernetes API: not in a cluster (KUBERNETES_SERVICE_HOST "
                              "unset) and publish.kubernetes.api_url is not set")
        api_url = f"https://{host}:{port}"
    namespace = ha.namespace or os.environ.get("POD_NAMESPACE")
    if not namespace:
        ns_file = k.token_path.parent / "namespace"
        try:
            namespace = ns_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"ha.namespace is not set, nor POD_NAMESPACE, and {ns_file} cannot be read") from exc
    identity = ha.identity or os.environ.get("POD_NAME") or socket.gethostname()
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(k.ca_path)) if k.ca_path.exists() else True
    client = LeaseClient(api_url, namespace, ha.lease_name, k.token_path,
                         timeout=min(k.timeout_seconds, ha.retry_period_seconds), verify=verify)
    return LeaderElector(client, identity, lease_duration=ha.lease_duration_seconds,
                         renew_deadline=ha.renew_deadline_seconds, retry_period=ha.retry_period_seconds)


def refit_when_due(controller: Controller) -> None:
    """Refit at each new local hour (off the tick, in the worker pool); never raises."""
    try:
        if controller.refit_due():
            controller.refit()
    except Exception:
        log.exception("refit failed; the forecasts in use are kept")


#: How often the shadow report is computed again (it reads the last week: a few seconds).
SHADOW_EVERY_SECONDS = 3600


def refresh_shadow(controller: Controller) -> None:
    """Compute the shadow report again (what acting would have changed over the last week,
    :mod:`controller.replay.shadow`); never raises: a failure keeps the report before."""
    from controller.replay.shadow import shadow_report

    now = controller.clock_now()
    try:
        controller.shadow.refresh(lambda: shadow_report(controller.settings, controller.store, now), now)
    except Exception:
        log.exception("the shadow report failed; the one before is kept")


def build_scheduler(controller: Controller, scraper: Scraper | FleetReader | None,
                    settings: Settings) -> BackgroundScheduler:
    sched = BackgroundScheduler(
        timezone=UTC,
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": max(1, int(settings.control.misfire_grace_seconds)),
        },
    )
    start = controller.clock_now()
    if isinstance(scraper, Scraper):
        sched.add_job(scraper.scrape_once, "interval", seconds=settings.router.scrape_interval_seconds,
                      id="scrape", next_run_time=start)
    elif isinstance(scraper, FleetReader):  # each window once it is due; checked as often as a scrape
        sched.add_job(scraper.read_once, "interval", seconds=min(settings.router.scrape_interval_seconds,
                                                                 settings.prometheus.window_seconds),
                      id="fleet", next_run_time=start)
    sched.add_job(tick, "interval", args=[controller, sched], seconds=settings.control.tick_interval_seconds,
                  id="tick", next_run_time=start)
    # Checked every minute, runs when a local hour has started: refits take seconds to
    # minutes and must not delay ticks, so they have their own job (and worker processes).
    sched.add_job(refit_when_due, "interval", args=[controller], seconds=60, id="refit",
                  next_run_time=start, misfire_grace_time=None)
    sched.add_job(refresh_shadow, "interval", args=[controller], seconds=SHADOW_EVERY_SECONDS, id="shadow",
                  next_run_time=start + timedelta(seconds=60), misfire_grace_time=None)
    return sched


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which would kill the
    process before the store is flushed. Here a signal only asks the server to exit (and
    calls ``on_signal``: the shutdown deadline starts then)."""

    on_signal: Callable[[], None] | None = None

    def handle_exit(self, sig: int, frame: object) -> None:
        if self.on_signal is not None and not self.should_exit:
            self.on_signal()
        super().handle_exit(sig, frame)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(controller: Controller, settings: Settings, *, stop: threading.Event | None = None,
          on_signal: Callable[[], None] | None = None) -> None:
    """Serve the API in this thread until SIGTERM/SIGINT (or until ``stop`` is set). Open
    connections get a quarter of ``control.shutdown_seconds`` to finish."""
    # log_config=None: uvicorn logs through the root handlers, and so through their redacting filter.
    config = uvicorn.Config(create_app(controller), host=settings.api.host, port=settings.api.port,
                            log_level=settings.log_level.lower(), access_log=False, lifespan="off", log_config=None,
                            timeout_graceful_shutdown=max(1, int(settings.control.shutdown_seconds / 4)))
    server = _Server(config)
    server.on_signal = on_signal
    if stop is not None:
        def _stop_when_set() -> None:
            stop.wait()
            server.should_exit = True

        threading.Thread(target=_stop_when_set, daemon=True).start()
    log.info("API on http://%s:%d (decision at /v1/decision, metrics at /metrics)", settings.api.host, settings.api.port)
    server.run()
    if not server.started:
        raise OSError(f"the API could not listen on {settings.api.host}:{settings.api.port} (see the log above)")


def prometheus_api(settings: Settings, client: httpx.Client, *, retries: int = 4) -> PrometheusAPI:
    p = settings.prometheus
    if p.url is None:
        raise ConfigError("prometheus.url is not set (DIURNAL_PROMETHEUS__URL); nothing to backfill from")
    basic = None
    if p.basic_auth_username is not None and p.basic_auth_password is not None:
        basic = (p.basic_auth_username, p.basic_auth_password.get_secret_value())
    token = p.bearer_token.get_secret_value() if p.bearer_token is not None else None
    return PrometheusAPI(client, p.url, bearer_token=token, basic_auth=basic, retries=retries)


def fleet_query(controller: Controller, settings: Settings) -> FleetQuery:
    p = settings.prometheus
    return FleetQuery.build(controller.mapper, p.selector, p.window_seconds)


def run_backfill(controller: Controller, settings: Settings, *, weeks: float | None = None,
                 end: datetime | None = None, progress: Callable[[str], None] | None = None) -> BackfillStats:
    """Backfill ``weeks`` of history up to ``end`` (default: now) into the controller's store:
    the raw series, as a scrape reads them, or with router.source prometheus the fleet query
    the live input evaluates."""
    span = weeks if weeks is not None else settings.prometheus.backfill_weeks
    stop_at = end or controller.clock_now()
    start, stop = int((stop_at - timedelta(weeks=span)).timestamp()), int(stop_at.timestamp())
    with bounded_client(settings.prometheus.timeout_seconds) as client:
        api = prometheus_api(settings, client)
        if settings.router.source == "prometheus":
            stats = backfill_fleet(controller.store, controller.mapper, api, fleet_query(controller, settings),
                                   start=start, end=stop, progress=progress)
        else:
            stats = backfill(controller.store, controller.mapper, api, start=start, end=stop,
                             step=settings.prometheus.step_seconds, progress=progress,
                             selector=settings.prometheus.selector)
    controller.invalidate_history()
    log.info("backfill done: %d samples, %d minute rows stored, %d retries", stats.samples, stats.rows_written,
             stats.retries)
    return stats


def _backfill_in_background(controller: Controller, settings: Settings, end: datetime | None = None) -> None:
    try:
        run_backfill(controller, settings, end=end)
    except (CollectorError, ConfigError) as exc:
        log.warning("backfill at start failed, continuing with what is stored: %s", exc)
    except Exception:
        log.exception("backfill at start failed, continuing with what is stored")


class ShutdownDeadline:
    """Ends the process ``seconds`` after :meth:`start`, if it has not ended by itself: a
    SIGTERM must end diurnal within the pod's grace period whatever a peer does. Exiting
    hard loses nothing acknowledged (pushed events are in the store's journal) and at most
    ``control.checkpoint_seconds`` of scraped increase."""

    def __init__(self, seconds: float, exit: Callable[[int], None] = os._exit) -> None:
        self.seconds = seconds
        self._exit = exit
        self._done = threading.Event()
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            threading.Thread(target=self._watch, name="shutdown-deadline", daemon=True).start()

    def _watch(self) -> None:
        if not self._done.wait(self.seconds):
            log.error("diurnal did not stop within control.shutdown_seconds (%.0fs); exiting now. Pushed events "
                      "are in the store's journal and will be replayed at the next start.", self.seconds)
            logging.shutdown()
            self._exit(1)

    def finished(self) -> None:
        self._done.set()


def run(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """The sidecar: scrape, tick and serve until stopped. History persists in ``data_dir``.

    On SIGTERM it stops within ``control.shutdown_seconds``: the API drains, no job starts,
    the refit workers are stopped, the open minutes are written; whatever still hangs then is
    cut short (:class:`ShutdownDeadline`)."""
    for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
        logging.getLogger(name).addFilter(RepeatFilter())  # "skipped: maximum number of running instances"
    deadline = ShutdownDeadline(settings.control.shutdown_seconds)
    stop_tracing = setup_tracing(settings.tracing, package_version())
    controller = Controller.from_settings(settings, refit_in_step=False, write_behind=True)
    elector = leader_elector(settings).start() if settings.ha.enabled else None
    if elector is not None:
        controller.acting = elector.is_leader
        log.info("high availability: replica %s campaigns for the lease %s/%s; only its holder acts",
                 elector.identity, elector.client.namespace, elector.client.name)
    url = settings.router.metrics_url
    backfill_end: datetime | None = None
    reader: Scraper | FleetReader | None = None
    if settings.router.source == "prometheus":
        client = bounded_client(settings.prometheus.timeout_seconds)
        query = fleet_query(controller, settings)
        start = fleet_start(controller, settings)
        reader = FleetReader(controller, prometheus_api(settings, client, retries=1), query, settings, start=start)
        backfill_end = datetime.fromtimestamp(start - query.window_seconds, UTC)  # where the live input begins
        log.info("reading the router fleet from %s: %d metrics in one query per %ds window, %.0fs behind now, "
                 "from %s", redact(settings.prometheus.url or ""), query.metrics, query.window_seconds,
                 settings.prometheus.lag_seconds, datetime.fromtimestamp(start, UTC).isoformat())
    else:
        if url is None:
            log.warning("router.metrics_url is not set: nothing will be scraped")
        client = bounded_client(settings.router.scrape_timeout_seconds, follow_redirects=True)
        reader = Scraper(controller, client, url, settings) if url else None
    sched = build_scheduler(controller, reader, settings)
    sched.start()
    if settings.prometheus.url and settings.prometheus.backfill_weeks > 0:
        threading.Thread(target=_backfill_in_background, args=(controller, settings, backfill_end), daemon=True,
                         name="backfill").start()
    log.info("diurnal running in %s mode; store at %s", settings.guardrails.mode, controller.store.path)
    controller.freeze_heap()  # what start-up made stays: the collector's full passes skip it
    try:
        serve(controller, settings, stop=stop, on_signal=deadline.start)
    finally:
        deadline.start()  # also when the server stopped for another reason
        started = time.monotonic()
        sched.shutdown(wait=False)  # no new job; a scrape in flight ends by its own deadline
        controller.fit.refitter.close()  # a refit in flight gives up (its forecasts are kept)
        if reader is not None:
            reader.close()
        if elector is not None:
            elector.stop(release=True)  # another replica acts at once, without waiting out the lease
        client.close()
        controller.close()  # waits for a tick in flight, then writes the open minutes
        stop_tracing()
        deadline.finished()
        log.info("diurnal stopped in %.1fs; history flushed to %s", time.monotonic() - started,
                 controller.store.path)
