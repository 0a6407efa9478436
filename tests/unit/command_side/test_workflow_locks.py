"""Node locks on the Workflow aggregate: leases recorded in events, LOCKED for other editors,
renewal by the holder's edits, release, break, expiry, and folding back to the same state."""

from __future__ import annotations

import time
from functools import reduce
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from command_side.errors import Locked, ValidationFailed
from command_side.workflow import commands as c
from command_side.workflow.aggregate import Workflow
from command_side.workflow.commands import Meta
from command_side.workflow.rebase import overlap

ADA = Meta(actor_id="ada", workspace_id="ws1", client_op_id=None)
BOB = Meta(actor_id="bob", workspace_id="ws1", client_op_id=None)


def graph() -> Workflow:
    w = Workflow.create(uuid4(), "w", "", ADA)
    for node_id in ("a", "b"):
        w.add_node("data.transform", node_id, {}, 0, 0, ADA, node_id=node_id)
    return w


def folded(w: Workflow) -> Workflow:
    events = w.collect_events()
    return reduce(lambda agg, e: e.mutate(agg), events, None)  # type: ignore[arg-type,return-value]


def test_a_locked_node_refuses_other_editors_naming_holder_and_expiry() -> None:
    w, now = graph(), time.time()
    expires = w.lock_node("a", 30, ADA, now)
    assert expires == pytest.approx(now + 30)
    for edit in (
        lambda: w.update_node("a", "renamed", None, BOB),
        lambda: w.move_node("a", 5, 5, BOB),
        lambda: w.remove_node("a", BOB),
        lambda: w.lock_node("a", None, BOB, now + 1),
    ):
        before = len(w.pending_events)
        with pytest.raises(Locked) as refused:
            edit()
        assert refused.value.holder == "ada" and refused.value.expires_at == expires
        assert refused.value.code == "LOCKED" and len(w.pending_events) == before
    w.update_node("b", "free", None, BOB)  # other nodes stay open
    w.move_node("a", 1, 1, ADA)  # the holder edits
    assert w.nodes["b"]["name"] == "free" and w.nodes["a"]["x"] == 1


def test_the_holders_edits_renew_the_lease_once_half_has_run() -> None:
    w = graph()
    now = time.time()
    w.lock_node("a", 10, ADA, now - 8)  # 2 s left of 10
    w.update_node("a", "x", None, ADA)
    kinds = [type(e).__name__ for e in w.pending_events]
    assert kinds[-2:] == ["LockRenewed", "NodeUpdated"]
    assert w.lock_of("a", now)["expires_at"] >= now + 9  # type: ignore[index]
    w.update_node("a", "y", None, ADA)  # most of the lease left: no renewal
    assert [type(e).__name__ for e in w.pending_events][-1] == "NodeUpdated"


def test_a_refused_move_by_the_holder_records_no_renewal() -> None:
    w = graph()
    w.lock_node("a", 10, ADA, time.time() - 8)  # due for a renewal at the holder's next edit
    before = len(w.pending_events)
    with pytest.raises(ValidationFailed):
        w.move_node("a", float("nan"), 1, ADA)
    assert len(w.pending_events) == before


def test_a_lease_that_ran_out_is_no_lock_and_expiry_is_recorded_once() -> None:
    w, now = graph(), 1000.0
    w.lock_node("a", 5, ADA, now)
    assert w.lock_of("a", now + 6) is None
    assert not w.expire_lock("a", now + 5, now + 4)  # not yet
    assert w.expire_lock("a", now + 5, now + 6)
    assert not w.expire_lock("a", now + 5, now + 7)  # once
    w.lock_node("a", 5, BOB, now + 8)
    assert not w.expire_lock("a", now + 5, now + 20)  # an old lease: Bob's is not touched
    assert w.lock_of("a", now + 9)["holder"] == "bob"  # type: ignore[index]


def test_release_break_and_removal() -> None:
    w, now = graph(), time.time()
    w.lock_node("a", 30, ADA, now)
    with pytest.raises(Locked):
        w.unlock_node("a", BOB, now)
    with pytest.raises(ValidationFailed):
        w.renew_lock("b", ADA, now)  # nobody holds b
    assert w.break_lock("a", BOB, now) == "ada"  # an admin's (the role is checked upstream)
    assert w.lock_of("a", now) is None
    w.lock_node("a", 30, BOB, now)
    w.unlock_node("a", BOB, now)
    w.lock_node("b", 30, ADA, now)
    w.remove_node("b", ADA)
    assert "b" not in w.locks
    with pytest.raises(ValidationFailed):
        w.lock_node("a", 0.5, ADA, now)  # ttl under a second


def test_lock_events_do_not_conflict_with_concurrent_edits_of_other_nodes() -> None:
    w = graph()
    w.collect_events()
    w.lock_node("a", 30, ADA, time.time())
    locked = w.collect_events()
    assert overlap(c.UpdateNode(workflow_id=w.id, node_id="b", name="n"), locked) == frozenset()
    assert overlap(c.MoveNode(workflow_id=w.id, node_id="a", x=1, y=1), locked) == frozenset()
    assert overlap(c.LockNode(workflow_id=w.id, node_id="a"), locked) == frozenset()


OPS = st.lists(
    st.tuples(
        st.sampled_from(["lock", "renew", "unlock", "break", "expire", "move"]),
        st.sampled_from(["a", "b"]),
        st.sampled_from([ADA, BOB]),
        st.integers(0, 40),  # seconds after the start
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(ops=OPS)
def test_any_sequence_keeps_one_holder_per_node_and_folds_back_the_same(
    ops: list[tuple[str, str, Meta, int]],
) -> None:
    w, start = graph(), 1000.0
    t = start
    for kind, node_id, who, dt in sorted(ops, key=lambda op: op[3]):
        t = start + dt
        before = len(w.pending_events)
        try:
            if kind == "lock":
                w.lock_node(node_id, 10, who, t)
            elif kind == "renew":
                w.renew_lock(node_id, who, t)
            elif kind == "unlock":
                w.unlock_node(node_id, who, t)
            elif kind == "break":
                w.break_lock(node_id, who, t)
            elif kind == "expire":
                lock: Any = w.locks.get(node_id)
                if lock:
                    w.expire_lock(node_id, lock["expires_at"], t)
            else:
                lock = w.lock_of(node_id, t)
                if lock is None or lock["holder"] == who.actor_id:
                    w._guard(node_id, who, t)  # what an edit at time t checks first
        except (Locked, ValidationFailed):
            assert len(w.pending_events) == before  # a refusal appends nothing
        held = w.lock_of(node_id, t)
        assert held is None or held["expires_at"] > t
    live = {n: dict(lock) for n, lock in w.locks.items()}
    assert folded(w).locks == live


def test_a_repeated_lock_request_answers_the_lease_it_got_the_first_time() -> None:
    w, now = graph(), time.time()
    once = Meta(actor_id="ada", workspace_id="ws1", client_op_id="lock-1")
    expires = w.lock_node("a", 30, once, now)
    version, remembered = w.op_results["lock-1"]
    assert (version, remembered) == (w.version, repr(expires))
    assert folded(w).op_results["lock-1"] == (version, repr(expires))
