"""Parse a Prometheus text or OpenMetrics exposition into flat samples."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.openmetrics import parser as om_parser
from prometheus_client.parser import text_string_to_metric_families

from collectors.errors import ExpositionError

OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text"


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample line: ``name{labels} value``."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str) -> str | None:
        for k, v in self.labels:
            if k == key:
                return v
        return None


def parse_exposition(text: str, *, content_type: str | None = None) -> list[Sample]:
    """Parse ``text``; raise :class:`ExpositionError` if any of it is malformed.

    The whole exposition is rejected on the first bad line, so a half-read scrape is
    never ingested. OpenMetrics is chosen by ``content_type`` or by a trailing ``# EOF``.
    """
    is_om = (content_type or "").startswith(OPENMETRICS_CONTENT_TYPE) or text.rstrip().endswith(
        "# EOF"
    )
    families: Iterable[object]
    try:
        if is_om:
            families = list(om_parser.text_string_to_metric_families(text))  # type: ignore[no-untyped-call]
        else:
            families = list(text_string_to_metric_families(text))
        samples = [
            Sample(s.name, tuple(sorted(s.labels.items())), float(s.value))
            for fam in families
            for s in fam.samples  # type: ignore[attr-defined]
        ]
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        kind = "OpenMetrics" if is_om else "Prometheus text"
        detail = str(exc) or f"{type(exc).__name__} while parsing"
        raise ExpositionError(f"malformed {kind} exposition: {detail}") from exc
    return samples
