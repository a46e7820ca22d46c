"""The transactional outbox: upstreams write order changes into a table in their own transaction;
a poller publishes them as events, in ``id`` order, at least once.

``table`` is the schema, ``db`` the engine and migrations, ``sink`` the broker side, ``poller``
one pass over the table, ``status`` what operators see, ``tasks`` the Celery beat task.
"""
