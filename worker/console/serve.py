"""Serving the console with waitress: a pure-Python, production-grade WSGI server (threads, no
C extension, maintained by the Pylons project), fine for a handful of operators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

THREADS = 8


def address(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(app: Any, host: str, port: int, on_ready: Callable[[str], None]) -> None:
    """Listen on ``host:port`` (port 0: any free one), call ``on_ready(url)``, serve until
    interrupted (Ctrl-C or SIGTERM)."""
    import signal

    from waitress.server import create_server

    server: Any = create_server(
        app,
        host=host,
        port=port,
        threads=THREADS,
        ident="order-sync-console",
        clear_untrusted_proxy_headers=True,
        channel_timeout=60,
    )
    on_ready(address(host, int(server.effective_port)))

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
