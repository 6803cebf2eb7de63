"""The store: SQLAlchemy 2 async over SQLite or PostgreSQL, with Alembic migrations."""

from hub.store.db import RawJson, Store, commit_unknown, migrate, store_failed
from hub.store.tables import metadata

__all__ = ["RawJson", "Store", "commit_unknown", "metadata", "migrate", "store_failed"]
