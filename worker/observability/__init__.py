"""What operators see of a worker: structured logs (``logs``), Prometheus metrics declared once
(``metrics``) and the endpoint that serves them (``endpoint``)."""
