"""The Update Order body for a benchmark event, built by hand: no schema, no validation.

What the hand-written consumer and the PUT-only Celery task send; the same body the worker
sends for that event. Imports nothing of the worker, so a process using it loads no part of the
worker's Celery app.
"""

from __future__ import annotations

from typing import Any

ENUMS = {"USD": 0, "Amazon": 4}
ADDRESS_NAMES = {
    "first_name": "FirstName",
    "last_name": "LastName",
    "zip_code": "ZipCode",
    "city": "City",
    "country": "Country",
    "address_line_1": "AddressLine1",
    "state": "State",
}


def body_of(changes: dict[str, Any]) -> dict[str, Any]:
    """The same Update Order body the worker sends for a benchmark event."""
    return {
        "CustomerId": changes["customer_id"],
        "OrderSource": ENUMS[changes["order_source"]],
        "CurrencyCode": ENUMS[changes["currency_code"]],
        "ShippingAddress": {ADDRESS_NAMES[k]: v for k, v in changes["shipping_address"].items()},
    }
