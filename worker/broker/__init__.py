"""The broker: what we keep on it (``topology``), how we connect (``connection``), and the
embedded on-disk broker for one machine (``embedded``)."""
