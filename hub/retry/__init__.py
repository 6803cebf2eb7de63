"""The retry ladder (DESIGN.md), one mechanism for every outbound connector."""

from hub.retry.delivery import Delivery
from hub.retry.ladder import RetryLadder
from hub.retry.policy import RetryPolicy, next_due, parse_retry_after
from hub.retry.wiring import deliver_through, ladder_on

__all__ = [
    "Delivery",
    "RetryLadder",
    "RetryPolicy",
    "deliver_through",
    "ladder_on",
    "next_due",
    "parse_retry_after",
]
