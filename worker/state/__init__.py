"""State shared by every worker process: Redis for a fleet, SQLite on one machine."""

from worker.state.store import Store, StoreUnavailable, open_store

__all__ = ["Store", "StoreUnavailable", "open_store"]
