"""Where prometheus_client keeps counts when a worker's pool has several processes.

It chooses its storage when first imported, so ``worker.celery`` calls this before anything
imports it, in the process that forks the pool: then each child writes its counts to a file in
one folder, and the endpoint sums them at each scrape (and a restarted child keeps its history).
"""

from __future__ import annotations

import tempfile
from collections.abc import MutableMapping

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_storage(environ: MutableMapping[str, str]) -> None:
    """Give this process and its pool children one folder for their counts."""
    if not environ.get(MULTIPROC_ENV):
        environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="order-sync-metrics-")
