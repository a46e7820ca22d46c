"""Step 3: the event is applied. ``tasks`` holds the Celery task (thin), ``retry`` every
"retry, how long, counted or not, or dead-letter" decision, ``sync`` the plain functions that
bring an order up to date, and ``runtime`` the per-process objects they use."""
