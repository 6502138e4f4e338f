"""Infrastructure failures: retry, give up after max_attempts, stale reports; the give-up log."""

from __future__ import annotations

import time

import pytest

from bbot.controller.lease import BuildState
from bbot.controller.store import FailOutcome, OperationRow, ResultOutcome, Store
from bbot.manifest.status import Status
from tests.store.builds import one_build, result


def lease(store: Store, build_id: int, session: str) -> None:
    store.issue(build_id, session, time.time() + 60, f"task for {session}")


def test_a_failure_with_attempts_left_queues_the_build_again(store: Store) -> None:
    build_id = one_build(store)
    lease(store, build_id, "s1")
    assert store.fail_attempt("s1", "disk full", agent="a1", max_attempts=3) is FailOutcome.RETRY

    build = store.get_build(build_id)
    assert build is not None
    assert (build.state, build.status, build.session, build.lease_deadline, build.attempt) == (
        BuildState.QUEUED, None, None, None, 1)
    assert build.reason == "retrying after an infrastructure failure: disk full"
    assert [b.id for b in store.queued_builds()] == [build_id]
    (attempt,) = store.attempts(build_id)
    assert (attempt.outcome, attempt.infrastructure, attempt.detail, attempt.agent) == (
        "failed", True, "disk full", "a1")
    assert attempt.ended_at is not None
    assert store.failed_agents(build_id) == ["a1"]
    assert store.operations(build_id) == []

    # The failed session is over: its late result and a second report are stale.
    assert store.record_result("s1", result()) is ResultOutcome.STALE
    assert store.fail_attempt("s1", "again", agent="a1", max_attempts=3) is FailOutcome.STALE

    lease(store, build_id, "s2")
    assert store.record_result("s2", result(), agent="a2") is ResultOutcome.ACCEPTED
    attempts = store.attempts(build_id)
    assert [(a.number, a.outcome, a.infrastructure) for a in attempts] == [
        (1, "failed", True), (2, "result", False)]
    assert store.failed_agents(build_id) == ["a1"]


def test_the_failure_of_attempt_max_attempts_gives_up_with_every_reason_logged(store: Store) -> None:
    build_id = one_build(store)
    lease(store, build_id, "s1")
    assert store.fail_attempt("s1", "disk full", agent="a1", max_attempts=3) is FailOutcome.RETRY
    lease(store, build_id, "s2")
    assert store.expire(build_id, "s2", "no result within the lease of 60 s")
    lease(store, build_id, "s3")
    assert store.fail_attempt("s3", "vm did not boot", agent="a2", max_attempts=3) is FailOutcome.GAVE_UP

    build = store.get_build(build_id)
    assert build is not None
    assert (build.state, build.status, build.lease_deadline) == (BuildState.BUILT, Status.ABNORMAL, None)
    assert build.finished_at is not None
    assert build.reason == "infrastructure failure: vm did not boot; gave up after 3 attempts"
    assert store.operations(build_id) == [OperationRow(
        name="bbot",
        status=Status.ABNORMAL,
        log="attempt 1 (agent a1, session s1): disk full\n"
            "attempt 2 (agent unknown, session s2): no result within the lease of 60 s\n"
            "attempt 3 (agent a2, session s3): vm did not boot\n"
            "gave up after 3 attempts\n",
    )]
    assert [(a.outcome, a.infrastructure) for a in store.attempts(build_id)] == [
        ("failed", True), ("expired", False), ("failed", True)]
    assert store.failed_agents(build_id) == ["a1", "a2"]
    assert store.unfinished_count([build.set_id]) == 0
    assert store.fail_attempt("s3", "late copy", agent="a2", max_attempts=3) is FailOutcome.STALE


@pytest.mark.parametrize("max_attempts, expected", [
    (1, [FailOutcome.GAVE_UP]),
    (2, [FailOutcome.RETRY, FailOutcome.GAVE_UP]),
    (3, [FailOutcome.RETRY, FailOutcome.RETRY, FailOutcome.GAVE_UP]),
])
def test_max_attempts_boundary(store: Store, max_attempts: int, expected: list[FailOutcome]) -> None:
    build_id = one_build(store)
    outcomes: list[FailOutcome] = []
    for number in range(1, max_attempts + 1):
        lease(store, build_id, f"s{number}")
        outcomes.append(store.fail_attempt(f"s{number}", f"broke {number}", agent="a", max_attempts=max_attempts))
    assert outcomes == expected
    build = store.get_build(build_id)
    assert build is not None and build.state is BuildState.BUILT and build.attempt == max_attempts
    (operation,) = store.operations(build_id)
    noun = "attempt" if max_attempts == 1 else "attempts"
    assert operation.log.splitlines()[-1] == f"gave up after {max_attempts} {noun}"
    assert operation.log.count("(agent a, session s") == max_attempts
    # Only one agent failed, however often.
    assert store.failed_agents(build_id) == ["a"]


