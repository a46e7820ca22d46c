"""The ``order-sync`` command (``main``) and its command groups, one module each."""
