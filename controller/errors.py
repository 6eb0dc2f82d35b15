"""diurnal's exceptions.

    DiurnalError
    ├── ConfigError          a setting is missing or invalid; the message names the field
    └── NotReadyError        asked for something that has no data yet

Collector-side errors live in :mod:`collectors.errors` (``CollectorError`` and its children):
the collectors package cannot import the controller. Both are re-exported from
:mod:`controller`.
"""


class DiurnalError(Exception):
    """Base class of the controller's errors."""


class ConfigError(DiurnalError):
    """A setting is missing or invalid. The message names the field and the fix."""


class NotReadyError(DiurnalError):
    """The requested value does not exist yet (e.g. no decision has been made)."""
