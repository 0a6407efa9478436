"""The cron scheduler: starts an execution of a published workflow when one of its
`trigger.cron` nodes comes due (croniter, in the trigger's time zone).

It follows the workflow event log (every `Published` event re-reads that workflow's cron
triggers) and keeps the schedule in memory. Each fire has a deterministic execution id
(workflow, node, fire time), so any number of schedulers can run and a restart never starts a
fire twice: the second `ExecutionStarted` of an id is refused by the store. Fires missed while
no scheduler ran are caught up for `catch_up_s` (default a minute); older ones are skipped.

It is also the durable timer of node locks: from the same log it knows every lease and records
`LockExpired` when one runs out with nobody renewing it (the holder may be gone). The leases
live in the log, so a restarted scheduler finds them again; a lease renewed or released in the
meantime is left alone by the aggregate, and two schedulers record one expiry.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from eventsourcing.persistence import IntegrityError

from command_side.errors import CommandError, Conflict, ValidationFailed
from command_side.execution.service import ExecutionService
from command_side.execution.store import ExecutionStore
from command_side.store import WorkflowStore

log = logging.getLogger(__name__)
ACTOR = "scheduler"
#: Workflow events that start, move or end a node lock's lease.
LEASE_EVENTS = frozenset(
    {"NodeLocked", "LockRenewed", "NodeUnlocked", "LockBroken", "LockExpired", "NodeRemoved"}
)


@dataclass
class CronTrigger:
    workflow_id: str
    workspace_id: str
    node_id: str
    expression: str
    timezone: str
    next_fire: float
    #: The reason a fire of this schedule (of this published version) was last refused and
    #: recorded for: the same refusal again is only logged, not recorded every fire.
    refused: str | None = None


def fire_id(workflow_id: str, node_id: str, at: float) -> UUID:
    return uuid5(NAMESPACE_URL, f"autoops:cron:{workflow_id}:{node_id}:{int(at)}")


def next_fire(expression: str, timezone: str, after: float) -> float:
    """The first instant after `after` when `expression` comes due on the wall clock of
    `timezone` (default UTC); ValueError when it names no later date.

    A daily job keeps its wall-clock time across clock changes. A wall time the clocks
    repeat (fall-back) fires once, at its first occurrence. A wall time the clocks skip
    (spring-forward) fires once, as far past the change as it was past the last time before
    it: 02:30 in a 02:00 → 03:00 gap fires at 03:30 (PEP 495's `fold=0`, as croniter's own
    zone handling had it).
    """
    zone = ZoneInfo(timezone or "UTC")
    # croniter walks naive wall times; given an aware start it does its own offset arithmetic,
    # which put `30 1 * * *` at 02:30 the day after the clocks went back.
    walls = croniter(expression, seek_from(after, zone))
    fire: float | None = None
    while True:
        try:
            wall = walls.get_next(datetime)
        except ValueError:  # croniter's CroniterBadDateError: it names no later date
            if fire is None:
                raise
            return fire
        if fire is not None and wall >= wall_clock(fire, zone):
            # No later wall time comes sooner. An earlier one can: a skipped time fires past
            # the gap, where a real time may come first (Lord Howe's clocks jump from 02:00 to
            # 02:30: 02:15 fires at 02:45, after 02:40).
            return fire
        at = wall.replace(tzinfo=zone).timestamp()
        if at > after:  # a repeated time is due only until its first occurrence
            fire = at if fire is None else min(fire, at)


def seek_from(after: float, zone: ZoneInfo) -> datetime:
    """The wall time from which `next_fire` looks for the fires after `after`: `after`'s own,
    but within a gap's length of the clocks springing forward, the one before the jump, since
    the gap's times may still be due (a skipped 02:30 fires at 03:30, past 03:00)."""
    # Clocks change at most once a day: a forward jump shows a day back, then is checked to
    # be recent.
    jump = utc_offset(after, zone) - utc_offset(after - 86400, zone)
    if jump > timedelta(0):
        jump = utc_offset(after, zone) - utc_offset(after - jump.total_seconds(), zone)
    return wall_clock(after, zone) - max(jump, timedelta(0))


