"""Celery workers that apply order-change events to Sellercloud.

``celery -A worker worker`` finds the app in ``worker.celery`` (Celery's own convention), which is
the only module that builds it: importing this package, the publisher or the schemas builds no
app and touches no file.

The way of one event, package by package:

    broker/         the queues and exchanges, connections, the embedded on-disk broker
    intake/         the events queue -> envelope -> validated event, handed to the pool
    coordination/   the fleet's shared store: one writer per order, merges, dedup, budget, token
    sellercloud/    the API client: bearer-token auth, Update Order, its errors
    apply/          the task, the retry policy, and the plain functions it runs
    deadletter/     entries, the dead-letter queue, and the operators' dead-letter operations

and beside it: ``cli/`` (the ``order-sync`` command), ``outbox/``, ``simulator/``,
``observability/`` (logs, metrics), ``settings`` (configuration) and ``publisher`` (for
upstreams).
"""
