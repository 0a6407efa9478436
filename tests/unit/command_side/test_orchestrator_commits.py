"""When the orchestrator commits its offsets: throttled while records flow, and again after a
commit the broker refused, even when nothing more arrives."""

from __future__ import annotations

from kafka.errors import KafkaError

from command_side.execution.orchestrator import Commits


def test_commits_are_throttled_and_a_refused_one_is_made_again_in_a_quiet_spell() -> None:
    commits = Commits(0.2)
    assert not commits.due(0.0)  # nothing handled yet
    commits.handled()
    assert commits.due(0.0)
    commits.sent(0.0)
    commits.handled()
    assert not commits.due(0.1) and commits.due(0.2)  # at most every 0.2 s
    commits.sent(0.2)
    assert not commits.due(5.0)  # a quiet spell, all committed
    commits.answered({}, KafkaError("the coordinator moved"))  # ...until the broker refuses
    assert commits.due(5.0) and commits.pending
    commits.sent(5.0)
    commits.answered({}, {})  # accepted
    assert not commits.due(9.0) and not commits.pending