def wall_clock(at: float, zone: ZoneInfo) -> datetime:
    """What a clock in `zone` shows at the instant `at` (naive)."""
    return datetime.fromtimestamp(at, zone).replace(tzinfo=None)


def utc_offset(at: float, zone: ZoneInfo) -> timedelta:
    return datetime.fromtimestamp(at, zone).utcoffset() or timedelta(0)


class Scheduler:
    def __init__(
        self,
        eventsourcing_env: dict[str, str],
        interval_s: float = 1.0,
        catch_up_s: float = 60.0,
        heartbeat: Callable[..., None] | None = None,
    ) -> None:
        self._heartbeat = heartbeat or (lambda **_: None)
        self.workflows = WorkflowStore(env=eventsourcing_env)
        self.executions = ExecutionStore(env=eventsourcing_env)
        self.service = ExecutionService(self.executions, self.workflows)
        self.interval_s = interval_s
        self.catch_up_s = catch_up_s
        self.triggers: dict[tuple[str, str], CronTrigger] = {}
        #: (workflow, node) → when its lock's lease ends, for every lock held.
        self.leases: dict[tuple[str, str], float] = {}
        self._position = 0
        self._caught_up = False
        self.started: list[UUID] = []

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.tick(time.time())
                self._heartbeat(triggers=len(self.triggers), leases=len(self.leases))
                stop.wait(self.interval_s)
        finally:
            self.workflows.close()
            self.executions.close()

    def tick(self, now: float) -> list[UUID]:
        """Follow the workflow log, expire the leases that ran out, then start whatever is due;
        returns the ids started."""
        self._follow(now)
        self._expire(now)
        started = []
        for trigger in list(self.triggers.values()):
            while trigger.next_fire <= now:
                at = trigger.next_fire
                try:
                    trigger.next_fire = next_fire(trigger.expression, trigger.timezone, at)
                except ValueError as exc:  # no date after this one: this fire is the last
                    log.warning("cron %s/%s: %s", trigger.workflow_id, trigger.node_id, exc)
                    trigger.next_fire = math.inf
                execution_id = fire_id(trigger.workflow_id, trigger.node_id, at)
                try:
                    self.service.start(
                        trigger.workspace_id,
                        ACTOR,
                        trigger.workflow_id,
                        {"scheduled_at": at, "fired_at": now},
                        trigger={"kind": "cron", "node_id": trigger.node_id, "at": at},
                        start_node=trigger.node_id,
                        execution_id=execution_id,
                    )
                    started.append(execution_id)
                except Conflict as exc:  # a duplicate fire: another scheduler took it
                    log.info("cron %s/%s at %s: %s", trigger.workflow_id, trigger.node_id, at, exc)
                except CommandError as exc:
                    # A workflow that cannot run any more (e.g. it no longer validates): its
                    # owner needs to hear of it, and the next fire is tried again.
                    log.warning(
                        "cron %s/%s at %s not started: %s",
                        trigger.workflow_id, trigger.node_id, at, exc,
                    )  # fmt: skip
                    if isinstance(exc, ValidationFailed) and str(exc) != trigger.refused:
                        trigger.refused = str(exc)
                        self._record_refused(trigger, at, now, execution_id, str(exc))
        self.started += started
        return started

    def _record_refused(
        self, trigger: CronTrigger, at: float, now: float, execution_id: UUID, reason: str
    ) -> None:
        """The fire as a FAILED execution with the reason, where the workflow's owner looks
        (its executions), once however many schedulers refused it. Only the first fire a
        published version's schedule refuses for a reason is recorded (a schedule of every
        second would otherwise record 86,400 a day); a new version starts again."""
        try:
            self.service.record_refused(
                trigger.workspace_id,
                ACTOR,
                trigger.workflow_id,
                {"scheduled_at": at, "fired_at": now},
                f"the cron fire could not start: {reason}",
                trigger={"kind": "cron", "node_id": trigger.node_id, "at": at},
                start_node=trigger.node_id,
                execution_id=execution_id,
            )
        except Conflict:
            log.info(
                "cron %s/%s at %s: its refusal was recorded by another scheduler",
                trigger.workflow_id, trigger.node_id, at,
            )  # fmt: skip
        except Exception:  # a graph too broken to record: the log line above stays
            log.warning(
                "cron %s/%s at %s: the refusal could not be recorded",
                trigger.workflow_id, trigger.node_id, at, exc_info=True,
            )  # fmt: skip

    def _follow(self, now: float) -> None:
        recorder = self.workflows.recorder
        while True:
            notifications = recorder.select_notifications(
                start=self._position, limit=1000, inclusive_of_start=False
            )
            if not notifications:
                self._caught_up = True
                return
            published = set()
            for n in notifications:
                if n.topic.endswith("Published"):
                    published.add(n.originator_id)
                elif n.topic.rsplit(".", 1)[-1] in LEASE_EVENTS:
                    self._note_lease(n)
            self._position = notifications[-1].id
            for workflow_id in published:
                self._reload(str(workflow_id), now)

    def _note_lease(self, notification: Any) -> None:
        event: Any = self.workflows.mapper.to_domain_event(notification)
        key = (str(notification.originator_id), str(event.node_id))
        if type(event).__name__ in ("NodeLocked", "LockRenewed"):
            self.leases[key] = float(event.expires_at)
        else:
            self.leases.pop(key, None)

    def _expire(self, now: float) -> None:
        for (workflow_id, node_id), ends in sorted(self.leases.items(), key=lambda kv: kv[1]):
            if ends > now:
                continue
            settled = False
            for _ in range(3):  # another writer may append in between: load and try again
                try:
                    workflow = self.workflows.load(UUID(workflow_id))
                    if workflow.expire_lock(node_id, ends, now):
                        self.workflows.save(workflow)
                    settled = True  # expired now, or renewed, released or broken meanwhile
                    break
                except IntegrityError:
                    continue
                except CommandError:  # the workflow is gone
                    settled = True
                    break
            if settled:
                self.leases.pop((workflow_id, node_id), None)
            else:
                # Editors kept winning the race: the lease stays, and the next tick tries
                # again, so a vanished holder's lock still ends with its LockExpired.
                log.info("lock %s/%s: expiry lost three races; trying again", workflow_id, node_id)

    def _reload(self, workflow_id: str, now: float) -> None:
        for key in [k for k in self.triggers if k[0] == workflow_id]:
            del self.triggers[key]
        workflow = self.workflows.load(UUID(workflow_id))
        try:
            pinned = self.service.pinned(workflow.workspace_id, workflow_id, None)
        except CommandError:
            return
        # Fires missed while no scheduler ran are caught up at start; a workflow published
        # later starts with its next fire.
        since = now if self._caught_up else now - self.catch_up_s
        for node_id, node in pinned.nodes.items():
            if node["type"] != "trigger.cron":
                continue
            config = node.get("config") or {}
            expression, zone = config.get("expression"), config.get("timezone") or "UTC"
            if not isinstance(expression, str) or not croniter.is_valid(expression):
                continue
            try:
                first = next_fire(expression, zone, since)
            except (ValueError, ZoneInfoNotFoundError) as exc:
                # Published before edits checked for it (`0 0 30 2 *`, a zone since removed):
                # this trigger never fires; every other one must.
                log.warning("cron %s/%s never fires: %s", workflow_id, node_id, exc)
                continue
            self.triggers[(workflow_id, node_id)] = CronTrigger(
                workflow_id, workflow.workspace_id, node_id, expression, zone, first
            )