def test_a_later_attempt_counts_against_a_smaller_max_attempts(store: Store) -> None:
    # The limit is the caller's (configuration may shrink it): attempt 3 with a limit of 2 gives up.
    build_id = one_build(store)
    for number in (1, 2):
        lease(store, build_id, f"s{number}")
        store.expire(build_id, f"s{number}", "timeout")
    lease(store, build_id, "s3")
    assert store.fail_attempt("s3", "oom", agent=None, max_attempts=2) is FailOutcome.GAVE_UP
    (operation,) = store.operations(build_id)
    assert "attempt 3 (agent unknown, session s3): oom\n" in operation.log
    assert store.failed_agents(build_id) == []  # no agent named: nothing to steer away from


def test_stale_failures_change_nothing_but_a_counter(store: Store) -> None:
    build_id = one_build(store)
    lease(store, build_id, "s1")
    store.expire(build_id, "s1", "timeout")
    lease(store, build_id, "s2")
    built = one_build(store, configuration="other")
    lease(store, built, "b1")
    store.record_result("b1", result())
    before = (store.get_build(build_id), store.attempts(build_id), store.get_build(built),
              store.attempts(built), store.operations(built))

    assert store.fail_attempt("nope", "x", agent="a", max_attempts=1) is FailOutcome.STALE
    assert store.fail_attempt("s1", "x", agent="a", max_attempts=1) is FailOutcome.STALE
    assert store.fail_attempt("b1", "x", agent="a", max_attempts=1) is FailOutcome.STALE

    after = (store.get_build(build_id), store.attempts(build_id), store.get_build(built),
             store.attempts(built), store.operations(built))
    assert after == before
    assert store.failed_agents(build_id) == []
    assert store.counters()["results_stale"] == 3


def test_max_attempts_below_one_is_refused(store: Store) -> None:
    build_id = one_build(store)
    lease(store, build_id, "s1")
    with pytest.raises(ValueError, match=r"max_attempts is 0; it must be 1 or more"):
        store.fail_attempt("s1", "x", agent="a", max_attempts=0)
    build = store.get_build(build_id)
    assert build is not None and build.state is BuildState.LEASED


def test_give_up_logs_every_attempt_then_the_detail(store: Store) -> None:
    build_id = one_build(store)
    lease(store, build_id, "s1")
    store.expire(build_id, "s1", "no result within the lease of 60 s")
    lease(store, build_id, "s2")
    store.fail_attempt("s2", "disk full", agent="a2", max_attempts=5)
    lease(store, build_id, "s3")
    store.give_up(build_id, "interrupted by agent a3; gave up after 3 attempt(s)")

    build = store.get_build(build_id)
    assert build is not None
    assert (build.state, build.status, build.reason) == (
        BuildState.BUILT, Status.ABNORMAL, "interrupted by agent a3; gave up after 3 attempt(s)")
    assert store.operations(build_id) == [OperationRow(
        name="bbot",
        status=Status.ABNORMAL,
        log="attempt 1 (agent unknown, session s1): no result within the lease of 60 s\n"
            "attempt 2 (agent a2, session s2): disk full\n"
            "attempt 3 (agent unknown, session s3): interrupted by agent a3; gave up after 3 attempt(s)\n"
            "interrupted by agent a3; gave up after 3 attempt(s)\n",
    )]
    assert store.attempts(build_id)[2].outcome == "given-up"


def test_give_up_on_a_build_never_issued_logs_nothing(store: Store) -> None:
    build_id = one_build(store)
    store.give_up(build_id, "no machine matches linux_debian_12*")
    assert store.operations(build_id) == []
    build = store.get_build(build_id)
    assert build is not None and build.reason == "no machine matches linux_debian_12*"


def test_give_up_from_queued_after_attempts_logs_them(store: Store) -> None:
    build_id = one_build(store)
    lease(store, build_id, "s1")
    store.fail_attempt("s1", "disk full", agent="a1", max_attempts=5)
    store.give_up(build_id, "no machine left that a1 does not serve")
    (operation,) = store.operations(build_id)
    assert operation.log == ("attempt 1 (agent a1, session s1): disk full\n"
                             "no machine left that a1 does not serve\n")
