"""Serve the simulated router's /metrics over HTTP (loopback by default).

    python -m sim serve --port 9400 [--speed 60] [--decision-url http://127.0.0.1:8787/v1/decision]

With ``--speed`` the simulated clock runs that many times faster than the wall clock. With
``--decision-url`` the router polls diurnal's decision and routes by its weights, as a real
router integration would.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sim.world import STATIC_WEIGHTS, SimulatedRouter, WorldSpec

log = logging.getLogger("diurnal.sim")


def compressed_clock(speed: float, start: datetime | None = None) -> Callable[[], datetime]:
    """A clock that starts at ``start`` (default: now) and runs ``speed`` times faster."""
    origin = start or datetime.now(UTC)
    t0 = time.monotonic()
    return lambda: origin + timedelta(seconds=(time.monotonic() - t0) * speed)


class RouterServer:
    """A threaded HTTP server around one :class:`SimulatedRouter`."""

    def __init__(self, router: SimulatedRouter, host: str = "127.0.0.1", port: int = 0) -> None:
        self.router = router
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                with outer._lock:
                    body = outer.router.scrape().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug(format, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/metrics"

    def set_weights(self, weights: dict[str, float]) -> None:
        with self._lock:
            self.router.set_weights(weights)

    def start(self) -> RouterServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def follow_decisions(server: RouterServer, url: str, interval: float, stop: threading.Event) -> None:
    """Poll diurnal's decision and apply its weights, with ETag caching, until ``stop``."""
    etag: str | None = None
    while not stop.wait(interval):
        req = urllib.request.Request(url, headers={"If-None-Match": etag} if etag else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - operator-given URL
                etag = resp.headers.get("ETag")
                server.set_weights(json.load(resp)["weights"])
        except urllib.error.HTTPError as exc:
            if exc.code not in (304, 503):
                log.warning("decision poll answered HTTP %s", exc.code)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("decision poll failed: %s", exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve /metrics of a simulated LiteLLM router")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9400)
    serve.add_argument("--seed", type=int, default=7)
    serve.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall-clock second")
    serve.add_argument("--decision-url", help="poll this diurnal /v1/decision and route by its weights")
    serve.add_argument("--poll-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    clock = compressed_clock(args.speed)
    router = SimulatedRouter(WorldSpec(), seed=args.seed, start=clock(), weights=STATIC_WEIGHTS, clock=clock)
    server = RouterServer(router, args.host, args.port).start()
    print(f"simulated router on {server.url} (speed x{args.speed:g})", flush=True)
    stop = threading.Event()
    if args.decision_url:
        threading.Thread(target=follow_decisions, args=(server, args.decision_url, args.poll_seconds, stop),
                         daemon=True).start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.stop()
    return 0
