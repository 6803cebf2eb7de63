"""The delivery spine: inbox-deduplicated consumers, the outbox and its relay, dead letters."""

from hub.spine.consumer import Spine, Tx
from hub.spine.outbox import Relay, add_to_outbox

__all__ = ["Relay", "Spine", "Tx", "add_to_outbox"]
