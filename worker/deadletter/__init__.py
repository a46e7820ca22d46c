"""Step 4, when an event cannot succeed: ``reasons`` (the stable words), ``entries`` (what an
entry says), ``queue`` (publishing and reading the dead-letter queue without losing anything),
``operations`` (select, summarise, replay, export, purge)."""
