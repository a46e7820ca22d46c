"""What can become of an event, as history records name it: short stable words, declared once.

received        the worker took the event from its queue
applied         sent in a PUT that succeeded: put_id, fields, status_code, events (the
                event ids that PUT carried)
stale           not sent: newer data for each of its fields was applied already
duplicate       not sent: the event was handled before (a redelivery, a replay)
retried         a retry was scheduled: reason, attempt, wait (seconds)
dead_lettered   the event cannot succeed: reason, dead_letter_id
"""

from __future__ import annotations

RECEIVED = "received"
APPLIED = "applied"
STALE = "stale"
DUPLICATE = "duplicate"
RETRIED = "retried"
DEAD_LETTERED = "dead_lettered"

KINDS = (RECEIVED, APPLIED, STALE, DUPLICATE, RETRIED, DEAD_LETTERED)
