"""diurnal's controller: the loop and its stages, the forecaster, the actuators and the entry
points. Where things are:

- ``controller/`` itself: the loop (:mod:`~controller.loop`, the :class:`Controller`) and its
  stages in tick order, :mod:`~controller.collect`, :mod:`~controller.fit`,
  :mod:`~controller.decide` and :mod:`~controller.publish`; the settings, the errors, and the
  metrics the loop keeps (:mod:`~controller.metrics`, :mod:`~controller.telemetry`);
- ``controller/forecast/``: the forecaster, the refit workers and the capacity learned from history;
- ``controller/actuators/``: what touches the world (publishers, prewarm executor and
  Kubernetes client, overrides store, audit log);
- ``controller/entrypoints/``: CLI, service, HTTP API, demo, explain, tracing setup.

The embedding API::

    from controller import Controller, Settings
    ctl = Controller.from_settings(Settings(...), clock=...)
    ctl.ingest_exposition(text, at=...)
    decision = ctl.step(at=...)
"""

from collectors.errors import CollectorError, DiurnalError, ExpositionError, ScrapeError, StoreError
from controller.errors import ConfigError, NotReadyError
from controller.loop import Controller
from controller.publish import decision_body
from controller.settings import Settings, load_settings
from policies import Decision, PrewarmAction, Reason, ReasonCode

__all__ = [
    "CollectorError",
    "ConfigError",
    "Controller",
    "Decision",
    "DiurnalError",
    "ExpositionError",
    "NotReadyError",
    "PrewarmAction",
    "Reason",
    "ReasonCode",
    "ScrapeError",
    "Settings",
    "StoreError",
    "decision_body",
    "load_settings",
]
