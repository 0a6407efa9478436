"""`autoops replay`: drop read models and rebuild them straight from the event store.

The rebuild runs in one transaction: readers and a running projector wait on its locks and
then see the finished read model (the projector skips what the replay already applied).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from tqdm import tqdm

from command_side.contracts.envelope import Envelope
from command_side.contracts.log import EventLog
from projections.applier import Applier, create_tables, drop_tables
from projections.registry import PROJECTIONS, Projection


class UnknownProjection(ValueError):
    """A projection name that does not exist."""


@dataclass(frozen=True)
class ReplaySummary:
    projections: tuple[str, ...]
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        return (
            f"replayed {self.events} events into {', '.join(self.projections)} "
            f"in {self.seconds:.2f} s ({self.rate:,.0f} events/s)"
        )


def select(names: Sequence[str]) -> list[Projection]:
    unknown = [n for n in names if n not in PROJECTIONS]
    if unknown:
        raise UnknownProjection(
            f"unknown projection {', '.join(unknown)}; known: {', '.join(PROJECTIONS)}"
        )
    return [PROJECTIONS[n] for n in names] if names else list(PROJECTIONS.values())


def _read_ahead(
    logs: list[EventLog], out: queue.Queue[list[Envelope] | BaseException | None]
) -> None:
    """Decode the next batch while the previous one is written."""
    try:
        for log in logs:
            for batch in log.read(batch=5000):
                out.put(batch)
        out.put(None)
    except BaseException as exc:
        out.put(exc)


async def rebuild(
    database_url: str,
    eventsourcing_env: dict[str, str],
    names: Sequence[str] = (),
    progress: bool = False,
) -> ReplaySummary:
    projections = select(names)
    # Each context's log in turn: projections only take their own context's events.
    contexts = sorted({p.context for p in projections})
    logs = [EventLog(eventsourcing_env, context) for context in contexts]
    started = time.perf_counter()
    events = 0
    try:
        total = sum(log.count() for log in logs)
        batches: queue.Queue[list[Envelope] | BaseException | None] = queue.Queue(maxsize=4)
        reader = threading.Thread(target=_read_ahead, args=(logs, batches), daemon=True)
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            await create_tables(conn, projections)
            await conn.commit()
            async with conn.transaction():
                await drop_tables(conn, projections)
                await create_tables(conn, projections)
                applier = Applier(conn, projections)
                reader.start()
                with tqdm(total=total, unit="ev", disable=not progress, smoothing=0.1) as bar:
                    while (batch := await asyncio.to_thread(batches.get)) is not None:
                        if isinstance(batch, BaseException):
                            raise batch
                        await applier.apply(batch)
                        events += len(batch)
                        bar.update(len(batch))
    finally:
        for log in logs:
            log.close()
    return ReplaySummary(tuple(p.name for p in projections), events, time.perf_counter() - started)


def replay(database_url: str, eventsourcing_env: dict[str, str], names: Sequence[str]) -> int:
    """The CLI entry: rebuild with a progress bar, print the summary."""
    from infra.errors import ConfigError

    try:
        summary = asyncio.run(rebuild(database_url, eventsourcing_env, names, progress=True))
    except UnknownProjection as exc:
        raise ConfigError(str(exc)) from exc
    print(summary)
    return 0
