"""Test helper: real TLS made at test time: self-signed certificates (openssl), an HTTPS file server, and a
TLS front for a plain TCP server (the RTSP test server becomes an rtsps:// one).

    cert = self_signed(tmp_path, "127.0.0.1")            # valid for 127.0.0.1
    wrong = self_signed(tmp_path, "camera.example")      # valid for another name
    with https_server(folder, wrong) as base: ...        # https://127.0.0.1:PORT
    with tls_front(rtsp_port, cert) as port: ...         # rtsps://127.0.0.1:PORT/cam
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl")


@dataclass(frozen=True)
class Cert:
    cert: Path  # PEM certificate (also the CA file that trusts it: it is self-signed)
    key: Path


def self_signed(folder: Path, name: str) -> Cert:
    """A self-signed certificate for ``name`` (an IP address or a DNS name), made now with openssl."""
    assert OPENSSL, "openssl is not on PATH (Debian: apt-get install openssl)"
    try:
        ipaddress.ip_address(name)
        san = f"IP:{name}"
    except ValueError:
        san = f"DNS:{name}"
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            OPENSSL,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName={san}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return Cert(cert, key)


def _server_context(cert: Cert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


@contextmanager
def https_server(folder: Path, cert: Cert) -> Iterator[str]:
    """Serve ``folder`` over HTTPS on 127.0.0.1; yield 'https://127.0.0.1:PORT'."""
    from tests._media import http_server

    context = _server_context(cert)
    with http_server(folder, wrap=lambda sock: context.wrap_socket(sock, server_side=True)) as base:
        yield base


@contextmanager
def tls_front(port: int, cert: Cert) -> Iterator[int]:
    """Accept TLS on a port of 127.0.0.1 and relay each connection in plain TCP to ``port``; yield the TLS port."""
    ctx = _server_context(cert)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                conn.settimeout(10)
                tls = ctx.wrap_socket(conn, server_side=True)
                tls.settimeout(None)
                upstream = socket.create_connection(("127.0.0.1", port))
            except (ssl.SSLError, OSError):  # a client that refused our certificate
                conn.close()
                continue
            threading.Thread(target=pipe, args=(tls, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, tls), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        listener.close()
