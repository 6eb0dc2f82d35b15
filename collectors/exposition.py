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


class ExpositionParser:
    """:func:`parse_exposition` with a cache of series identities, for repeated scrapes.

    A router exposes nearly the same series on every scrape; only the values change. The
    series part of a sample line (``name{labels}``, up to the last ``}``: values and
    timestamps never contain one) is parsed once by prometheus_client and remembered; for a
    known series only the value is read. Unknown series, and any line whose value does not
    read as a number, go through prometheus_client, so errors are reported exactly as there.
    OpenMetrics is always parsed in full (its EOF and metadata rules matter).
    """

    def __init__(self, max_series: int = 200_000) -> None:
        self.max_series = max_series
        self._known: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}

    def parse(self, text: str, *, content_type: str | None = None) -> list[Sample]:
        if _is_openmetrics(text, content_type):
            return parse_exposition(text, content_type=content_type)
        known = self._known
        out: list[Sample] = []
        unknown: list[str] = []
        for line in text.split("\n"):
            if not line or line[0] == "#":
                continue
            cut = _series_end(line)
            hit = known.get(line[:cut]) if cut > 0 else None
            if hit is not None:
                rest = line[cut:].split()
                if 1 <= len(rest) <= 2:
                    try:
                        out.append(Sample(hit[0], hit[1], float(rest[0])))
                        continue
                    except ValueError:
                        pass
            unknown.append(line)
        for line in unknown:  # raises ExpositionError on a bad line: the scrape is rejected whole
            samples = parse_exposition(line + "\n")
            cut = _series_end(line)
            if len(samples) == 1 and cut > 0 and len(known) < self.max_series:
                known[line[:cut]] = (samples[0].name, samples[0].labels)
            out.extend(samples)
        return out


def _series_end(line: str) -> int:
    """Where the series part (``name{labels}``) of a sample line ends: after the last ``}``
    (values and timestamps never contain one), else at the first space; <= 0 if neither."""
    close = line.rfind("}")
    return close + 1 if close >= 0 else line.find(" ")


def _is_openmetrics(text: str, content_type: str | None) -> bool:
    return (content_type or "").startswith(OPENMETRICS_CONTENT_TYPE) or text.rstrip().endswith("# EOF")


def parse_exposition(text: str, *, content_type: str | None = None) -> list[Sample]:
    """Parse ``text``; raise :class:`ExpositionError` if any of it is malformed.

    The whole exposition is rejected on the first bad line, so a half-read scrape is
    never ingested. OpenMetrics is chosen by ``content_type`` or by a trailing ``# EOF``.
    """
    is_om = _is_openmetrics(text, content_type)
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
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:  # Overflow: a 400-digit integer
        kind = "OpenMetrics" if is_om else "Prometheus text"
        detail = str(exc) or f"{type(exc).__name__} while parsing"
        raise ExpositionError(f"malformed {kind} exposition: {detail}") from exc
    return samples
