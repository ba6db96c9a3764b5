"""What a source may point at: the one allow-list and URL policy every stream passes, wherever it comes from.

Streams come from the operator (command line, config file) and from whoever can write the Redis
control hash. Before a stream starts, ``SourcePolicy.admit`` checks it:

- the URL is at most ``max_url_length`` characters and holds no control characters;
- a URL's scheme (``rtsp://``, or FFmpeg's ``proto:`` form such as ``concat:`` or ``pipe:``) is
  one of ``allow_schemes`` (default rtsp, rtsps, http, https). Its options are read as FFmpeg
  reads them (``ffmpeg_url_options``: everything after the first ``?``, split at ``&``, a ``#``
  included), and a ``#`` is refused outright; a ``listen`` option or SRT's ``mode=listener`` /
  ``rendezvous``, which would make FFmpeg open a listening socket, is refused;
- a UDP source (``udp``, ``udplite``, ``rtp``, where an operator allows them) receives, so it binds
  a local address: FFmpeg binds the wildcard (every interface) for any unicast host. Its host (or
  its ``localaddr`` option) must be an IP address that is not the wildcard, and FFmpeg is told to
  bind exactly that (``localaddr``); a multicast group binds the group. ``udp_bind_any`` allows
  the wildcard;
- anything else is a local path. With ``allow_dirs`` empty (the default) local files come only
  from the operator, never from the control hash; with folders listed, a local file from any
  origin must resolve (symlinks followed) to a file inside one of them. It must be a regular file
  or a FIFO: devices (``/dev/zero``), directories and sockets are refused.

When FFmpeg opens an admitted source, ``ffmpeg_options`` adds what FFmpeg itself must enforce: a
``protocol_whitelist`` per scheme (an HLS playlist cannot send FFmpeg to ``file:``, ``tcp:`` or
``udp:``; a local file opens only as ``file:``), certificate checks for ``https`` and ``rtsps``
(``tls_verify``, the system's CAs or ``ca_file``), and ``max_pixels``, so a decoder refuses a
frame larger than that before it allocates it (one 16000x16000 PNG took 1.15 GB). An http(s)
connection makes at most ``max_http_requests`` requests without a decoded frame (``pipeline.http_budget``):
an HLS playlist that lists itself, or whose segments all fail, no longer floods its server.

What this cannot do: an HLS playlist on an allowed host may still name segments on other http(s)
hosts (FFmpeg fetches them without asking), and FFmpeg does not pass ``tls_verify`` on to those
nested requests. Deploy with an egress policy (deploy/k8s/base/networkpolicy.yaml) so a worker
cannot reach addresses inside the cluster other than Redis and DNS.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError
from pipeline.ranges import check_ranges, ranged

if TYPE_CHECKING:
    from pipeline.sources import SourceSpec

DEFAULT_SCHEMES = ("rtsp", "rtsps", "http", "https")
# FFmpeg protocols each scheme may use, nested ones included (RTP under RTSP, TCP and TLS under HTTPS, the
# segments and keys of an HLS playlist). A scheme an operator adds that is not listed gets itself, tcp, udp, tls.
_PROTOCOLS = {
    "rtsp": "rtsp,rtp,srtp,tcp,udp",
    "rtsps": "rtsps,rtsp,rtp,srtp,tcp,udp,tls",
    "http": "http,https,tcp,tls,crypto",
    "https": "https,tcp,tls,crypto",  # no plain http below an https playlist
    "file": "file,crypto",  # a local HLS playlist may name local segments, nothing else
}
_TLS_SCHEMES = ("https", "rtsps")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.,-]*):")  # FFmpeg's own test for "this names a protocol"
_UDP_SCHEMES = ("udp", "udplite", "rtp")  # FFmpeg protocols that bind a local UDP port to receive


class Origin(str, Enum):
    OPERATOR = "operator"  # the command line or the config file
    CONTROL = "control"  # the Redis control hash: whoever can write Redis


@dataclass(frozen=True)
class SourcePolicy:
    """``[sources]``: which sources a worker may open."""

    allow_schemes: tuple[str, ...] = DEFAULT_SCHEMES  # URL schemes a stream may use; any other is refused
    allow_dirs: tuple[Path, ...] = ()  # folders local files may come from; empty: only command line and config
    max_url_length: int = ranged(2048, 16, 65_536)  # longer URLs (and paths) are refused
    # largest frame (width x height) a decoder accepts; memory per frame is 3x this
    max_pixels: int = ranged(3840 * 2160, 64 * 64, 16_384 * 16_384)
    ca_file: Path | None = None  # PEM bundle of CAs for https/rtsps instead of the system's (self-signed cameras)
    udp_bind_any: bool = False  # udp/rtp sources may bind the wildcard address (every interface); else one IP
    # streams one worker watches at most (config, command line and control hash); more are refused and counted
    max_streams: int = ranged(64, 1, 10_000)
    # HTTP requests an http(s) connection (an HLS playlist, its variants, segments and reloads) may make without a
    # decoded frame (a master of 8 variants opens in 17); past it the connection ends, retried with backoff
    # (pipeline.http_budget)
    max_http_requests: int = ranged(50, 4, 10_000)
    # netrc file of camera logins by host (machine HOST login USER password PW), read at start: a stream whose URL
    # names no login is opened with its host's, which its URL, logs and Redis never show (pipeline.credentials)
    credentials: Path | None = None

    def __post_init__(self) -> None:
        schemes = tuple(str(s).lower() for s in self.allow_schemes)
        bad = [s for s in schemes if not re.fullmatch(r"[a-z][a-z0-9+.-]*", s)]
        if bad:
            raise ConfigError(f"[sources] allow_schemes: {bad} are not URL schemes (like {list(DEFAULT_SCHEMES)})")
        if "file" in schemes:
            raise ConfigError("[sources] allow_schemes: local files are allowed by allow_dirs, not the 'file' scheme")
        object.__setattr__(self, "allow_schemes", schemes)
        object.__setattr__(self, "allow_dirs", tuple(Path(os.path.realpath(d)) for d in self.allow_dirs))
        check_ranges(self, "[sources] ")
        if self.credentials is not None:  # read once, here: a missing or world-readable file fails at start
            from pipeline.credentials import read_logins  # it imports this module

            object.__setattr__(self, "_logins", read_logins(self.credentials))

    def login_url(self, url: str) -> str:
        """``url`` as FFmpeg gets it: with its host's login from ``credentials`` inserted where it names none
        (pipeline.credentials). Only for av.open: never logged, stored or shown."""
        logins = getattr(self, "_logins", None)
        return url if logins is None else logins.url_for(url)

    def admit(self, spec: SourceSpec, *, origin: Origin) -> SourceSpec:
        """``spec`` when it may be opened; ConfigError naming the stream and the rule otherwise."""
        where = f"stream {spec.stream_id!r}"
        url = spec.url
        if len(url) > self.max_url_length:
            raise ConfigError(
                f"{where}: its URL has {len(url)} characters, more than [sources] max_url_length = "
                f"{self.max_url_length}"
            )
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
            raise ConfigError(f"{where}: its URL holds control characters")
        scheme = url_scheme(url)
        if scheme is not None:
            if scheme not in self.allow_schemes:
                raise ConfigError(
                    f"{where}: scheme {scheme!r} is not allowed; allowed: {list(self.allow_schemes)} "
                    "([sources] allow_schemes)"
                )
            self._check_url_options(url, scheme, where=where)
            return spec
        if origin is Origin.CONTROL and not self.allow_dirs:
            raise ConfigError(
                f"{where}: local files are not accepted from the control hash; an operator may allow "
                "folders with [sources] allow_dirs"
            )
        self.check_local(url, where=where)
        return spec

    def _check_url_options(self, url: str, scheme: str, *, where: str) -> None:
        """Refuse a fragment, and options that make FFmpeg listen or bind every interface, read as FFmpeg reads them."""
        if "#" in url:  # FFmpeg has no fragments: what follows '#' may still carry options
            raise ConfigError(f"{where}: its URL holds a '#'; FFmpeg would read what follows as part of the URL")
        options = [(tag.lower(), value) for tag, value in ffmpeg_url_options(url)]  # any case, any repeat: stricter
        if any(tag == "listen" for tag, _ in options):
            raise ConfigError(f"{where}: a 'listen' option would open a listening socket; dfwatch only connects")
        for tag, value in options:
            if scheme == "srt" and tag == "mode" and value.lower() != "caller":
                raise ConfigError(
                    f"{where}: SRT mode {value[:32]!r} would open a listening socket; dfwatch only "
                    "connects (mode=caller)"
                )
        if scheme in _UDP_SCHEMES and not self.udp_bind_any:
            host = _udp_bind_host(url)
            if _bind_address(host) is None:
                raise ConfigError(
                    f"{where}: a {scheme} source binds its host (or localaddr) to receive, and "
                    f"{host[:64]!r} is not an IP address other than the wildcard; name one (e.g. "
                    f"{scheme}://127.0.0.1:5000) or set [sources] udp_bind_any = true"
                )

    def check_local(self, path: str, *, where: str) -> Path:
        """The resolved path of a local source: inside ``allow_dirs`` (when set), a regular file or a FIFO.

        Called at admission and again when the file is opened (it may have changed in between). A file that
        does not exist passes: opening it then fails with "no such file".
        """
        try:
            resolved = Path(os.path.realpath(path))
            mode = resolved.stat().st_mode if resolved.exists() else None
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{where}: cannot use {path[:80]!r} as a file: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        if self.allow_dirs and not any(resolved.is_relative_to(d) for d in self.allow_dirs):
            raise ConfigError(
                f"{where}: {resolved} is outside the folders of [sources] allow_dirs "
                f"{[str(d) for d in self.allow_dirs]}"
            )
        if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            kind = "a directory" if stat.S_ISDIR(mode) else "a device or socket"
            raise ConfigError(f"{where}: {resolved} is {kind}, not a video file")
        return resolved

    def ffmpeg_options(self, url: str) -> dict[str, str]:
        """FFmpeg options that hold an admitted source to this policy (added to the source's own options)."""
        scheme = url_scheme(url) or "file"
        options = {
            "protocol_whitelist": _PROTOCOLS.get(scheme, f"{scheme},tcp,udp,tls"),
            "max_pixels": str(self.max_pixels),  # reaches the decoders that probe the stream while it opens
        }
        if scheme in _UDP_SCHEMES and not self.udp_bind_any:
            address = _bind_address(_udp_bind_host(url))
            if address is not None and not address.is_multicast:  # FFmpeg binds a multicast group itself
                options["localaddr"] = str(address)  # else FFmpeg binds the wildcard (a URL's localaddr wins)
        if scheme in _TLS_SCHEMES:
            options["tls_verify"] = "1"
            if self.ca_file is not None:
                options["ca_file"] = str(self.ca_file)
        return options


def url_scheme(url: str) -> str | None:
    """The lower-case scheme of ``url``, or None for a local path. ``proto:rest`` counts, as it does for FFmpeg."""
    match = _SCHEME.match(url)
    return match.group(1).split(",", 1)[0].lower() if match else None


def ffmpeg_url_options(url: str) -> list[tuple[str, str]]:
    """The ``(tag, value)`` options FFmpeg's protocols read from ``url`` (``av_find_info_tag``): everything after
    the first ``?``, '#' included, split at ``&``; a value runs to the next ``&`` and a tag without ``=`` has ""."""
    if "?" not in url:
        return []
    options = []
    for part in url.split("?", 1)[1].split("&"):
        tag, _, value = part.partition("=")
        options.append((tag, value.replace("+", " ")))
    return options


def ffmpeg_url_host(url: str) -> str:
    """The host FFmpeg's ``av_url_split`` reads from ``url``: after ``proto:`` and ``//``, up to the first of
    ``/?#``, after the last ``@`` before that, without brackets or ``:port``."""
    rest = url.split(":", 1)[1] if ":" in url else url
    rest = rest[2:] if rest.startswith("//") else rest.removeprefix("/")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0].rsplit("@", 1)[-1]
    if authority.startswith("[") and "]" in authority:
        return authority[1 : authority.index("]")]
    return authority.split(":", 1)[0]


def _udp_bind_host(url: str) -> str:
    """What FFmpeg's udp/rtp protocol binds to receive: the URL's first ``localaddr`` option, else its host."""
    return next((value for tag, value in ffmpeg_url_options(url) if tag == "localaddr"), ffmpeg_url_host(url))


def _bind_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as the IP address a socket would bind, None when it is no IP literal or is the wildcard.

    Parsed as the C library parses it (``0``, ``0x0`` and ``0.0`` are 0.0.0.0 to getaddrinfo); no name lookup.
    """
    try:
        sockaddr = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)[0][4]
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
    except (OSError, ValueError, UnicodeError, IndexError):
        return None
    return None if address.is_unspecified else address
