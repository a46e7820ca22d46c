"""``python -m worker.cli``: the same as the ``order-sync`` command."""

from worker.cli.main import main

main()
