"""URL redaction (and escaping) for logs, terminals and result files: one definition for pipeline/ and trainer/.

It lives in engines/ only because both of them import engines; nothing in engines needs it.
"""

from __future__ import annotations

import logging
import re

SHOWN_CHARS = 200  # a longer URL is cut here in logs (a 100,000-character URL must not fill the log)
# Query options whose values are secrets: passwords, signed-URL tokens, API keys.
_SECRET_OPTIONS = re.compile(
    r"((?:^|&)(?:password|passwd|pwd|pass|token|access_token|auth|key|apikey|api_key|secret|signature|sig)=)[^&#]*",
    flags=re.IGNORECASE,
)


def redact(url: str, *, limit: int = SHOWN_CHARS) -> str:
    """``url`` as it may appear in a log line: passwords masked, control characters escaped, length bounded.

    The password of the user info (``rtsp://admin:***@host``; a user alone, the old Redis form, counts
    as a password: ``redis://***@host``) and the values of secret query options (``password=``,
    ``token=``, ``key=``, ``sig=``, ...) become ``***``. Characters below 0x20 and DEL are shown as
    ``\\xNN``, so a URL cannot draw on a terminal or forge a log line. Beyond ``limit`` characters
    the rest is replaced by a count.
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        head, q, query = rest.partition("?")
        if "@" in head:  # rpartition: an unescaped '@' or '/' in the password stays on the masked side
            userinfo, _, host = head.rpartition("@")
            user, colon, _ = userinfo.partition(":")
            head = f"{user}:***@{host}" if colon else f"***@{host}"
        query = _SECRET_OPTIONS.sub(r"\1***", query)
        url = f"{scheme}{sep}{head}{q}{query}"
    if len(url) > limit:
        url = f"{url[:limit]}...({len(url)} characters)"
    return printable(url)


def printable(text: str) -> str:
    """``text`` with every character that is not printable (ESC, CR, NUL, ...) shown as ``\\xNN`` or ``\\uNNNN``."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}" for c in text)


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def redact_text(text: str) -> str:
    """Free text (a log line, an exception, a traceback) with every ``scheme://...`` in it redacted (``redact``,
    no length bound); the rest is left as it is, line breaks included."""
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0), limit=1 << 62), text)


def redacting_handler(fmt: str, *, datefmt: str | None = None) -> logging.Handler:
    """A stderr handler whose lines pass ``RedactingFormatter``: what the entry points log through."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(fmt, datefmt=datefmt))
    return handler


class RedactingFormatter(logging.Formatter):
    """A logging formatter whose every line, exception text and traceback included, passes ``redact_text``:
    a password in a URL never reaches a log, whichever call site wrote it."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))
