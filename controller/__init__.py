"""diurnal's controller: settings, forecaster, control loop, guardrails, API and CLI.

The embedding API::

    from controller import Controller, Settings
    ctl = Controller.from_settings(Settings(...), clock=...)
    ctl.ingest_exposition(text, at=...)
    decision = ctl.step(at=...)
"""

from collectors.errors import CollectorError, ExpositionError, ScrapeError, StoreError
from controller.core import Controller, decision_body
from controller.errors import ConfigError, DiurnalError, NotReadyError
from controller.settings import Settings, load_settings
from policies import Decision, PrewarmAction, Reason

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
    "ScrapeError",
    "Settings",
    "StoreError",
    "decision_body",
    "load_settings",
]
