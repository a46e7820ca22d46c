"""A local stand-in for the Sellercloud REST API (token and Update Order), served over HTTP.

Start ``SimulatorServer`` in tests, or ``order-sync simulator`` from a shell; steer it through
``SimulatorState`` or the ``/_sim/`` control endpoints.
"""

from .runner import run_simulator
from .server import SimulatorServer
from .state import SimulatorState

__all__ = ["SimulatorServer", "SimulatorState", "run_simulator"]
