"""Applies batches of envelopes to the read models with exactly-once effects.

Each projection tracks, per aggregate, the last version it applied, in the same transaction as
the read-model changes: a duplicate (version ≤ tracked) is skipped, and a gap (version >
tracked + 1, e.g. after a read model was rebuilt) is filled from the event log first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from command_side.contracts.envelope import Envelope
from infra import jsontext
from projections import schema
from projections.registry import PROJECTIONS, Projection

log = logging.getLogger(__name__)

#: An unescaped `\u0000` in encoded JSON (after an even run of backslashes, or none).
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
#: What PostgreSQL cannot store: NUL, which no `text` or `jsonb` value may hold, and the
#: surrogate code points (in a `str`, always lone ones), which are not UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_json(value: Any) -> bytes:
    """`value` as JSON that `jsonb` accepts. Events keep what their data held (a step's output
    may well contain a NUL); read models show U+FFFD in its place. The usual case costs one
    search of the encoded bytes."""
    try:
        encoded = msgspec.json.encode(value)
    except UnicodeEncodeError:  # a lone surrogate ("\ud800" is valid JSON, not UTF-8)
        return msgspec.json.encode(jsontext.replace_text(value, _UNSTORABLE))
    if b"\\u0000" in encoded and _NUL_ESCAPE.search(encoded):
        return msgspec.json.encode(jsontext.replace_text(value, _UNSTORABLE))
    return encoded


GapReader = Callable[[str, str, int], Awaitable[list[Envelope]]]


class ReadModelSetupError(RuntimeError):
    """The read models cannot be set up with the database user's privileges."""


@dataclass(frozen=True)
class Change:
    """A committed change of one aggregate's read model, for the change notices."""

    workspace_id: str
    context: str
    aggregate_id: str
    version: int


async def create_tables(
    conn: psycopg.AsyncConnection[Any], projections: Iterable[Projection]
) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(7242001)")  # racing projectors
        await conn.execute(schema.SCHEMA)
        await conn.execute(schema.TRACKING)
        for projection in projections:
            for ddl in projection.ddl:
                await conn.execute(ddl)
        ready = await (await conn.execute(schema.READER_READY)).fetchone()
        if not (ready and ready[0]):
            try:
                for ddl in schema.READER_ROLE_DDL:
                    await conn.execute(ddl)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise ReadModelSetupError(schema.READER_SETUP_HELP) from exc
        for ddl in schema.READER:
            await conn.execute(ddl)
        for projection in projections:
            for table in projection.tables:
                for ddl in schema.isolation(table):
                    await conn.execute(ddl)


async def ensure_read_models(database_url: str) -> None:
    """Create every projection's tables and fold functions (idempotent; safe to race)."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await create_tables(conn, PROJECTIONS.values())


async def drop_tables(
    conn: psycopg.AsyncConnection[Any], projections: Iterable[Projection]
) -> None:
    async with conn.transaction():
        for projection in projections:
            for table in projection.tables:
                await conn.execute(f"DROP TABLE IF EXISTS {table}")
            await conn.execute(
                "DELETE FROM read.projection_tracking WHERE projection = %s", (projection.name,)
            )


class Applier:
    """Folds envelopes into the read models of the given projections."""

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        projections: Sequence[Projection] | None = None,
        gap_reader: GapReader | None = None,
    ) -> None:
        self._conn = conn
        self._projections = list(projections or PROJECTIONS.values())
        self._gap_reader = gap_reader
        self.applied = 0
        self.skipped = 0

    async def setup(self) -> None:
        await create_tables(self._conn, self._projections)

    async def apply(self, envelopes: Sequence[Envelope]) -> list[Change]:
        """Apply a batch in one transaction; returns what changed (nothing for duplicates)."""
        if not envelopes:
            return []
        ids = sorted({e["aggregate_id"] for e in envelopes})
        changes: dict[str, Change] = {}
        # Pipeline mode: BEGIN rides with the tracking query, the folds and COMMIT go together.
        async with self._conn.pipeline(), self._conn.transaction(), self._conn.cursor() as cur:
            tracked = await self._tracked(cur, ids)
            # Projections that take the same envelopes share one call and one JSON document.
            calls: dict[tuple[tuple[str, int], ...], tuple[list[Envelope], list[str]]] = {}
            for projection in self._projections:
                seen = tracked[projection.name]
                fresh: list[Envelope] = []
                for envelope in envelopes:
                    if envelope["type"].split(".", 1)[0] != projection.context:
                        continue
                    for env in await self._in_order(envelope, seen):
                        fresh.append(env)
                        seen[env["aggregate_id"]] = env["aggregate_version"]
                        changes[env["aggregate_id"]] = Change(
                            env["workspace_id"],
                            projection.context,
                            env["aggregate_id"],
                            env["aggregate_version"],
                        )
                if fresh:
                    key = tuple((e["aggregate_id"], e["aggregate_version"]) for e in fresh)
                    calls.setdefault(key, (fresh, []))[1].append(projection.fold_function)
                    self.applied += len(fresh)
            for batch, functions in calls.values():
                folds = ", ".join(f"{f}(j)" for f in functions)
                await cur.execute(
                    f"SELECT {folds} FROM (SELECT %s::jsonb AS j) AS batch",
                    (Jsonb(batch, dumps=storable_json),),
                    prepare=True,
                )
            await cur.executemany(
                "INSERT INTO read.projection_tracking (projection, aggregate_id, version)"
                " VALUES (%s, %s, %s) ON CONFLICT (projection, aggregate_id)"
                " DO UPDATE SET version = EXCLUDED.version",
                [
                    (name, agg, v)
                    for name, seen in tracked.items()
                    for agg, v in seen.items()
                    if agg in changes
                ],
            )
        return list(changes.values())

    async def _tracked(
        self, cur: psycopg.AsyncCursor[Any], ids: list[str]
    ) -> dict[str, dict[str, int]]:
        tracked: dict[str, dict[str, int]] = {p.name: {} for p in self._projections}
        await cur.execute(
            "SELECT projection, aggregate_id::text, version FROM read.projection_tracking"
            " WHERE projection = ANY(%s) AND aggregate_id = ANY(%s::uuid[])",
            (list(tracked), ids),
        )
        for name, agg, version in await cur.fetchall():
            tracked[name][agg] = version
        return tracked

    async def _in_order(self, envelope: Envelope, seen: dict[str, int]) -> list[Envelope]:
        last = seen.get(envelope["aggregate_id"], 0)
        version = envelope["aggregate_version"]
        if version <= last:
            self.skipped += 1
            return []
        whole = "in_store" not in envelope  # else too large for Kafka: data left in the store
        if version == last + 1 and whole:
            return [envelope]
        if self._gap_reader is None:
            raise RuntimeError(f"{envelope['aggregate_id']} v{version} needs the event store")
        if version > last + 1:
            log.warning(
                "filling gap of %s: v%d..v%d", envelope["aggregate_id"], last + 1, version - 1
            )
        context = envelope["type"].split(".", 1)[0]
        stored = await self._gap_reader(context, envelope["aggregate_id"], last)
        return [e for e in stored if e["aggregate_version"] < version] + (
            [envelope]
            if whole
            else [
                {**e, "position": envelope.get("position", 0)}  # the store's copy has none
                for e in stored
                if e["aggregate_version"] == version
            ]
        )
