"""The source policy: what a stream may point at, checked before it starts and again by FFmpeg when it opens.

Real FFmpeg (PyAV) throughout: devices, FIFOs, oversized frames, TLS with certificates made at test time
(HTTPS, an HLS playlist, RTSPS in front of the real RTSP server).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError, SourceError
from pipeline.policy import Origin, SourcePolicy
from pipeline.sources import SourceSpec, open_container, read_frames
from pipeline.supervisor import LogEvents, stream_frames
from tests._media import hls_playlist, hostile_hls, http_app, http_server, remux
from tests._rtsp import requires_rtsp, rtsp_server_process
from tests._tls import https_server, self_signed, tls_front

OPERATOR, CONTROL = Origin.OPERATOR, Origin.CONTROL


def _admit(url: str, origin: Origin, policy: SourcePolicy | None = None) -> str | None:
    """None when admitted, else the refusal's message."""
    try:
        (policy or SourcePolicy()).admit(SourceSpec("s", url), origin=origin)
    except ConfigError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    ("url", "origin", "refusal"),
    [
        ("rtsp://192.0.2.7/live", CONTROL, None),
        ("rtsps://cam.example/live", CONTROL, None),
        ("https://cdn.example/live/index.m3u8", CONTROL, None),
        ("/etc/passwd", CONTROL, "local files are not accepted from the control hash"),
        ("/srv/videos/clip.mp4", CONTROL, "local files are not accepted from the control hash"),
        ("/dev/zero", OPERATOR, "/dev/zero is a device or socket, not a video file"),
        ("/tmp", OPERATOR, "is a directory, not a video file"),
        ("file:///etc/passwd", CONTROL, "scheme 'file' is not allowed"),
        ("tcp://127.0.0.1:9999?listen=1", CONTROL, "scheme 'tcp' is not allowed"),
        ("concat:/etc/passwd|/etc/shadow", OPERATOR, "scheme 'concat' is not allowed"),
        ("subfile,,start,0,end,9,,:/etc/passwd", OPERATOR, "scheme 'subfile' is not allowed"),
        ("pipe:0", OPERATOR, "scheme 'pipe' is not allowed"),
        ("udp://0.0.0.0:5000", CONTROL, "scheme 'udp' is not allowed"),
        ("rtsp://cam/" + "a" * 100_000, CONTROL, "its URL has 100011 characters, more than [sources] max_url_length"),
        ("rtsp://cam/\x1b[2Jlive", CONTROL, "its URL holds control characters"),
    ],
)
def test_admission_table(url: str, origin: Origin, refusal: str | None) -> None:
    got = _admit(url, origin)
    if refusal is None:
        assert got is None
    else:
        assert got is not None and refusal in got
        assert len(got) < 400  # the refusal names the rule, never repeats a 100,000-character URL


def test_an_operator_may_allow_more_schemes_but_never_a_listening_socket() -> None:
    policy = SourcePolicy(allow_schemes=("rtsp", "tcp", "srt"))
    assert _admit("tcp://192.0.2.7:9000", CONTROL, policy) is None
    assert "'listen' option would open a listening socket" in _admit("tcp://0.0.0.0:9000?listen=1", CONTROL, policy)
    assert "'listen' option" in _admit("srt://0.0.0.0:9000?mode=x&listen", OPERATOR, policy)
    assert "scheme 'https' is not allowed; allowed: ['rtsp', 'tcp', 'srt']" in _admit("https://x/y", CONTROL, policy)
    with pytest.raises(ConfigError, match="local files are allowed by allow_dirs, not the 'file' scheme"):
        SourcePolicy(allow_schemes=("rtsp", "file"))


