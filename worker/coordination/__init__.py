"""Step 2: the fleet agrees. Everything every worker must see alike lives in one shared store
(Redis, or SQLite on one machine): one writer per order and its pending events (``orders``), the
API budget (``ratelimit``) and the one Sellercloud token (``tokens``)."""
