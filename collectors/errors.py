"""diurnal's error tree. The root lives here, in the lowest package that raises, so that
``except DiurnalError`` catches every error diurnal raises, the collectors' included
(``controller.errors`` re-exports it with the controller's own errors)::

    DiurnalError
    ├── CollectorError          signals could not be read
    │   ├── ExpositionError     the text is not a valid Prometheus/OpenMetrics exposition
    │   ├── ScrapeError         the router could not be reached or answered an error
    │   ├── StoreError          the embedded store could not be opened or written
    │   ├── BackfillError       Prometheus' query API failed (collectors.backfill)
    │   └── CsvImportError      a CSV file could not be imported (raised by collectors.csv_import)
    ├── ConfigError             a setting is missing or invalid; the message names the field
    ├── NotReadyError           asked for something that has no data yet
    ├── ForecastError           a series cannot be forecast (also a ValueError)
    ├── RefitTimeout            a refit missed its deadline (also a TimeoutError)
    └── KubernetesError         the Kubernetes API refused or could not be reached

Third-party errors are translated at the boundary with ``raise … from exc``.
"""

__all__ = ["CollectorError", "CsvImportError", "DiurnalError", "ExpositionError", "ScrapeError", "StoreError"]


class DiurnalError(Exception):
    """The root of every error diurnal raises."""


class CollectorError(DiurnalError):
    """Base class of the collectors' errors."""


class ExpositionError(CollectorError):
    """The exposition could not be parsed. Nothing from it was ingested."""


class ScrapeError(CollectorError):
    """The router's metrics endpoint could not be read."""


class StoreError(CollectorError):
    """The embedded store failed."""


class CsvImportError(CollectorError):
    """The CSV file cannot be imported as asked."""
