"""The log's tables, indexes and versioned migrations.

Migrations are sqlite-utils ``Migrations``, named ``migrate_vN_vM``; the schema
version is also kept in ``meta`` so that a newer log is refused before anything
is written to it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

SCHEMA_VERSION = 1


def migrations() -> Migrations:
    """The migration set, in order; built on demand so importing the log stays cheap."""
    from sqlite_utils.migrations import Migrations

    steps = Migrations("installengine.eventlog")
    steps(name="migrate_v0_v1")(migrate_v0_v1)
    return steps


def migrate_v0_v1(db: Database) -> None:
    """Create the events and meta tables and the indexes queries rely on."""
    db["events"].create(  # type: ignore[union-attr]
        {"seq": int, "session": str, "ts": str, "kind": str, "checkpoint": str,
         "data": str, "prev_hash": str, "hash": str},
        pk="seq",
        not_null={"session", "ts", "kind", "data", "prev_hash", "hash"},
    )
    # Each filter index ends in seq, so "filter, then order by seq" needs no sort.
    db["events"].create_index(["session", "seq"], index_name="events_by_session")  # type: ignore[union-attr]
    db["events"].create_index(["kind", "seq"], index_name="events_by_kind")  # type: ignore[union-attr]
    db["events"].create_index(["checkpoint", "seq"], index_name="events_by_checkpoint")  # type: ignore[union-attr]
    db["events"].create_index(["ts"], index_name="events_by_ts")  # type: ignore[union-attr]
    db["meta"].create({"key": str, "value": str}, pk="key", not_null={"value"})  # type: ignore[union-attr]
    db["meta"].insert_all([  # type: ignore[union-attr]
        {"key": "schema_version", "value": str(SCHEMA_VERSION)},
        {"key": "install_id", "value": uuid.uuid4().hex},
        {"key": "created", "value": datetime.now(UTC).isoformat()},
        {"key": "head_seq", "value": "0"},
        {"key": "head_hash", "value": "0" * 64},
    ])