@pytest.mark.parametrize(
    ("url", "refusal"),
    [  # FFmpeg reads options from the first '?', '#' included; urlparse put the listen option in the fragment
        ("tcp://127.0.0.1:47011#x?listen=1", "its URL holds a '#'"),
        ("tcp://127.0.0.1:47012?a=1#&listen=1", "its URL holds a '#'"),
        ("tcp://127.0.0.1:47013/x?a=1&listen", "'listen' option"),
        ("tcp://127.0.0.1:47013?a=1=2&LISTEN=0", "'listen' option"),
        ("tcp://127.0.0.1:47013?timeout=5000000", None),
        ("srt://127.0.0.1:47015?mode=listener", "SRT mode 'listener' would open a listening socket"),
        ("srt://127.0.0.1:47015?MODE=caller&mode=rendezvous", "SRT mode 'rendezvous' would open"),
        ("srt://127.0.0.1:47015?mode=caller", None),
        ("udp://0.0.0.0:47014", "'0.0.0.0' is not an IP address other than the wildcard"),
        ("udp://:47014", "'' is not an IP address other than the wildcard"),
        ("udp://@:47014", "'' is not an IP address other than the wildcard"),
        ("udp://[::]:47014", "'::' is not an IP address other than the wildcard"),
        ("udp://0:47014", "'0' is not an IP address other than the wildcard"),  # getaddrinfo reads 0 as 0.0.0.0
        ("udp://127.0.0.1:47014?localaddr=0.0.0.0", "'0.0.0.0' is not an IP address"),
        ("udp://camera.example:47014", "'camera.example' is not an IP address"),  # no name lookup at admission
        ("rtp://0.0.0.0:47016", "a rtp source binds its host"),
        ("udp://127.0.0.1:47014", None),
        ("udp://0.0.0.0:47014?localaddr=127.0.0.1", None),
        ("udp://239.1.2.3:47014", None),  # a multicast group binds the group
    ],
)
def test_options_are_read_as_ffmpeg_reads_them_and_udp_binds_no_wildcard(url: str, refusal: str | None) -> None:
    policy = SourcePolicy(allow_schemes=("rtsp", "tcp", "udp", "rtp", "srt"))
    got = _admit(url, CONTROL, policy)
    assert got is None if refusal is None else (got is not None and refusal in got), got


def test_an_operator_may_let_udp_sources_bind_every_interface() -> None:
    policy = SourcePolicy(allow_schemes=("udp",), udp_bind_any=True)
    assert _admit("udp://0.0.0.0:47014", CONTROL, policy) is None
    assert "localaddr" not in policy.ffmpeg_options("udp://0.0.0.0:47014")
    assert "'listen' option" in _admit("udp://127.0.0.1:47014?listen=1", CONTROL, policy)
    assert SourcePolicy().ffmpeg_options("udp://127.0.0.1:47014")["localaddr"] == "127.0.0.1"


def _udp_sockets(port: int) -> list[str]:
    """Local addresses (``/proc/net/udp`` hex, e.g. ``0100007F`` for 127.0.0.1) of this host's IPv4 UDP sockets on
    ``port``."""
    rows = Path("/proc/net/udp").read_text().splitlines()[1:]
    local = [row.split()[1].split(":") for row in rows]
    return [address for address, hex_port in local if int(hex_port, 16) == port]


@pytest.mark.parametrize(
    ("host", "bind_any", "bound_hex"),
    [("127.0.0.1", False, "0100007F"), ("0.0.0.0", True, "00000000")],  # /proc/net/udp: 127.0.0.1, every interface
)
def test_a_udp_source_binds_the_address_it_names_not_every_interface(
    tmp_path: Path, demo_clip, host: str, bind_any: bool, bound_hex: str
) -> None:
    """Real FFmpeg receives a real MPEG-TS stream sent over UDP: an admitted ``udp://127.0.0.1:P`` binds loopback
    only; every interface (``udp://0.0.0.0:P``, refused by default) only where ``[sources] udp_bind_any`` says so.
    (The libavformat here binds a unicast host itself; the policy also passes it as ``localaddr``, so the bind
    does not depend on the FFmpeg build.)"""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ts = remux(demo_clip.path, tmp_path / "clip.ts", format="mpegts").read_bytes()
    stop = threading.Event()

    def sender() -> None:  # the clip over and over, in 7-packet datagrams, as an encoder streams it
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            while not stop.is_set():
                for i in range(0, len(ts), 1316):
                    out.sendto(ts[i : i + 1316], ("127.0.0.1", port))
                    if stop.wait(0.0005):
                        return

    bound: list[str] = []

    def watch_bind() -> None:
        while not stop.is_set() and not bound:
            bound.extend(_udp_sockets(port))
            time.sleep(0.01)

    threads = [threading.Thread(target=f, daemon=True) for f in (sender, watch_bind)]
    for t in threads:
        t.start()
    policy = SourcePolicy(allow_schemes=("udp",), udp_bind_any=bind_any)
    spec = SourceSpec("udp", f"udp://{host}:{port}", open_timeout=10, read_timeout=5)
    try:
        frames = 0
        for _ in read_frames(policy.admit(spec, origin=CONTROL), policy=policy):
            frames += 1
            if frames == 10:
                break
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert frames == 10
    assert bound == [bound_hex], f"bound {bound} (00000000 is every interface)"


