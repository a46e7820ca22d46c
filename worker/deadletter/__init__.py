"""Step 4, when an event cannot succeed: ``reasons`` (the stable words), ``entries`` (what an
entry says), ``queue`` (publishing entries durably), ``ingest`` and ``consumer`` (moving them into
the database), ``store`` (the database: ``DeadLetterDB``), ``selection`` and ``groups`` (which
entries, and by which cause), ``operations`` (select, summarise, replay, export, purge)."""
