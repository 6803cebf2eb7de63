"""`ketenhub retention`: purge personal data past its term now, or say what would go."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hub.config import Settings
from hub.store import Store


def retention(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would be purged; change nothing")
    ] = False,
) -> None:
    """Purge what is past its term (KETENHUB_RETENTION__*: a case after CASE_DAYS of no activity, a
    signal SIGNAL_DAYS after its end date, audit entries after AUDIT_DAYS), audited per youth. The
    running hub does this every INTERVAL_H hours by itself."""
    from hub.ops.cli import _run
    from hub.retention.purge import commands_kept, purge

    async def go(settings: Settings, store: Store) -> dict[str, Any]:
        kept = commands_kept(settings.kafka.inbox_keep_days)
        return (await purge(store, settings.retention, dry_run=dry_run, kept=kept)).as_json()

    counts = _run(go)
    what = ", ".join(f"{name} {n}" for name, n in counts.items() if name != "dry_run")
    typer.echo(f"{'would purge' if dry_run else 'purged'}: {what}")
