"""Errors raised by the collectors.

    CollectorError
    ├── ExpositionError      the text is not a valid Prometheus/OpenMetrics exposition
    ├── ScrapeError          the router could not be reached or answered an error
    └── StoreError           the embedded store could not be opened or written
"""


class CollectorError(Exception):
    """Base class of the collectors' errors."""


class ExpositionError(CollectorError):
    """The exposition could not be parsed. Nothing from it was ingested."""


class ScrapeError(CollectorError):
    """The router's metrics endpoint could not be read."""


class StoreError(CollectorError):
    """The embedded store failed."""
