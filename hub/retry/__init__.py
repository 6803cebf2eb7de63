"""The retry ladder (DESIGN.md), one mechanism for every outbound connector."""

from hub.retry.ladder import Delivery, RetryLadder
from hub.retry.policy import RetryPolicy, next_due

__all__ = ["Delivery", "RetryLadder", "RetryPolicy", "next_due"]
