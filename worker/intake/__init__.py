"""Step 1: events arrive. The consumer reads the events queue; ``envelope`` turns a raw message
into a validated ``OrderChange`` (or says why it never can be); ``celery_hooks`` is the one place
that touches Celery's undocumented consumer internals."""
