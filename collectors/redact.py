"""Keeping secrets out of logs, errors and API bodies.

:func:`redact` masks what a URL may carry: the ``user:password@`` part and the values of
query parameters whose names say they are secret (``token``, ``key``, ``secret``, ``password``,
``signature``…). :class:`RedactingFilter` applies it, and a list of known secret values (the
configured tokens and passwords), to every log record, traceback included: whatever a library
or an exception puts in a message, the handler never writes the secret.

Here, in the lowest layer, because the collectors' errors (a scrape, a backfill) name URLs too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["MASK", "RedactingFilter", "redact"]

MASK = "***"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]*@")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;][^=&\s#]*(?:token|key|secret|password|passwd|pwd|sig|signature|auth|credential)[^=&\s#]*=)[^&\s#'\"]*[^&\s#'\":,;.)\]]")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL credentials, secret query values and each of ``secrets`` masked."""
    text = _USERINFO.sub(rf"\g<1>{MASK}@", text)
    text = _SECRET_PARAM.sub(rf"\g<1>{MASK}", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in each record's message and traceback. Install it on the handlers."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so that a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True
