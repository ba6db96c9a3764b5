#!/usr/bin/python3
"""Tiny RTSP server for the tests: serves H.264-in-MP4 files without re-encoding.

Run it with the *system* python (it needs PyGObject and the GStreamer RTSP
server typelib, i.e. Debian's python3-gi and gir1.2-gst-rtsp-server-1.0):

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --mount /cam=clip.mp4 [--loop]

Every mount gets its own pipeline per client (the factory is not shared), so
each client sees the clip from its first frame:

    filesrc ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1

The file is played at real-time pace (the RTSP server's sinks sync on the
clock).  Without --loop the clip plays once and the client gets EOS (RTCP BYE).
With --loop the clip repeats forever (see ``Looper``): at qtdemux's EOS the
EOS is dropped, qtdemux alone is rewound with a flushing seek to 0 (its flush
events are dropped before they reach the payloader), and the pad's running-time
offset grows by one clip length, so timestamps (and RTP timestamps) keep
increasing smoothly, like a live camera.  (A non-flushing seek after EOS does
not work: qtdemux re-sends EOS at once.)

Binds 127.0.0.1 only.  ``--port 0`` picks a free port.  Once listening it prints
exactly ``READY rtsp://127.0.0.1:PORT`` on stdout (flushed).  Exits with status
0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402 (after require_version)

HOST = "127.0.0.1"


def log(msg: str) -> None:
    print(f"rtsp_server: {msg}", file=sys.stderr, flush=True)


class Mp4Factory(GstRtspServer.RTSPMediaFactory):
    """Media factory that builds ``filesrc ! qtdemux ! h264parse ! rtph264pay`` per client."""

    def __init__(self, path: str, loop: bool) -> None:
        super().__init__()
        self.path = path
        self.loop = loop
        self.set_shared(False)

    def do_create_element(self, url):
        bin_ = Gst.Bin.new(None)
        src = Gst.ElementFactory.make("filesrc", None)
        demux = Gst.ElementFactory.make("qtdemux", None)
        parse = Gst.ElementFactory.make("h264parse", None)
        pay = Gst.ElementFactory.make("rtph264pay", "pay0")
        if not all((src, demux, parse, pay)):
            log("missing GStreamer element (filesrc/qtdemux/h264parse/rtph264pay)")
            return None
        src.set_property("location", self.path)
        pay.set_property("pt", 96)
        pay.set_property("config-interval", 1)
        for el in (src, demux, parse, pay):
            bin_.add(el)
        src.link(demux)
        parse.link(pay)
        demux.connect("pad-added", self._on_pad_added, parse)
        return bin_

    def _on_pad_added(self, demux, pad, parse) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        name = caps.get_structure(0).get_name() if caps and caps.get_size() else ""
        if name != "video/x-h264":
            return
        sink = parse.get_static_pad("sink")
        if sink.is_linked():
            return
        ret = pad.link(sink)
        if ret != Gst.PadLinkReturn.OK:
            log(f"cannot link qtdemux pad {pad.get_name()}: {ret}")
            return
        if self.loop:
            Looper(demux, pad)


class Looper:
    """Replays qtdemux's output forever, continuing the running time.

    On EOS from qtdemux's video pad: drop the EOS, shift the pad's running
    time offset by one clip length, and send a flushing seek back to 0 to
    qtdemux.  The FLUSH_START/FLUSH_STOP that the seek pushes downstream are
    dropped at the same pad, so only qtdemux (and filesrc) are reset; the
    payloader and the RTSP sinks see one continuous stream whose timestamps
    keep increasing like a live camera.
    """

    def __init__(self, demux, pad) -> None:
        self.demux = demux
        self.pad = pad
        self.segment_start = None  # first segment's start, in stream time
        self.clip_end = 0  # running time (without our offset) of the clip's end
        self.loops = 0
        pad.add_probe(
            Gst.PadProbeType.EVENT_DOWNSTREAM | Gst.PadProbeType.EVENT_FLUSH | Gst.PadProbeType.BUFFER,
            self._probe,
        )

    def _probe(self, pad, info):
        if info.type & Gst.PadProbeType.BUFFER:
            buf = info.get_buffer()
            if self.loops == 0 and buf is not None and self.segment_start is not None:
                ts = buf.pts if buf.pts != Gst.CLOCK_TIME_NONE else buf.dts
                if ts != Gst.CLOCK_TIME_NONE:
                    dur = buf.duration if buf.duration != Gst.CLOCK_TIME_NONE else 0
                    self.clip_end = max(self.clip_end, ts + dur - self.segment_start)
            return Gst.PadProbeReturn.OK
        event = info.get_event()
        if event is None:
            return Gst.PadProbeReturn.OK
        etype = event.type
        if etype in (Gst.EventType.FLUSH_START, Gst.EventType.FLUSH_STOP):
            return Gst.PadProbeReturn.DROP if self.loops else Gst.PadProbeReturn.OK
        if etype == Gst.EventType.SEGMENT and self.segment_start is None:
            self.segment_start = event.parse_segment().start
        if etype != Gst.EventType.EOS:
            return Gst.PadProbeReturn.OK
        if self.clip_end <= 0:
            log("loop: clip has no timestamps, cannot loop")
            return Gst.PadProbeReturn.OK
        # Seeking from qtdemux's own streaming thread (this one) would
        # deadlock; do it from another thread.
        self.loops += 1
        self.pad.set_offset(self.loops * self.clip_end)
        threading.Thread(target=self._rewind, daemon=True).start()
        return Gst.PadProbeReturn.DROP

    def _rewind(self) -> None:
        ok = self.demux.seek(
            1.0,
            Gst.Format.TIME,
            Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT,
            Gst.SeekType.SET,
            0,
            Gst.SeekType.NONE,
            -1,
        )
        if not ok:
            log("loop: seek back to 0 failed")


def parse_mount(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected /name=FILE.mp4, got {text!r}")
    if not name.startswith("/"):
        name = "/" + name
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"no such file: {path}")
    return name, os.path.abspath(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1 (0: any free port)")
    ap.add_argument("--mount", type=parse_mount, action="append", required=True, metavar="/NAME=FILE.mp4")
    ap.add_argument("--loop", action="store_true", help="repeat each file forever")
    args = ap.parse_args(argv)

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    for name, path in args.mount:
        mounts.add_factory(name, Mp4Factory(path, args.loop))

    main_loop = GLib.MainLoop()
    if server.attach(None) == 0:
        log(f"cannot listen on {HOST}:{args.port}")
        return 2
    port = server.get_bound_port()

    def stop(*_a):
        main_loop.quit()
        return GLib.SOURCE_REMOVE

    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, stop)

    print(f"READY rtsp://{HOST}:{port}", flush=True)
    main_loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
