"""The HTTP API (FastAPI): decisions for routers to poll, forecasts, profiles, health, metrics.

Binds to loopback by default. Write endpoints (added by later features) require the bearer
token from ``api.token``; see :func:`require_token`.
"""

from __future__ import annotations

import hmac
import logging
import math
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from collectors.errors import StoreError
from collectors.hour_of_week import profile, profile_cells
from collectors.signals import DERIVED, hourly
from controller.fit import ALL
from controller.loop import Controller, package_version
from controller.publish import day_plan_body, decision_body, plan_body
from policies import Override

log = logging.getLogger("diurnal.api")


def _controller(request: Request) -> Controller:
    c: Controller = request.app.state.controller
    return c


Ctl = Annotated[Controller, Depends(_controller)]

#: Largest accepted POST body (a batch of events). Measured in bytes.
MAX_BODY_BYTES = 32 * 1024 * 1024


def require_token(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Refuse a write unless it carries the configured bearer token (compared in constant time)."""
    token = _controller(request).settings.api.token
    if token is None:
        raise HTTPException(403, "writes are disabled: set api.token (DIURNAL_API__TOKEN) to enable them")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


Writer = Annotated[None, Depends(require_token)]


class Problem(BaseModel):
    """Every error's body: what was wrong, as a sentence, or FastAPI's list of invalid fields."""

    detail: str | list[dict[str, Any]]


class EventError(BaseModel):
    line: int = Field(description="1-based line of the body.")
    error: str


class EventsResult(BaseModel):
    """What a POST of events did: accepted lines are counted, each rejected one says why."""

    accepted: int
    rejected: int
    errors: list[EventError] = Field(description="The first 1,000 rejected lines.")


class MissingSignalOut(BaseModel):
    provider: str
    signal: str
    tried: list[str]


class ReadyOut(BaseModel):
    status: str
    decision_at: str | None = None
    detail: str | None = None
    missing_signals: list[MissingSignalOut] = []


class OverrideOut(BaseModel):
    id: str
    knob: str
    value: float
    expires_at: str
    reason: str
    created_at: str | None


class OverrideMade(OverrideOut):
    applies_from: str
    replaced: list[str] = Field(description="Ids of the active overrides on the same knob it replaced.")


class OverridesOut(BaseModel):
    overrides: list[OverrideOut]


def problems(**codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error codes (``_401="..."``), each answering a :class:`Problem`."""
    return {int(code.lstrip("_")): {"model": Problem, "description": what} for code, what in codes.items()}


WRITE_ERRORS = problems(_401="Missing or wrong token", _403="Writes disabled (no api.token)")


#: Longest an override may last. Measured in seconds (7 days).
MAX_OVERRIDE_SECONDS = 7 * 86400


class OverrideIn(BaseModel):
    """A pin on one knob until it expires."""

    model_config = ConfigDict(extra="forbid", strict=True)  # no `"value": false` read as 0.0
    knob: str = Field(description="The knob, e.g. weights/openai.", pattern=r"^weights/[^/\x00-\x1f\x7f]+$")
    value: float = Field(ge=0, le=1, description="The weight to pin (a fraction of traffic).")
    ttl_seconds: float = Field(gt=0, le=MAX_OVERRIDE_SECONDS, description="How long it lasts. Measured in seconds.")
    reason: str = Field(default="", max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$",
                        description="Why, for the decision's reasons and the audit. One line: no control "
                                    "characters (a newline would forge a line of the log).")


def _override_out(o: Override) -> dict[str, Any]:
    return {"id": o.id, "knob": o.knob, "value": o.value, "expires_at": o.expires_at.isoformat(), "reason": o.reason,
            "created_at": o.created_at.isoformat() if o.created_at else None}


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes:
    from ``Content-Length`` before reading anything, else while streaming."""
    too_big = HTTPException(413, f"body over {limit} bytes; send smaller batches")
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def one_value_per_parameter(request: Request) -> None:
    """Refuse a declared query parameter given more than once (``?components=1&components=2``):
    each is a single value, and silently taking the last one would hide a client's bug."""
    route = request.scope.get("route")
    declared = {p.alias for p in route.dependant.query_params} if isinstance(route, APIRoute) else set()
    seen: set[str] = set()
    for key, _ in request.query_params.multi_items():
        if key in declared and key in seen:
            raise HTTPException(422, f"query parameter {key!r} given more than once; it takes one value")
        seen.add(key)


def not_modified(if_none_match: str, etag: str) -> bool:
    """RFC 9110's weak comparison for ``If-None-Match``: ``*`` matches any current
    representation, and ``W/"x"`` matches ``"x"``."""
    def opaque(tag: str) -> str:
        tag = tag.strip()
        return tag[2:] if tag.startswith("W/") else tag

    tags = [t.strip() for t in if_none_match.split(",") if t.strip()]
    return "*" in tags or opaque(etag) in {opaque(t) for t in tags}


def create_app(controller: Controller) -> FastAPI:
    app = FastAPI(
        title="diurnal",
        version=package_version(),
        summary="Time-aware routing decisions for an LLM router.",
        # No Swagger UI or ReDoc: they load from a CDN, blank offline. The OpenAPI document
        # stays at /openapi.json, for any viewer or client generator.
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(one_value_per_parameter)],
    )
    app.state.controller = controller

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """FastAPI's answer, plus the ``Allow`` header a 405 must carry (RFC 9110)."""
        response = await http_exception_handler(request, exc)
        if exc.status_code == 405:
            allowed = {m for route in app.routes if isinstance(route, APIRoute)
                       and route.path_regex.match(request.url.path) for m in route.methods or ()}
            response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    def openapi() -> dict[str, Any]:
        """The generated document, with the knobs an override may pin listed when the
        providers are configured (else any ``weights/<provider>`` seen so far)."""
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            providers = sorted(controller.settings.policy.providers)
            if providers:
                knob = doc["components"]["schemas"]["OverrideIn"]["properties"]["knob"]
                knob["enum"] = [f"weights/{p}" for p in providers]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/healthz", summary="Liveness: the process answers.")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyOut,
             summary="Readiness: a decision exists to serve. `degraded` (still 200) names the signals the "
                     "router's input lacks.",
             responses={503: {"model": ReadyOut, "description": "No decision yet"}})
    def readyz(c: Ctl) -> JSONResponse:
        if c.decision is None:
            return JSONResponse({"status": "starting", "detail": "no decision has been made yet"}, status_code=503)
        missing = [{"provider": m.provider, "signal": m.signal, "tried": list(m.tried)} for m in c.missing]
        if not missing:
            return JSONResponse({"status": "ready", "decision_at": c.decision.at.isoformat()})
        # Still 200: in sidecar mode readiness gates the router's own pod, which must keep
        # serving; the weights stay at the baseline meanwhile.
        return JSONResponse({"status": "degraded", "decision_at": c.decision.at.isoformat(),
                             "detail": "; ".join(m.describe() for m in c.missing) + "; weights held at the baseline",
                             "missing_signals": missing})

    @app.get("/metrics", summary="Prometheus metrics.", response_class=Response)
    def metrics(c: Ctl) -> Response:
        return Response(generate_latest(c.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/decision",
        summary="The current decision. Poll it with If-None-Match; 304 when unchanged.",
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}},
                          "description": "The decision (see the README for its fields)"},
                   304: {"description": "Not modified"}, **problems(_422="Bad parameter", _503="No decision yet")},
    )
    def get_decision(
        c: Ctl,
        if_none_match: Annotated[str | None, Header()] = None,
        explain: Annotated[bool, Query(description="Include every reason in full.")] = False,
    ) -> Response:
        decision, etag = c.decision, c.etag
        if decision is None or etag is None:
            raise HTTPException(503, "no decision has been made yet")
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if if_none_match is not None and not_modified(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        body = decision_body(decision)
        body["tz"] = c.settings.timezone  # the zone of its reasons' local times
        if explain:
            body["plan"] = plan_body(decision)
            body["day_plans"] = day_plan_body(decision)
            body["observations"] = [
                {"signal": signal, "provider": provider, "value": value}
                for (signal, provider), value in sorted(c.observations().items())
            ]
            body["forecast_now"] = [
                {"signal": signal, "provider": provider, **row}
                for (signal, provider), row in sorted(c.current_forecasts().items())
            ]
        return JSONResponse(body, headers=headers)

    @app.post(
        "/v1/events",
        summary="Push per-request events as JSON lines (needs the bearer token).",
        response_model=EventsResult,
        responses={**WRITE_ERRORS,
                   422: {"model": EventsResult | Problem, "description": "No line was valid, or the body was empty"},
                   **problems(_413="Body too large", _503="The store could not take the events (none accepted)")},
        openapi_extra={"requestBody": {"content": {"application/x-ndjson": {"schema": {"type": "string", "pattern": r"\S"}}},
                                       "required": True}},
    )
    async def post_events(request: Request, c: Ctl, _: Writer) -> JSONResponse:
        body = await _bounded_body(request, MAX_BODY_BYTES)
        if not body.strip():
            raise HTTPException(422, "the body holds no event: send JSON lines, one event per line")
        try:
            batch = await run_in_threadpool(c.ingest_events, body)  # keep the event loop free for polls
        except StoreError as exc:
            log.warning("events refused: %s", exc)
            raise HTTPException(503, "the events could not be stored, so none was accepted; retry later",
                                headers={"Retry-After": "10"}) from exc
        status = 200 if not batch.errors or batch.accepted else 422
        return JSONResponse({"accepted": batch.accepted, "rejected": len(batch.errors), "errors": batch.errors[:1000]},
                            status_code=status)

    @app.get("/v1/overrides", summary="Active manual overrides.", response_model=OverridesOut)
    def list_overrides(c: Ctl) -> dict[str, Any]:
        return {"overrides": [_override_out(o) for o in c.overrides.active(c.clock_now())]}

    @app.post("/v1/overrides", status_code=201,
              summary="Pin a knob until it expires (needs the bearer token); replaces any active pin on that knob.",
              response_model=OverrideMade,
              responses={**WRITE_ERRORS, **problems(_400="The body is not JSON", _422="Unknown knob or bad value")})
    def post_override(body: OverrideIn, c: Ctl, _: Writer) -> dict[str, Any]:
        provider = body.knob.split("/", 1)[1]
        known = set(c.policy_config().providers)
        if provider not in known:
            raise HTTPException(422, f"unknown provider {provider!r} in {body.knob!r}; known: {', '.join(sorted(known))}")
        now = c.clock_now()
        o, replaced = c.overrides.add(body.knob, body.value, now + timedelta(seconds=body.ttl_seconds), body.reason,
                                      now)
        log.info("override %s: %s pinned to %.3f until %s (%s)%s", o.id, o.knob, o.value, o.expires_at.isoformat(),
                 o.reason or "no reason given",
                 f"; replaces {', '.join(r.id for r in replaced)}" if replaced else "")
        return {**_override_out(o), "applies_from": "the next control tick", "replaced": [r.id for r in replaced]}

    @app.delete("/v1/overrides/{oid}", status_code=204, summary="Remove an override (needs the bearer token).",
                responses={**WRITE_ERRORS, **problems(_404="No such override", _422="Bad id")})
    def delete_override(oid: str, c: Ctl, _: Writer) -> Response:
        if not c.overrides.remove(oid):
            raise HTTPException(404, f"no override {oid!r}")
        log.info("override %s removed", oid)
        return Response(status_code=204)

    @app.get("/v1/forecast", summary="Current forecasts per signal and provider, with model, skill and gate.",
             responses=problems(_422="Bad parameter"))
    def get_forecast(
        c: Ctl,
        components: Annotated[int, Query(ge=0, le=8 * 168,
                                         description="Also return the last N hours of the decomposition.")] = 0,
    ) -> dict[str, Any]:
        out = []
        for (signal, provider), sf in sorted(c.forecasts().items()):
            fit, sel = sf.fit, sf.fit.selection
            item: dict[str, Any] = {
                "signal": signal,
                "provider": provider,
                "model": fit.model,
                "stage": fit.stage,
                "history_days": round(fit.history_days, 3),
                "skill": _num(sel.skill) if sel else None,
                "seasonality_gain": _num(sel.seasonality_gain) if sel else None,
                "backtest_mae": {k: _num(v) for k, v in sel.scores.items()} if sel else {},
                "trusted": sf.trusted,
                "gate": sf.gate,
                "message": sf.message,
                "fitted_at": sf.fitted_at.isoformat(),
                "failed_refits": sf.failures,
                "outliers_replaced": fit.outliers,
                "points": [
                    {"at": ts.isoformat(), **{k: _num(row[k]) for k in ("mean", "lower", "upper")}}
                    for ts, row in fit.frame.iterrows()
                ],
            }
            if components and fit.decomposition is not None:
                tail = fit.decomposition.iloc[-components:]
                item["components"] = [
                    {"at": ts.isoformat(), **{k: _num(row[k]) for k in ("trend", "daily", "weekly", "residual")}}
                    for ts, row in tail.iterrows()
                ]
            out.append(item)
        return {"tz": c.settings.timezone, "forecasts": out}

    @app.get("/v1/report", summary="The shadow report: what acting would have changed over the last 7 days.",
             description="Diurnal's own decisions of each minute (kept whatever the mode) against what the router "
                         "did, its static weights and latency-based routing: cost, SLO-risk minutes, 429s and "
                         "shares per policy, estimated from each provider's learned SLO capacity (the shape of "
                         "`diurnal replay --json`, with `would_save_usd` and `computed_at`). Refreshed every "
                         "hour.",
             responses=problems(_404="No report yet (too few decisions kept, or not computed yet)"))
    def get_report(c: Ctl) -> dict[str, Any]:
        report, error = c.shadow.latest()
        if report is None:
            raise HTTPException(404, error or "no report yet")
        return report

    @app.get("/v1/profile", summary="Hour-of-week profile of one signal.",
             responses=problems(_422="Unknown signal"))
    def get_profile(
        c: Ctl,
        signal: Annotated[str, Query(description="Derived signal, e.g. latency_p95.",
                                     json_schema_extra={"enum": sorted(DERIVED)})] = "latency_p95",
        provider: Annotated[str, Query(description="Provider, or * for all (latency: all traffic's).")] = ALL,
        weeks: Annotated[int, Query(ge=1, le=52, description="Weeks of history.")] = 8,
    ) -> dict[str, Any]:
        if signal not in DERIVED:
            raise HTTPException(422, f"unknown signal {signal!r}; known: {', '.join(sorted(DERIVED))}")
        now = int(c.now().timestamp())
        series = hourly(c.store, signal, c.settings.timezone, now - weeks * 7 * 86400, now,
                        None if provider == ALL else provider)
        cells = profile_cells(profile(series, c.settings.timezone))
        return {"signal": signal, "series": provider, "tz": c.settings.timezone, "cells": cells}

    return app


def _num(v: Any) -> float | None:
    f = float(v)
    return None if math.isnan(f) else f

