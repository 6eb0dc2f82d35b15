"""The ``diurnal`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from controller.core import package_version
from controller.errors import ConfigError
from controller.settings import Settings, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_check_config(args: argparse.Namespace) -> int:
    s = load_settings(args.file)
    providers = ", ".join(f"{n}={p.baseline_weight:g}" for n, p in s.policy.providers.items()) or "none (equal shares)"
    print(f"{args.file}: OK")
    print(f"  timezone {s.timezone}; mode {s.guardrails.mode}; data_dir {s.data_dir}")
    print(f"  router {s.router.metrics_url or '(not set)'} with the {s.router.preset} preset")
    print(f"  providers: {providers}")
    print(f"  API on {s.api.host}:{s.api.port}; writes {'need the token' if s.api.token else 'disabled (no api.token)'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from controller.service import run

    s = _settings(args)
    _logging(s.log_level)
    run(s)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from controller.demo import cleanup, run_demo, summary
    from controller.service import serve

    _logging("WARNING")
    print(f"Running diurnal against the simulated router for {args.weeks} weeks "
          f"(time compressed; the last week is scored against static weights)...", flush=True)
    result = run_demo(weeks=args.weeks, seed=args.seed, data_dir=args.data_dir,
                      progress=lambda msg: print(msg, flush=True))
    print()
    print(summary(result), flush=True)
    if args.serve:
        settings = result.settings.model_copy(update={"api": result.settings.api.model_copy(update={"port": args.port})})
        print(f"\nServing the demo's state on http://{settings.api.host}:{args.port} "
              "(/v1/decision, /v1/forecast, /v1/profile, /metrics). Ctrl-C to stop.", flush=True)
        serve(result.controller, settings)  # returns on Ctrl-C or SIGTERM
    cleanup(result, keep=args.data_dir is not None)
    return 0


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # These log a line per scrape or job run at INFO; the sidecar reports failures itself.
    for noisy in ("apscheduler", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, getattr(logging, level)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diurnal", description="Time-aware sidecar for LLM routers.")
    parser.add_argument("--version", action="version", version=f"diurnal {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the sidecar: scrape the router, decide, serve the API")
    run.add_argument("--config", type=Path, help="YAML settings file (environment DIURNAL_* overrides it)")
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="run against the built-in simulated router, time compressed")
    demo.add_argument("--weeks", type=int, default=3, help="simulated weeks; the last is scored (default 3)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the simulated world")
    demo.add_argument("--data-dir", type=Path, help="keep the store here (default: a temp dir, removed after)")
    demo.add_argument("--serve", action="store_true", help="keep the API up afterwards")
    demo.add_argument("--port", type=int, default=8787, help="API port with --serve")
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("check-config", help="validate a settings file and name any bad field")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"diurnal: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
