"""When a cron trigger fires: at the wall-clock times its expression names, in its time zone,
across the clocks going back (a repeated time fires once, at its first occurrence) and going
forward (a skipped time fires once, as far past the gap as it was into it)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from itertools import pairwise
from uuid import uuid4
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from command_side.execution.aggregate import Execution
from command_side.execution.scheduler import Scheduler, next_fire
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import Meta

#: Each zone's clock changes in 2026, as the new offset reads them. Lord Howe moves by half an
#: hour, Santiago at midnight, Troll by two hours; UTC never does (an ordinary day, for contrast).
CHANGES = {
    "America/New_York": ["2026-03-08T03:00-04:00", "2026-11-01T01:00-05:00"],
    "Europe/Berlin": ["2026-03-29T03:00+02:00", "2026-10-25T02:00+01:00"],
    "Australia/Sydney": ["2026-04-05T02:00+10:00", "2026-10-04T03:00+11:00"],
    "Australia/Lord_Howe": ["2026-04-05T01:30+10:30", "2026-10-04T02:30+11:00"],
    "America/Santiago": ["2026-04-04T23:00-04:00", "2026-09-06T01:00-03:00"],
    "Antarctica/Troll": ["2026-03-29T03:00+02:00", "2026-10-25T01:00+00:00"],
    "UTC": ["2026-03-08T03:00+00:00"],
}


def chain(expression: str, zone: str, start: datetime, count: int) -> list[str]:
    """`count` fires after `start`, each from the one before (as the scheduler does), as the
    zone's clock shows them."""
    fires, at = [], start.timestamp()
    for _ in range(count):
        at = next_fire(expression, zone, at)
        fires.append(datetime.fromtimestamp(at, ZoneInfo(zone)).isoformat(timespec="minutes"))
    return fires


@pytest.mark.parametrize(
    ("zone", "day_before", "fires"),
    [
        (
            "America/New_York",
            date(2026, 10, 31),
            ["2026-11-01T01:30-04:00", "2026-11-02T01:30-05:00", "2026-11-03T01:30-05:00"],
        ),
        (
            "Europe/Berlin",
            date(2026, 10, 24),
            ["2026-10-25T01:30+02:00", "2026-10-26T01:30+01:00", "2026-10-27T01:30+01:00"],
        ),
    ],
)
def test_a_daily_job_keeps_its_wall_clock_time_after_the_clocks_go_back(
    zone: str, day_before: date, fires: list[str]
) -> None:
    noon = datetime.combine(day_before, time(12), ZoneInfo(zone))
    assert chain("30 1 * * *", zone, noon, 3) == fires


def test_a_daily_job_keeps_its_wall_clock_time_after_the_clocks_go_forward() -> None:
    noon = datetime(2026, 3, 7, 12, tzinfo=ZoneInfo("America/New_York"))
    assert chain("30 1 * * *", "America/New_York", noon, 3) == [
        "2026-03-08T01:30-05:00",
        "2026-03-09T01:30-04:00",
        "2026-03-10T01:30-04:00",
    ]


def test_a_time_the_clocks_repeat_fires_at_its_first_occurrence_only() -> None:
    midnight = datetime(2026, 11, 1, 0, 0, tzinfo=ZoneInfo("America/New_York"))
    assert chain("30 1 * * *", "America/New_York", midnight, 2) == [
        "2026-11-01T01:30-04:00",
        "2026-11-02T01:30-05:00",
    ]
    assert chain("0 * * * *", "America/New_York", midnight, 3) == [
        "2026-11-01T01:00-04:00",
        "2026-11-01T02:00-05:00",  # 01:00 again, an hour later, does not fire
        "2026-11-01T03:00-05:00",
    ]


def test_a_time_just_after_the_clocks_go_back_fires_once_that_day() -> None:
    noon = datetime(2026, 10, 31, 12, tzinfo=ZoneInfo("America/New_York"))
    assert chain("30 2 * * *", "America/New_York", noon, 2) == [
        "2026-11-01T02:30-05:00",
        "2026-11-02T02:30-05:00",
    ]


def test_a_scheduler_started_in_the_repeated_hour_does_not_fire_its_times_again() -> None:
    second_pass = datetime(2026, 11, 1, 1, 10, fold=1, tzinfo=ZoneInfo("America/New_York"))
    assert chain("*/15 * * * *", "America/New_York", second_pass, 2) == [
        "2026-11-01T02:00-05:00",
        "2026-11-01T02:15-05:00",
    ]
    assert chain("30 1 * * *", "America/New_York", second_pass, 1) == ["2026-11-02T01:30-05:00"]


def test_a_time_the_clocks_skip_fires_once_as_far_past_the_gap_as_it_was_into_it() -> None:
    noon = datetime(2026, 3, 7, 12, tzinfo=ZoneInfo("America/New_York"))
    assert chain("30 2 * * *", "America/New_York", noon, 2) == [
        "2026-03-08T03:30-04:00",
        "2026-03-09T02:30-04:00",
    ]
    one_am = datetime(2026, 3, 8, 1, tzinfo=ZoneInfo("America/New_York"))
    assert chain("0 * * * *", "America/New_York", one_am, 2) == [
        "2026-03-08T03:00-04:00",  # 02:00, skipped, and 03:00: one fire
        "2026-03-08T04:00-04:00",
    ]


