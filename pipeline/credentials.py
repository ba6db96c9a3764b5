"""Camera logins kept out of stream URLs: a netrc file bound to hosts, read once at start.

``[sources] credentials`` names a file in netrc format, the one curl and ftp read (Python's ``netrc``
parses it)::

    machine 192.0.2.10 login admin password s3cret
    machine cam-lobby.example login viewer password an0ther

When a stream's URL carries no login (no ``user@`` before its host) and the host FFmpeg will connect
to (``policy.ffmpeg_url_host``) is a ``machine`` of the file, the worker hands FFmpeg the URL with that
login inserted. The stream's URL as configured, which is what log lines, errors, Redis, metrics and the
control hash hold, never contains it. So a camera is added through the control hash with no password
on any command line, in Redis' append-only file or in a shell history::

    redis-cli HSET dfwatch:control:streams lobby rtsp://192.0.2.10:554/stream1

A login is bound to its host, not to the entry: an entry naming another host gets nothing, so whoever
writes the control hash cannot send a camera's password to a host of their own (an environment-variable
reference expanded into the URL could be). A ``default`` entry, which would match every host, is
refused. Only rtsp, rtsps, http and https URLs take a login: the FFmpeg protocols that read one from the
URL. It goes to the host whatever the port and scheme: list plain ``http`` / ``rtsp`` in
``allow_schemes`` only where the network to the camera is trusted (Basic authentication is readable on
the wire). The file is read once, when the config is loaded: restart the workers after changing it.
"""

from __future__ import annotations

import netrc
import os
import re
import stat
from pathlib import Path
from urllib.parse import quote

from pipeline.errors import ConfigError
from pipeline.policy import ffmpeg_url_host, url_scheme

LOGIN_SCHEMES = ("rtsp", "rtsps", "http", "https")  # FFmpeg reads user:password@ from these URLs


class CameraLogins:
    """The logins of a netrc file by host (lower case); its repr names the file and the hosts, never a password."""

    def __init__(self, path: Path, logins: dict[str, tuple[str, str]]) -> None:
        self.path = path
        self._logins = logins  # host -> (login, password)

    def __repr__(self) -> str:
        return f"CameraLogins({str(self.path)!r}, hosts={sorted(self._logins)})"

    @property
    def hosts(self) -> list[str]:
        return sorted(self._logins)

    def url_for(self, url: str) -> str:
        """``url`` with the login of its host inserted, for FFmpeg only; ``url`` itself when it names a login
        already, its scheme takes none, or its host has no ``machine`` entry."""
        scheme = url_scheme(url)
        head, sep, rest = url.partition("://")
        if scheme not in LOGIN_SCHEMES or not sep:
            return url
        if "@" in re.split(r"[/?#]", rest, maxsplit=1)[0]:  # a login of its own (as FFmpeg splits the authority)
            return url
        login = self._logins.get(ffmpeg_url_host(url).lower())
        if login is None:
            return url
        user, password = (quote(part, safe="") for part in login)  # FFmpeg percent-decodes the user info
        return f"{head}://{user}:{password}@{rest}" if password else f"{head}://{user}@{rest}"


def read_logins(path: Path) -> CameraLogins:
    """The logins of the netrc file ``path``; ConfigError naming the file (never a password) when it is missing,
    not a regular file, readable or writable by everyone, not netrc, or holds a ``default`` entry."""
    where = f"[sources] credentials {str(path)!r}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{where}: not a regular file")
        if mode & 0o006:
            raise ConfigError(
                f"{where}: readable or writable by every user (mode {stat.filemode(mode)}); it holds "
                f"camera passwords: chmod o-rwx it (0600, or 0440 for a group)"
            )
    finally:
        os.close(fd)
    try:
        parsed = netrc.netrc(str(path))
    except netrc.NetrcParseError as exc:  # its message may quote a token of the file: a password, so not shown
        raise ConfigError(
            f"{where}: line {exc.lineno} is not netrc (machine HOST login USER password PASSWORD)"
        ) from None
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{where}: cannot read it ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    if "default" in parsed.hosts:
        raise ConfigError(
            f"{where}: a 'default' entry would send its password to any host a stream names; "
            "name each camera host with 'machine HOST'"
        )
    logins = {}
    for host, (login, _account, password) in parsed.hosts.items():
        if not (login or password):
            raise ConfigError(f"{where}: machine {host!r} has neither login nor password")
        logins[host.lower()] = (login or "", password or "")
    return CameraLogins(Path(path), logins)
