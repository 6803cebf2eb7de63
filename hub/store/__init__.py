"""The store: SQLAlchemy 2 async over SQLite or PostgreSQL, with Alembic migrations."""

from hub.store.db import RawJson, Store, migrate, store_failed
from hub.store.tables import metadata

__all__ = ["RawJson", "Store", "metadata", "migrate", "store_failed"]