def test_allow_dirs_admit_files_inside_only_even_through_symlinks(tmp_path: Path) -> None:
    videos, elsewhere = tmp_path / "videos", tmp_path / "elsewhere"
    videos.mkdir()
    elsewhere.mkdir()
    (videos / "a.mp4").write_bytes(b"x")
    (elsewhere / "secret.mp4").write_bytes(b"x")
    (videos / "escape.mp4").symlink_to(elsewhere / "secret.mp4")
    policy = SourcePolicy(allow_dirs=(videos,))
    assert _admit(str(videos / "a.mp4"), CONTROL, policy) is None  # allow_dirs also opens the control hash to files
    assert "is outside the folders of [sources] allow_dirs" in _admit(str(videos / "escape.mp4"), CONTROL, policy)
    assert "outside the folders" in _admit(str(videos / ".." / "elsewhere" / "secret.mp4"), OPERATOR, policy)
    assert "outside the folders" in _admit("/etc/passwd", OPERATOR, policy)  # set: for the operator's files too


def test_a_device_swapped_in_after_admission_is_refused_when_opened(tmp_path: Path, demo_clip) -> None:
    clip = tmp_path / "clip.mp4"
    clip.symlink_to(demo_clip.path)
    spec = SourcePolicy().admit(SourceSpec("s", str(clip)), origin=OPERATOR)
    clip.unlink()
    clip.symlink_to("/dev/zero")  # FFmpeg would read zeros for ever
    with pytest.raises(SourceError, match="/dev/zero is a device or socket, not a video file"):
        next(read_frames(spec))


def test_a_fifo_without_a_writer_fails_within_its_open_timeout(tmp_path: Path) -> None:
    """FFmpeg opens a FIFO with a blocking open(): it waited for a writer for ever, whatever --open-timeout said."""
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"cannot open: no writer sent data for 1\.5 s \(FIFO\)"):
        next(read_frames(SourceSpec("fifo", str(fifo), open_timeout=1.5)))
    assert time.monotonic() - start < 4


