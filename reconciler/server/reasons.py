"""The words of status: pass outcomes, condition reasons and phases, in one place (as Flux's
``meta`` package keeps Ready, Reconciling, Stalled and their reasons).

An outcome names how a pass ended and decides when the next one runs (``requeue_after``);
a condition's reason is what ``status`` shows as the last error.
"""

from __future__ import annotations

from typing import Final, Literal

Outcome = Literal[
    "Applied",
    "UpToDate",
    "Progressing",
    "Invalid",
    "Refused",
    "SourceUnavailable",
    "AgentUnavailable",
    "StoreUnavailable",
    "Error",
    "Following",
]
Phase = Literal["source", "validate", "observe", "plan", "apply", "health"]

APPLIED: Final = "Applied"
UP_TO_DATE: Final = "UpToDate"
PROGRESSING: Final = "Progressing"
INVALID: Final = "Invalid"
REFUSED: Final = "Refused"
SOURCE_UNAVAILABLE: Final = "SourceUnavailable"
AGENT_UNAVAILABLE: Final = "AgentUnavailable"
STORE_UNAVAILABLE: Final = "StoreUnavailable"
ERROR: Final = "Error"
FOLLOWING: Final = "Following"
FENCED: Final = "Fenced"

# Outcomes that back off: something outside us failed, or a bug; try again, slower each time.
RETRIED: Final = frozenset({SOURCE_UNAVAILABLE, AGENT_UNAVAILABLE, STORE_UNAVAILABLE, ERROR})
# Outcomes that wait for a new commit: retrying the same revision cannot help.
STALLED: Final = frozenset({INVALID, REFUSED})

# Event reasons beside the outcomes.
FETCHED: Final = "Fetched"
RESUMED: Final = "Resumed"
APPLY: Final = "Apply"
LEADER: Final = "Leader"
