"""Schemathesis hooks for diurnal's API (``SCHEMATHESIS_HOOKS=bench.st_hooks``): how to send
a body of ``application/x-ndjson`` (``POST /v1/events``), which it does not know."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: Any, value: Any) -> bytes:
    """A generated string as it is; anything else (negative tests) as one JSON line."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()
