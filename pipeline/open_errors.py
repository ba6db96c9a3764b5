"""Why FFmpeg could not open a source, in the words its error code does not carry.

FFmpeg's error for a failed open is an errno, and three of them misled: a redirect to ``file:`` read
"Invalid argument" (the protocol whitelist refusing it), a y4m header of width 0 "Device or resource
busy" (FFmpeg adds the frame marker's length to EINVAL: -22 + 6 = -16, EBUSY), an https camera whose
certificate is not trusted "Input/output error". ``explain`` looks once more, after the failure, at what
the errno stands for: the redirects on the way (a GET each, no body read, nothing followed but http(s)),
the TLS handshake (Python's, with the same CA policy) or the y4m header, and says what happened; None
when that look finds nothing, and the errno stands.
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import av

from engines.urls import redact
from pipeline.policy import SourcePolicy, url_scheme

MAX_HOPS = 5  # redirects followed while looking for the one FFmpeg refused
_TLS_PORTS = {"https": 443, "rtsps": 322}


def explain(url: str, policy: SourcePolicy, exc: BaseException, *, path: Path | None, timeout: float) -> str | None:
    """What ``exc``, FFmpeg's error opening ``url`` (``path``: the regular file it names), stands for."""
    scheme = url_scheme(url)
    if scheme in ("http", "https") and isinstance(exc, av.error.ArgumentError):  # the protocol whitelist, mostly
        return refused_redirect(url, policy, timeout=timeout) or (
            f"{exc.strerror}: FFmpeg refused a protocol or option on the way (a playlist entry off http(s)?)"
        )
    if scheme in _TLS_PORTS and isinstance(exc, OSError) and exc.errno == errno.EIO:
        return untrusted_certificate(url, policy, timeout=timeout)
    if path is not None:
        return y4m_dimensions(path)
    return None


def refused_redirect(url: str, policy: SourcePolicy, *, timeout: float) -> str | None:
    """The redirect on the way from ``url`` to a protocol FFmpeg may not follow there, in words; None if none
    (or not found within ``timeout`` seconds). A hostile server can slow only this look, its own stream's retry."""
    scheme = url_scheme(url)
    allowed = ("http", "https") if scheme == "http" else ("https",)  # as policy's protocol_whitelist
    deadline = time.monotonic() + timeout  # all hops together; a connection gets what is left of it
    for _ in range(MAX_HOPS):
        left = deadline - time.monotonic()
        try:
            location = _location(url, policy, timeout=left) if left > 0 else None
        except (OSError, http.client.HTTPException, ValueError):
            return None
        if location is None:
            return None
        target = urljoin(url, location)
        if url_scheme(target) not in allowed:
            return (
                f"redirect refused: the server sent it to {redact(target)!r}, and an {scheme} source follows "
                f"redirects to {' or '.join(allowed)} only"
            )
        url = target
    return None


def _location(url: str, policy: SourcePolicy, *, timeout: float) -> str | None:
    """The Location of the answer to a GET of ``url`` when it is a redirect (its body never read)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=_tls_context(policy)
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        answer = conn.getresponse()
        return answer.getheader("Location") if 300 <= answer.status < 400 else None
    finally:
        conn.close()


def untrusted_certificate(url: str, policy: SourcePolicy, *, timeout: float) -> str | None:
    """Why the TLS certificate of ``url``'s host is not trusted under ``policy``, in words; None if it is."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or _TLS_PORTS[parts.scheme.lower()]
        with socket.create_connection((host, port), timeout=timeout) as sock:
            _tls_context(policy).wrap_socket(sock, server_hostname=host).close()
    except ssl.SSLCertVerificationError as exc:
        trusted = (
            f"trusted: the CAs of [sources] ca_file {policy.ca_file}"
            if policy.ca_file
            else "trusted: the system's CAs; [sources] ca_file adds a self-signed camera's"
        )
        return f"certificate not trusted: {str(exc.verify_message).rstrip('.')} ({trusted})"
    except (OSError, ValueError, KeyError):
        return None
    return None


def y4m_dimensions(path: Path) -> str | None:
    """``path``'s YUV4MPEG header, in words, when its width or height is not a positive number; else None."""
    try:
        with open(path, "rb") as file:
            head = file.read(128)
    except OSError:
        return None
    if not head.startswith(b"YUV4MPEG2 "):
        return None
    size = {t[:1]: t[1:] for t in head.split(b"\n", 1)[0].split()[1:] if t[:1] in (b"W", b"H")}
    try:
        width, height = int(size[b"W"]), int(size[b"H"])
    except (KeyError, ValueError):
        return "invalid dimensions: its YUV4MPEG header names no width (W) or height (H)"
    if width > 0 and height > 0:
        return None
    return f"invalid dimensions {width}x{height} in its YUV4MPEG header"


def _tls_context(policy: SourcePolicy) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(policy.ca_file) if policy.ca_file else None)
