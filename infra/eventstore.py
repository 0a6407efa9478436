"""eventsourcing's PostgreSQL persistence, with its tables created one process at a time.

Every process opens the event stores as it starts, and each store creates its tables with
`CREATE TABLE IF NOT EXISTS`. PostgreSQL does not serialise those: two processes starting
together on an empty database (`autoops up` starts them all at once) can both try to create
a table, and one fails on the catalog's unique index (`pg_type_typname_nsp_index`) or with
"tuple concurrently updated". Here they run under an advisory lock, so the second process
waits and then finds the tables there."""

from __future__ import annotations

import zlib

from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
)

#: The advisory lock every event store's DDL takes (one for all stores and processes).
DDL_LOCK = zlib.crc32(b"autoops.event-store-ddl")


class _SerialisedDDL(PostgresAggregateRecorder):
    def create_table(self) -> None:
        # On a connection of its own, for the whole of it: the library creates the composite
        # types in transactions of their own before the tables.
        with self.datastore.get_connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (DDL_LOCK,))
            try:
                super().create_table()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (DDL_LOCK,))


class AggregateRecorder(_SerialisedDDL):
    """Snapshots."""


class ApplicationRecorder(_SerialisedDDL, PostgresApplicationRecorder):
    """Events and their notification log."""


class Factory(PostgresFactory):
    """`PERSISTENCE_MODULE` of every event store (`infra.settings.eventsourcing_env_for`)."""

    aggregate_recorder_class = AggregateRecorder
    application_recorder_class = ApplicationRecorder
