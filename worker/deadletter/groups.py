"""Error groups: entries that failed the same way, whatever order or event they were about.

A group is the reason plus the error message with its ids blanked out; its key is a short,
stable digest of both, so the summary, notes on a group and the console all name a group alike.
"""

from __future__ import annotations

import hashlib
import re

# Ids and counts, not short numbers: "HTTP 400" and "HTTP 503" are different failures.
_IDS = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{16,}\b"
    r"|\d{4,}"
)
#: Longer messages are grouped by their start: a response body pasted into an error would
#: otherwise make every entry a group of its own.
GROUP_TEXT_LIMIT = 300


def error_group(error: str) -> str:
    """An error message with its ids blanked, so one failure mode is one group."""
    return _IDS.sub("N", error)[:GROUP_TEXT_LIMIT]


def group_key(reason: str, error: str) -> str:
    """The stable key of the group an entry with this reason and error message belongs to."""
    text = f"{reason}\0{error_group(error)}"
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]