def test_a_skipped_time_still_fires_when_a_real_time_comes_before_its_place() -> None:
    """Lord Howe's clocks jump from 02:00 to 02:30: 02:15 fires at 02:45, after 02:40."""
    one_am = datetime(2026, 10, 4, 1, tzinfo=ZoneInfo("Australia/Lord_Howe"))
    assert chain("15,40 * * * *", "Australia/Lord_Howe", one_am, 4) == [
        "2026-10-04T01:15+10:30",
        "2026-10-04T01:40+10:30",
        "2026-10-04T02:40+11:00",
        "2026-10-04T02:45+11:00",
    ]


def test_the_last_date_an_expression_names_fires_even_if_skipped_and_then_none() -> None:
    zone = ZoneInfo("America/New_York")
    (last,) = chain("0 2 8 3 * 0 2026", "America/New_York", datetime(2026, 3, 1, tzinfo=zone), 1)
    assert last == "2026-03-08T03:00-04:00"
    with pytest.raises(ValueError):
        next_fire("0 2 8 3 * 0 2026", "America/New_York", datetime.fromisoformat(last).timestamp())


def test_the_scheduler_catches_up_daily_fires_across_the_clocks_going_back() -> None:
    zone = ZoneInfo("America/New_York")
    in_memory = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    scheduler = Scheduler(in_memory, catch_up_s=3 * 86400)
    meta = Meta(actor_id="u1", workspace_id="ws1", client_op_id=None)
    workflow = Workflow.create(uuid4(), "daily", "", meta)
    config = {"expression": "30 1 * * *", "timezone": "America/New_York"}
    workflow.add_node("trigger.cron", "cron", config, 0, 0, meta, node_id="cron")
    workflow.add_node("data.transform", "t", {"fields": {}}, 0, 0, meta, node_id="t")
    workflow.connect("cron", "t", None, None, meta)
    workflow.publish("", meta)
    scheduler.workflows.save(workflow)

    started = scheduler.tick(datetime(2026, 11, 3, 12, tzinfo=zone).timestamp())
    fired = [scheduler.executions.get(Execution, i).trigger["at"] for i in started]
    assert [datetime.fromtimestamp(at, zone).isoformat(timespec="minutes") for at in fired] == [
        "2026-11-01T01:30-04:00",
        "2026-11-02T01:30-05:00",
        "2026-11-03T01:30-05:00",
    ]


@st.composite
def schedules(draw: st.DrawFn) -> tuple[list[int], list[int], str, datetime]:
    """Minutes and hours (one, or every hour) of a cron expression, and a start near a clock
    change of the zone."""
    minutes = sorted(draw(st.sets(st.integers(0, 59), min_size=1, max_size=2)))
    hours = draw(st.one_of(st.integers(0, 23).map(lambda hour: [hour]), st.just(list(range(24)))))
    zone = draw(st.sampled_from(sorted(CHANGES)))
    change = datetime.fromisoformat(draw(st.sampled_from(CHANGES[zone])))
    start = change + timedelta(seconds=draw(st.integers(-30 * 3600, 6 * 3600)))
    return minutes, hours, zone, start


def expression(minutes: list[int], hours: list[int]) -> str:
    hour = "*" if len(hours) == 24 else ",".join(map(str, hours))
    return f"{','.join(map(str, minutes))} {hour} * * *"


@given(schedules())
def test_fires_are_the_named_wall_times_in_order_each_once(
    schedule: tuple[list[int], list[int], str, datetime],
) -> None:
    """Every wall time the expression names fires where the zone places it (the first of a
    repeated time, a skipped time that far past the gap), in order, none twice or missed."""
    minutes, hours, zone, start = schedule
    count = 30 if len(hours) == 24 else 3
    local = start.astimezone(ZoneInfo(zone)).date()
    places = {
        datetime.combine(local + timedelta(days=day), time(hour, minute), ZoneInfo(zone))
        for day in range(-1, 5)
        for hour in hours
        for minute in minutes
    }
    expected = sorted({p.timestamp() for p in places if p.timestamp() > start.timestamp()})
    fires, at = [], start.timestamp()
    for _ in range(count):
        at = next_fire(expression(minutes, hours), zone, at)
        fires.append(at)
    assert fires == expected[:count]


@given(schedules())
def test_a_daily_job_fires_every_day_at_its_wall_clock_time(
    schedule: tuple[list[int], list[int], str, datetime],
) -> None:
    minutes, hours, zone, start = schedule
    minute, hour, tz = minutes[0], hours[0], ZoneInfo(zone)
    fires, at = [], start.timestamp()
    for _ in range(4):
        at = next_fire(f"{minute} {hour} * * *", zone, at)
        fires.append(datetime.fromtimestamp(at, tz))
    assert all(a.timestamp() < b.timestamp() for a, b in pairwise(fires))
    assert [(b.date() - a.date()).days for a, b in pairwise(fires)] == [1, 1, 1]
    for fire in fires:
        named = datetime.combine(fire.date(), time(hour, minute), tz)
        shown = datetime.fromtimestamp(named.timestamp(), tz)
        if (shown.hour, shown.minute) == (hour, minute):
            assert (fire.hour, fire.minute) == (hour, minute)
        else:  # the clocks skipped it that day: it fires that far past the gap
            assert fire.timestamp() == named.timestamp()
