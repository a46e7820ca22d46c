"""Every ``reason`` a dead-letter entry can have: short stable words, declared once.

Operators group, filter and replay by them, metrics are labelled with them and the alert rules
name them, so each is written here and imported everywhere else.

    invalid_json              the message body is not JSON (``raw_body`` keeps it)
    unsupported_content_type  published with a content type other than JSON
    too_large                 the body is over the size limit
    invalid_event             JSON that breaks the event contract (``field_errors`` name fields)
    api_rejected              Sellercloud answered 400 or another 4xx
    order_not_found           Sellercloud answered 404
    retries_exhausted         transient failures (5xx, timeouts, 429, token trouble) outlasted
                              the retry budget
    internal_error            a bug of ours; the entry carries the exception
    delivery_limit            the broker dead-lettered the message itself (a quorum queue's
                              delivery limit); the entry keeps its body and ``x_death``
    unreadable                a message in the dead-letter queue that is not an entry
"""

from __future__ import annotations

from worker.sellercloud.errors import OrderNotFound, RequestRejected

INVALID_JSON = "invalid_json"
UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
TOO_LARGE = "too_large"
INVALID_EVENT = "invalid_event"
API_REJECTED = RequestRejected.reason
ORDER_NOT_FOUND = OrderNotFound.reason
RETRIES_EXHAUSTED = "retries_exhausted"
INTERNAL_ERROR = "internal_error"
DELIVERY_LIMIT = "delivery_limit"
UNREADABLE = "unreadable"

#: Every reason, in the order of the table above.
REASONS = (
    INVALID_JSON,
    UNSUPPORTED_CONTENT_TYPE,
    TOO_LARGE,
    INVALID_EVENT,
    API_REJECTED,
    ORDER_NOT_FOUND,
    RETRIES_EXHAUSTED,
    INTERNAL_ERROR,
)
