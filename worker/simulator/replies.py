"""Answers shaped like Sellercloud's (an ASP.NET Web API backend): JSON bodies and timestamps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from http import HTTPStatus
from typing import Literal

INVALID_REQUEST = "The request is invalid."
DENIED = "Authorization has been denied for this request."
SERVER_ERROR = "An error has occurred."
ORDER_NOT_FOUND = "Order not found."
TOO_MANY = "Too many requests."


@dataclass(frozen=True)
class Reply:
    """What to send back: a status with a JSON payload (None = empty body), or nothing at all."""

    status: int
    payload: object = None
    # Close the connection without writing a byte, so the client sees a connection error.
    drop: bool = False


DROPPED = Reply(status=0, drop=True)


def json_reply(status: int, payload: object) -> Reply:
    return Reply(status=status, payload=payload)


def model_state(errors: Mapping[str, Sequence[str]]) -> Reply:
    return Reply(
        HTTPStatus.BAD_REQUEST,
        {"Message": INVALID_REQUEST, "ModelState": {key: list(v) for key, v in errors.items()}},
    )


def message(status: int, text: str) -> Reply:
    return Reply(status, {"Message": text})


def denied() -> Reply:
    return message(HTTPStatus.UNAUTHORIZED, DENIED)


def too_many_requests(reset_at: float) -> Reply:
    """The documented rate-limit body; ``reset_at`` is a POSIX timestamp."""
    return Reply(
        HTTPStatus.TOO_MANY_REQUESTS, {"Error": TOO_MANY, "RateLimitResetTime": iso_utc(reset_at)}
    )


def forced(status: int, endpoint: Literal["order", "token"], now: float) -> Reply:
    """The body a scripted status answers with, as the real service would phrase it."""
    if status == HTTPStatus.BAD_REQUEST:
        return model_state(
            {"request": ["Scripted failure: the simulator was told to reject this."]}
        )
    if status == HTTPStatus.UNAUTHORIZED:
        return denied()
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        return too_many_requests(now + 1.0)
    if status == HTTPStatus.NOT_FOUND and endpoint == "order":
        return message(status, ORDER_NOT_FOUND)
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return message(status, SERVER_ERROR)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return message(status, phrase)


def iso_utc(timestamp: float) -> str:
    """ISO 8601 in UTC with seven fractional digits and ``Z``, as .NET writes it."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def http_date(timestamp: float) -> str:
    """RFC 1123 date, the form of the token's ``.issued`` and ``.expires``."""
    return formatdate(timestamp, usegmt=True)
