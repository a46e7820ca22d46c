"""The HTTP side of the simulator: a threaded HTTP/1.1 server with keep-alive.

Routing: ``{base_path}/...`` goes to the simulated API, ``/_sim/...`` to the control API.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from .api import ApiRequest, handle_api
from .control import PREFIX as CONTROL_PREFIX
from .control import handle_control
from .replies import Reply, json_reply, message
from .state import SimulatorState

DEFAULT_BASE_PATH = "/rest/api"
MAX_BODY_BYTES = 1 << 20
# Idle keep-alive connections are closed after this long so their threads do not pile up.
IDLE_TIMEOUT_SECONDS = 60.0
# How often the serving loop checks for stop(); short, so tests starting many servers stay fast.
SHUTDOWN_POLL_SECONDS = 0.02


class _BodyError(Exception):
    def __init__(self, status: HTTPStatus, text: str) -> None:
        super().__init__(text)
        self.status = status


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: SimulatorState, base_path: str) -> None:
        self.sim_state = state
        self.base_path = base_path
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(connection)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections so they end."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            # OSError: its handler closed it meanwhile.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that gave up (read timeouts, dropped pools) are routine here, not errors.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_SECONDS
    server_version = "SellercloudSimulator/1.0"

    @property
    def _server(self) -> _HTTPServer:
        return cast(_HTTPServer, self.server)

    def setup(self) -> None:
        super().setup()
        self._server.track(self.connection)
        self._server.sim_state.note_connection()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except _BodyError as exc:
            # The rest of the body is still on the wire, so this connection cannot be reused.
            self.close_connection = True
            self._send(message(exc.status, str(exc)))
            return
        path = urlsplit(self.path).path
        base = self._server.base_path
        state = self._server.sim_state
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            reply = handle_control(state, self.command, path, body)
        elif path.lower().startswith(base.lower() + "/"):
            request = ApiRequest(
                method=self.command,
                path=path,
                route=path[len(base) :],
                content_type=self.headers.get("Content-Type"),
                authorization=self.headers.get("Authorization"),
                body=body,
            )
            reply = handle_api(state, request)
        else:
            reply = json_reply(
                HTTPStatus.NOT_FOUND,
                {"Message": f"No HTTP resource was found that matches the request URI '{path}'."},
            )
        self._send(reply)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise _BodyError(HTTPStatus.BAD_REQUEST, "Invalid Content-Length.") from None
        if length < 0:
            raise _BodyError(HTTPStatus.BAD_REQUEST, "Invalid Content-Length.")
        if length > MAX_BODY_BYTES:
            raise _BodyError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "The request body is too large.")
        body = self.rfile.read(length)
        if len(body) < length:
            raise _BodyError(HTTPStatus.BAD_REQUEST, "The request body ended early.")
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _BodyError(HTTPStatus.BAD_REQUEST, "Invalid chunked body.") from None
            if size == 0:
                # Skip trailers up to the blank line that ends the message.
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BodyError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "The request body is too large."
                )
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send(self, reply: Reply) -> None:
        if reply.drop:
            self.close_connection = True
            # OSError: the client already went away.
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        data = b"" if reply.payload is None else json.dumps(reply.payload).encode("utf-8")
        self.send_response(reply.status)
        if reply.payload is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        # Always sent, even for empty bodies: without it a keep-alive client cannot find the end.
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


class SimulatorServer:
    """A local stand-in for the Sellercloud REST API, served over real HTTP.

    The socket is bound on construction (``port=0`` picks a free port); ``start()`` serves it
    from a daemon thread. Use as a context manager to start and stop it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        state: SimulatorState | None = None,
        base_path: str = DEFAULT_BASE_PATH,
    ) -> None:
        self._state = state if state is not None else SimulatorState()
        self._base_path = "/" + base_path.strip("/")
        self._httpd = _HTTPServer((host, port), self._state, self._base_path)
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def state(self) -> SimulatorState:
        return self._state

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://host:port`` with no path, where ``/_sim/`` lives."""
        host = self.host
        if host in ("0.0.0.0", ""):  # noqa: S104 - mapping a wildcard bind to a usable address
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The REST root, e.g. ``http://127.0.0.1:54321/rest/api``."""
        return self.base_url + self._base_path

    def start(self) -> SimulatorServer:
        if self._stopped:
            raise RuntimeError("a stopped simulator cannot be started again")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
                name=f"sellercloud-simulator:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            # shutdown() waits for serve_forever to notice, so only call it once serving.
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.close_connections()
        self._httpd.server_close()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
