"""The controller's errors, under the one root :class:`DiurnalError` (drawn in full in
:mod:`collectors.errors`, where the root lives so that the collectors' errors share it)."""

from collectors.errors import DiurnalError

__all__ = ["ConfigError", "DiurnalError", "NotReadyError"]


class ConfigError(DiurnalError):
    """A setting is missing or invalid. The message names the field and the fix."""


class NotReadyError(DiurnalError):
    """The requested value does not exist yet (e.g. no decision has been made)."""
