"""Camera logins from a netrc file, bound to hosts: a password-protected feed opens with no password in its URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.credentials import read_logins
from pipeline.errors import ConfigError
from pipeline.policy import SourcePolicy
from tests._media import hls_playlist, http_server

PASSWORD = "Cam-Pw:Zq7@x/%y"  # characters a URL must escape: FFmpeg gets it percent-encoded and decodes it


def _netrc(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture()
def logins(tmp_path: Path):
    return read_logins(
        _netrc(
            tmp_path / "cameras",
            f'machine Cam.Example login admin password "{PASSWORD}"\n'
            "machine 192.0.2.10 login viewer password pw2\n"
            "machine ::1 login six password pw6\n",
        )
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://192.0.2.10:554/stream1", "rtsp://viewer:pw2@192.0.2.10:554/stream1"),
        ("https://cam.example/live/index.m3u8", "https://admin:Cam-Pw%3AZq7%40x%2F%25y@cam.example/live/index.m3u8"),
        ("rtsp://CAM.EXAMPLE/s", "rtsp://admin:Cam-Pw%3AZq7%40x%2F%25y@CAM.EXAMPLE/s"),  # host names: any case
        ("rtsp://[::1]:8554/s", "rtsp://six:pw6@[::1]:8554/s"),
        ("rtsp://other:theirs@192.0.2.10/s", "rtsp://other:theirs@192.0.2.10/s"),  # a login of its own stays
        ("rtsp://192.0.2.10@evil.example/s", "rtsp://192.0.2.10@evil.example/s"),  # the host is evil.example
        ("http://evil.example/192.0.2.10", "http://evil.example/192.0.2.10"),  # another host gets nothing
        ("http://evil.example?cam.example", "http://evil.example?cam.example"),
        ("http://cam.example.evil.example/x", "http://cam.example.evil.example/x"),
        ("tcp://192.0.2.10:9000", "tcp://192.0.2.10:9000"),  # a scheme whose protocol reads no login
        ("/videos/192.0.2.10.mp4", "/videos/192.0.2.10.mp4"),
    ],
)
def test_a_login_goes_only_to_its_own_host(logins, url, expected):
    assert logins.url_for(url) == expected
    assert PASSWORD not in repr(logins) and "pw2" not in repr(logins)


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        (None, 0o600, "cannot read it (No such file or directory)"),
        ("machine a login u password p\n", 0o644, "readable or writable by every user (mode -rw-r--r--)"),
        ("machine a login u password p\n", 0o602, "readable or writable by every user"),
        ("machine a login u password p\ndefault login u password Secret-1\n", 0o600, "a 'default' entry would send"),
        ("machine a login u password p\nmachine b login u password Secret-2 port 8\n", 0o600, "line 2 is not netrc"),
        ("machine a\n", 0o600, "machine 'a' has neither login nor password"),
    ],
)
def test_a_credentials_file_that_is_missing_open_to_all_or_not_netrc_is_refused_by_name(tmp_path, text, mode, message):
    path = tmp_path / "cameras"
    if text is not None:
        _netrc(path, text, mode)
    with pytest.raises(ConfigError, match="credentials") as caught:
        SourcePolicy(credentials=path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "Secret" not in str(caught.value)  # a password in the file is never quoted back


def test_a_directory_is_no_credentials_file(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        SourcePolicy(credentials=tmp_path)


def test_a_password_protected_feed_opens_with_the_login_of_its_host_and_the_password_never_shows(
    dfwatch, demo_clip, tmp_path
):
    """An HLS feed behind Basic authentication, its URL without a login: 401 without the credentials file; with
    it, every segment is fetched and decoded, and the password is nowhere in the output, --debug included."""
    folder = tmp_path / "www"
    folder.mkdir()
    hls_playlist(demo_clip.path, folder)
    cameras = _netrc(tmp_path / "cameras", f'machine 127.0.0.1 login admin password "{PASSWORD}"\n')
    config = tmp_path / "watch.toml"
    config.write_text(f'[sources]\ncredentials = "{cameras}"\n')
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(
        f'[sources]\ncredentials = "{_netrc(tmp_path / "old", "machine 127.0.0.1 login admin password Old-Zq8")}"\n'
    )
    with http_server(folder, basic=f"admin:{PASSWORD}") as base:
        url = f"{base}/index.m3u8"
        refused = dfwatch("watch", f"news={url}", "--no-reconnect")
        assert refused.returncode == 1 and refused.records == []
        assert "cannot open: Server returned 401 Unauthorized" in refused.error_lines[0]
        run = dfwatch("watch", f"news={url}", "--no-reconnect", "--config", str(config), "--debug")
        assert run.returncode == 0, run.stderr
        frames = [r["frame"] for r in run.records]
        assert frames and frames[-1] == demo_clip.n_frames - 1  # the last segment too: each request logged in
        assert f"stream 'news' ({url}) is up" in run.stderr  # the URL as configured, no login in it
        stale = dfwatch("watch", f"news={url}", "--no-reconnect", "--config", str(wrong), "--debug")
        assert stale.returncode == 1 and "401 Unauthorized" in stale.stderr and "Traceback" in stale.stderr
    for out in (refused, run, stale):
        text = out.stdout + out.stderr
        assert "Zq7" not in text and "Zq8" not in text
