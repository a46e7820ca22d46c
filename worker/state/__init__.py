"""State shared by every worker process: Redis for a fleet, SQLite on one machine."""

from worker.state.store import Entry, Lock, Store, StoreUnavailable, Taken, open_store

__all__ = ["Entry", "Lock", "Store", "StoreUnavailable", "Taken", "open_store"]
