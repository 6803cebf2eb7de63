"""A hub's routing settings: its topics under its prefix, its clock; shared by routing and delivery."""

from __future__ import annotations

from hub.handovers.service import Routing
from hub.runtime import Hub
from hub.topics import HANDOVER_DISPATCH, HANDOVER_REQUESTED, NOTIFICATION_MAIL


def routing_of(hub: Hub) -> Routing:
    """The hub's routing settings (topics under its prefix), made once."""
    r = hub.components.get("routing")
    if not isinstance(r, Routing):
        r = Routing(
            requested_topic=hub.topic(HANDOVER_REQUESTED.name),
            dispatch_topic=hub.topic(HANDOVER_DISPATCH.name),
            mail_topic=hub.topic(NOTIFICATION_MAIL.name),
            clock=lambda: hub.clock(),  # the hub's clock, also when it is set after this is made
        )
        hub.components["routing"] = r
    return r
