"""The hand-written PUT of a benchmark event: no schema, no validation, no retries.

What the hand-written consumer and the PUT-only Celery task both do; the body is the one the
worker sends for that event. Imports nothing of the worker, so a process using it loads no part
of the worker's Celery app.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import requests

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


class PlainPut:
    """PUTs with one ``requests.Session`` per thread and one token, fetched on first use, for
    the API named by the worker's environment variables."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()
        self.token: str | None = None

    def session(self) -> requests.Session:
        session: requests.Session | None = getattr(self.local, "session", None)
        if session is None:
            with self.lock:
                if self.token is None:
                    credentials = {
                        "Username": os.environ["SELLERCLOUD_USERNAME"],
                        "Password": os.environ["SELLERCLOUD_PASSWORD"],
                    }
                    reply = requests.post(
                        f"{os.environ['SELLERCLOUD_BASE_URL']}/token", json=credentials, timeout=10
                    )
                    self.token = str(reply.json()["access_token"])
            session = self.local.session = requests.Session()
            session.headers["Authorization"] = f"Bearer {self.token}"
        return session

    def __call__(self, event: dict[str, Any]) -> None:
        base = os.environ["SELLERCLOUD_BASE_URL"]
        response = self.session().put(
            f"{base}/Orders/{event['order_id']}", json=body_of(event["changes"]), timeout=10
        )
        response.raise_for_status()
