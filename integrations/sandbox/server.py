"""Serve the sandbox: a threaded HTTP/1.1 server with keep-alive, and its command line.

Werkzeug's development server answers every request with ``Connection: close``; real CC
clients keep connections alive, and the benchmark needs them to, so the sandbox runs its WSGI
app on this small stdlib server instead: one thread per connection, bodies read fully by
``Content-Length`` (or chunked), responses written in one piece with a length. It can also
reset a connection on purpose (``faults.DropConnection``): SO_LINGER 0, then close → TCP RST.

An outage (``POST /__sandbox/faults/outage``) makes CC unreachable: the listening socket is
closed, so connecting is refused, and every open connection is shut; after the outage the
server listens again on the same port, with everything it held in memory intact.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import signal
import socket
import struct
import sys
import threading
import time
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from socketserver import TCPServer, ThreadingMixIn
from typing import Any, TextIO
from urllib.parse import unquote_to_bytes

from integrations.sandbox.app import SandboxApp
from integrations.sandbox.faults import DropConnection
from integrations.sandbox.state import Sandbox, SandboxError

logger = logging.getLogger("integrations.sandbox")

MAX_BODY_BYTES = 64 * 1024 * 1024
IDLE_KEEPALIVE_SECONDS = 120
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ConstantContactSandbox/1.0"
    sys_version = ""
    timeout = IDLE_KEEPALIVE_SECONDS
    server: SandboxServer

    def setup(self) -> None:
        super().setup()
        self._reset_connection = False
        self.server.connection_opened(self.connection)
        # One write per response already; NODELAY stops Nagle from delaying it on keep-alive.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_one_request(self) -> None:
        try:
            self.raw_requestline = self.rfile.readline(65537)
        except (TimeoutError, ConnectionError):
            self.close_connection = True
            return
        if len(self.raw_requestline) > 65536:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if not self.parse_request():
            return
        try:
            self._serve()
        except DropConnection:
            self._reset_connection = True
            self.close_connection = True
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(HTTPStatus.BAD_REQUEST, "Malformed body framing")
            self.close_connection = True
            return
        if body is None:
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            self.close_connection = True
            return
        path, _, query = self.path.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": self.server.server_name,
            "SERVER_PORT": str(self.server.server_port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in self.headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            # The body is already de-chunked and its length is CONTENT_LENGTH.
            if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"):
                environ[key] = f"{environ[key]},{value}" if key in environ else value
        response: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
            response["status"], response["headers"] = status, headers
            return lambda data: None

        chunks = self.server.app(environ, start_response)
        payload = b"".join(chunks)
        lines = [f"HTTP/1.1 {response['status']}"]
        lines += [f"{name}: {value}" for name, value in response["headers"]]
        lines.append(f"Date: {formatdate(usegmt=True)}")
        lines.append(f"Server: {self.server_version}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.command == "HEAD":
            payload = b""
        self.wfile.write(head + payload)

    def finish(self) -> None:
        self.server.connection_closed(self.connection)
        super().finish()
        if self._reset_connection:
            # Close with linger 0 so the peer sees a TCP RST, not an orderly FIN.
            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines can carry codes and tokens in the query string: log nothing of them.
        logger.debug("http: " + format, *args)


class SandboxServer(ThreadingMixIn, HTTPServer):
    """One thread per connection; threads are daemons so shutdown never waits on a client."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        self.app = app
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.stopping = threading.Event()
        self.outage_seconds = 0.0
        self._outage_over = threading.Event()
        super().__init__(address, _Handler)

    def connection_opened(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(connection)

    def connection_closed(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(connection)

    def stop(self) -> None:
        """End :meth:`serve` (from another thread; also during an outage)."""
        self.stopping.set()
        self._outage_over.set()
        self.shutdown()

    def end_outage(self) -> None:
        """Listen again now, before the outage's seconds are up (no-op when serving)."""
        self._outage_over.set()

    def start_outage(self, seconds: float) -> None:
        """Stop listening for ``seconds`` (called from a request thread: returns at once)."""

        def begin() -> None:
            time.sleep(0.05)  # let the control API's answer go out first
            self._outage_over.clear()
            self.outage_seconds = seconds
            self.app.sandbox.faults.count("outage")
            self.shutdown()

        threading.Thread(target=begin, name="sandbox-outage", daemon=True).start()

    def serve(self, poll_interval: float = 0.2) -> None:
        """Serve until :meth:`stop`, going dark during outages."""
        while not self.stopping.is_set():
            self.serve_forever(poll_interval=poll_interval)
            seconds, self.outage_seconds = self.outage_seconds, 0.0
            if self.stopping.is_set() or not seconds:
                return
            self.socket.close()  # connecting is refused from now on
            with self._connections_lock:
                open_now = list(self._connections)
            for connection in open_now:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._outage_over.wait(timeout=seconds)
            if self.stopping.is_set():
                return
            self.socket = socket.socket(self.address_family, self.socket_type)
            self.server_bind()
            self.server_activate()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall without DNS.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    @property
    def url(self) -> str:
        host = self.server_address[0]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.server_port}"


def load_config(path: str | Path | None) -> dict[str, Any]:
    """The ``--config`` JSON file (``{"options", "clients", "accounts"}``), or ``{}``."""
    if not path:
        return {}
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise SandboxError(f"cannot read sandbox config {path}: {error}") from None
    if not isinstance(config, dict):
        raise SandboxError("the sandbox config must be a JSON object")
    return config


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    config: dict[str, Any] | None = None,
    out: TextIO | None = None,
    ready: threading.Event | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM (or ``server.shutdown()``); returns the exit status.

    The first line written to ``out`` is ``SANDBOX_URL=http://host:port`` (flushed), so a
    parent process can read the port chosen for ``port=0``.
    """
    out = out or sys.stdout
    sandbox = Sandbox(config)
    server = SandboxServer((host, port), SandboxApp(sandbox))
    url = server.url
    out.write(f"SANDBOX_URL={url}\n")
    out.write(
        "Constant Contact sandbox listening. Point ccportal at it with:\n"
        f"  CC_MODE=sandbox\n  CC_SANDBOX_URL={url}\n"
        f"Control API: {url}/__sandbox/ (see integrations/sandbox/README.md). "
        "Ctrl-C stops it.\n"
    )
    if host not in LOOPBACK_HOSTS:
        out.write(
            f"WARNING: listening on {host}, not loopback: anyone who can reach it can use it.\n"
        )
    out.flush()

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.stop, name="sandbox-stop", daemon=True).start()

    sandbox.faults.outage_starter = server.start_outage

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
    if ready is not None:
        ready.set()
    try:
        server.serve()
    finally:
        sandbox.faults.clear()  # wakes connections held by timeout faults
        server.server_close()
    out.write("Sandbox stopped.\n")
    out.flush()
    return 0


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description="Run the Constant Contact sandbox.")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--config", help="JSON file with options, clients and accounts to preload")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config)
        return serve(host=args.host, port=args.port, config=config)
    except SandboxError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