def test_a_fifo_whose_writer_stalls_fails_within_its_read_timeout(tmp_path: Path, demo_clip) -> None:
    ts = remux(demo_clip.path, tmp_path / "clip.ts", format="mpegts")
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    release = threading.Event()

    def writer() -> None:
        with open(fifo, "wb") as w:
            data = ts.read_bytes()
            w.write(data[: len(data) // 2])  # half the clip, then the writer hangs with the FIFO open
            w.flush()
            release.wait(30)

    threading.Thread(target=writer, daemon=True).start()
    frames, start = 0, time.monotonic()
    try:
        with pytest.raises(SourceError, match=r"stream broke after \d+ frames: no data for 1\.5 s \(FIFO\)"):
            for _ in read_frames(SourceSpec("fifo", str(fifo), open_timeout=5, read_timeout=1.5)):
                frames += 1
    finally:
        release.set()
    assert 0 < frames < demo_clip.n_frames and time.monotonic() - start < 10


def test_a_frame_larger_than_max_pixels_is_refused_before_it_is_allocated(tmp_path: Path) -> None:
    """A 16000x16000 PNG of a few hundred kB took 1.15 GB for its one frame."""
    import cv2

    png = tmp_path / "huge.png"
    cv2.imwrite(str(png), np.zeros((16000, 16000, 3), np.uint8))
    assert png.stat().st_size < 2_000_000
    script = (  # VmHWM: this process's peak RSS (ru_maxrss would carry pytest's, inherited through fork and exec)
        "import sys\n"
        "from pipeline.errors import SourceError\n"
        "from pipeline.sources import SourceSpec, read_frames\n"
        "try:\n"
        f"    n = sum(1 for _ in read_frames(SourceSpec('png', {str(png)!r})))\n"
        "    print('decoded', n)\n"
        "except SourceError as exc:\n"
        "    print('refused:', exc.reason)\n"
        "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "print('peak_rss_mb', int(hwm.split()[1]) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("refused:") and "max_pixels" in lines[0], out.stdout
    assert int(lines[-1].split()[1]) < 400, out.stdout  # the frame alone is 768 MB of RGB


@pytest.fixture()
def certs(tmp_path: Path):
    return {"right": self_signed(tmp_path, "127.0.0.1"), "wrong": self_signed(tmp_path, "camera.example")}


def _frames(url: str, policy: SourcePolicy, *, most: int = 10) -> int:
    n = 0
    for _ in read_frames(SourceSpec("s", url, open_timeout=5, read_timeout=5), policy=policy):
        n += 1
        if n == most:
            break
    return n


def test_https_checks_the_certificate(tmp_path: Path, demo_clip, certs) -> None:
    """A self-signed certificate for another name was accepted (FFmpeg's tls_verify is off by default)."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "clip.mp4").write_bytes(demo_clip.path.read_bytes())
    with https_server(tmp_path / "www", certs["wrong"]) as base:
        with pytest.raises(SourceError, match="cannot open"):
            _frames(f"{base}/clip.mp4", SourcePolicy())
        with pytest.raises(SourceError, match="cannot open"):  # trusting the certificate does not fix the name
            _frames(f"{base}/clip.mp4", SourcePolicy(ca_file=certs["wrong"].cert))
    with https_server(tmp_path / "www", certs["right"]) as base:
        with pytest.raises(SourceError, match="cannot open"):  # the right name, but nobody vouches for it
            _frames(f"{base}/clip.mp4", SourcePolicy())
        assert _frames(f"{base}/clip.mp4", SourcePolicy(ca_file=certs["right"].cert)) == 10


def test_an_https_playlist_cannot_send_ffmpeg_to_plain_http_or_local_files(tmp_path: Path, demo_clip, certs) -> None:
    """HLS nested URLs are held to the playlist's protocol family: no https -> http downgrade, no file:."""
    www = tmp_path / "www"
    www.mkdir()
    hls_playlist(demo_clip.path, www)
    plain = contextlib.ExitStack()
    plain_base = plain.enter_context(http_server(www))
    header = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:1.0,\n"
    (www / "downgrade.m3u8").write_text(f"{header}{plain_base}/index0.ts\n#EXT-X-ENDLIST\n")
    (www / "local.m3u8").write_text(f"{header}file://{www / 'index0.ts'}\n#EXT-X-ENDLIST\n")
    policy = SourcePolicy(ca_file=certs["right"].cert)
    try:
        with https_server(www, certs["right"]) as base:
            assert _frames(f"{base}/index.m3u8", policy) == 10  # segments on the same https server: fine
            for playlist in ("downgrade.m3u8", "local.m3u8"):
                with pytest.raises(SourceError):
                    _frames(f"{base}/{playlist}", policy)
    finally:
        plain.close()


@requires_rtsp
def test_rtsps_checks_the_certificate(demo_clip, certs) -> None:
    with rtsp_server_process({"cam": demo_clip.path}, loop=True) as server:
        with tls_front(server.port, certs["wrong"]) as port, pytest.raises(SourceError, match="cannot open"):
            _frames(f"rtsps://127.0.0.1:{port}/cam", SourcePolicy())
        with tls_front(server.port, certs["right"]) as port:
            with pytest.raises(SourceError, match="cannot open"):
                _frames(f"rtsps://127.0.0.1:{port}/cam", SourcePolicy())
            assert _frames(f"rtsps://127.0.0.1:{port}/cam", SourcePolicy(ca_file=certs["right"].cert)) == 10


class _Downs(LogEvents):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def on_down(self, spec: SourceSpec, reason: str) -> None:
        self.reasons.append(reason)


@pytest.mark.parametrize("playlist", ["master.m3u8", "missing.m3u8"])
def test_a_hostile_playlist_makes_at_most_max_http_requests_a_try_and_is_retried_with_backoff(playlist: str) -> None:
    """A master playlist listing itself made 39,229 GETs in 12 s here (4,746 in 10 s when reported); 300,000
    segments of 404 made 14,167 in 10 s. No FFmpeg option bounds either (max_reload does not stop the walk)."""
    events, stop = _Downs(), threading.Event()
    with hostile_hls() as (base, requests):
        spec = SourceSpec("h", f"{base}/{playlist}", open_timeout=1, read_timeout=1, backoff_initial=0.5, backoff_max=1)
        timer = threading.Timer(6, stop.set)
        timer.start()
        start = time.monotonic()
        frames = sum(1 for _ in stream_frames(spec, stop, events, policy=SourcePolicy(max_http_requests=20)))
        took = time.monotonic() - start
        timer.cancel()
        gets = sum(requests.values())
    assert frames == 0 and took < 9
    tries = len(events.reasons) + 1  # the one that stop ended
    assert gets <= 20 * tries, (gets, tries)
    budget = (
        "cannot open: ended after 20 HTTP requests without a frame ([sources] max_http_requests): an HLS "
        "playlist that lists itself, or whose segments all fail?"
    )
    # FFmpeg does not always loop on the self-listing master: some runs it refuses the playlist at its second
    # fetch ("Master Playlist tag found in a Media Playlist"), each try then ends at once and the backoff spaces them
    refused = "cannot open: Invalid data found when processing input"
    allowed = {budget, refused} if playlist == "master.m3u8" else {budget}
    assert 2 <= len(events.reasons) <= 10 and set(events.reasons) <= allowed, events.reasons


def test_a_corrupt_stream_closed_mid_decode_never_deadlocks_with_ffmpegs_log_counted(tmp_path: Path, demo_clip) -> None:
    """Counting requests routes FFmpeg's log through PyAV's callback, which takes the GIL in the decoder's frame
    threads; PyAV frees a decoder holding the GIL while it waits for them, and one logging a decode error then
    waits for ever: closing this clip mid-stream hung the process within 10 tries. read_frames flushes first."""
    data = bytearray(demo_clip.path.read_bytes())
    rng = np.random.default_rng(1)
    for at in rng.integers(len(data) // 10, len(data), 400):
        data[at] ^= 0xFF
    (tmp_path / "bad.mp4").write_bytes(bytes(data))
    script = (
        "from pipeline.http_budget import RequestBudget\n"
        "from pipeline.sources import SourceSpec, read_frames\n"
        "with RequestBudget(50, hold=1.0):\n"  # FFmpeg's log now reaches Python, as once an http(s) source opened
        "    pass\n"
        "for attempt in range(60):\n"
        f"    frames = read_frames(SourceSpec('bad', {str(tmp_path / 'bad.mp4')!r}))\n"
        "    try:\n"
        "        for n, _ in enumerate(frames):\n"
        "            if n == 2 + attempt % 30:\n"
        "                break\n"
        "    except Exception:\n"
        "        pass\n"
        "    frames.close()\n"
        "print('closed 60 times')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "closed 60 times", out.stderr[-2000:]


def test_a_redirect_to_a_local_file_is_refused_and_said_so(demo_clip) -> None:
    """It read "Invalid argument (a frame larger than [sources] max_pixels is refused this way)"."""
    targets = {"/passwd": "file:///etc/passwd", "/clip": f"file://{demo_clip.path}", "/hop": "/passwd"}
    with http_app(lambda path: (302, {"Location": targets[path]}, b"")) as (base, _):
        for path, refused in (
            ("/passwd", "file:///etc/passwd"),
            ("/clip", f"file://{demo_clip.path}"),
            ("/hop", "file:///etc/passwd"),
        ):
            with pytest.raises(SourceError) as err:
                open_container(SourceSpec("r", f"{base}{path}", open_timeout=5, read_timeout=5))
            assert err.value.reason == (
                f"cannot open: redirect refused: the server sent it to {refused!r}, and an "
                "http source follows redirects to http or https only"
            )
            assert "\n" not in str(err.value)


@pytest.mark.parametrize(("size", "said"), [("W0 H64", "0x64"), ("W64 H0", "64x0"), ("H64", None)])
def test_a_y4m_without_a_width_or_height_says_invalid_dimensions(tmp_path: Path, size: str, said: str | None) -> None:
    """Width 0 read "Device or resource busy": FFmpeg adds the frame marker's 6 bytes to EINVAL (-22 + 6 = -16)."""
    clip = tmp_path / "clip.y4m"
    clip.write_bytes(f"YUV4MPEG2 {size} F25:1 Ip A1:1 C420jpeg\n".encode() + b"FRAME\n" + bytes(64 * 64 * 3 // 2))
    with pytest.raises(SourceError) as err:
        open_container(SourceSpec("y", str(clip)))
    where = f"invalid dimensions {said} in its" if said else "invalid dimensions: its"
    assert err.value.reason.startswith(f"cannot open: {where} YUV4MPEG header"), err.value.reason
    clip.write_bytes(b"YUV4MPEG2 W64 H64 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(64 * 64 * 3 // 2))
    assert sum(1 for _ in read_frames(SourceSpec("y", str(clip)))) == 1  # the same file with both sides: fine


def test_an_untrusted_certificate_says_so(tmp_path: Path, demo_clip, certs) -> None:
    """It read "Input/output error"."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "clip.mp4").write_bytes(demo_clip.path.read_bytes())
    cases = [
        (certs["right"], SourcePolicy(), "self-signed certificate (trusted: the system's CAs; [sources] ca_file"),
        (
            certs["wrong"],
            SourcePolicy(ca_file=certs["wrong"].cert),
            "IP address mismatch, certificate is not valid for '127.0.0.1' (trusted: the CAs of [sources] ca_file",
        ),
    ]
    for cert, policy, why in cases:
        with https_server(tmp_path / "www", cert) as base, pytest.raises(SourceError) as err:
            open_container(SourceSpec("tls", f"{base}/clip.mp4", open_timeout=5, read_timeout=5), policy=policy)
        assert err.value.reason.startswith(f"cannot open: certificate not trusted: {why}"), err.value.reason
        assert "\n" not in str(err.value)
