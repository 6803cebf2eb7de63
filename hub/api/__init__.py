"""HTTP routers of the hub, one per resource."""
