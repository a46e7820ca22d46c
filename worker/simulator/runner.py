"""Run the simulator in the foreground until SIGINT or SIGTERM (or a stop event) arrives."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FrameType

from .outcomes import Outcome
from .ratelimit import RateLimit
from .server import DEFAULT_BASE_PATH, SimulatorServer
from .state import DEFAULT_PASSWORD, DEFAULT_TOKEN_LIFETIME, DEFAULT_USERNAME, SimulatorState

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_simulator(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
    latency_ms: int = 0,
    rate_limit: RateLimit | str | None = None,
    failures: Mapping[int, Sequence[Outcome | int | str]] | None = None,
    missing: Iterable[int] = (),
    base_path: str = DEFAULT_BASE_PATH,
    announce: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (main thread only) or until ``stop`` is set.

    ``announce`` is called once with the REST root URL as soon as the server accepts calls.
    """
    limit = RateLimit.parse(rate_limit) if isinstance(rate_limit, str) else rate_limit
    state = SimulatorState(
        username,
        password,
        token_lifetime=token_lifetime,
        latency_ms=latency_ms,
        rate_limit=limit,
    )
    for order_id, outcomes in (failures or {}).items():
        state.script_order(order_id, outcomes)
    state.add_missing(missing)

    stop_event = stop if stop is not None else threading.Event()
    previous = _install_stop_handlers(stop_event)
    try:
        with SimulatorServer(host, port, state=state, base_path=base_path) as server:
            if announce is not None:
                announce(server.url)
            # A timed wait keeps the main thread responsive to signals on every platform.
            while not stop_event.wait(0.5):
                pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


def _install_stop_handlers(stop_event: threading.Event) -> dict[signal.Signals, _Handler]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop_event.set()

    return {signum: signal.signal(signum, request_stop) for signum in _STOP_SIGNALS}
