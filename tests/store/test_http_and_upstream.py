"""The store's parts for brep's HTTP interface, on SQLite and PostgreSQL: hand-overs to HTTP
agents, tasks taken from an upper controller, forced rebuilds and their rounds of attempts."""

from __future__ import annotations

import time

import pytest

from bbot.controller.lease import BuildState
from bbot.controller.store import (
    FailOutcome,
    ForceOutcome,
    HttpLease,
    NewBuildSet,
    ResultOutcome,
    Store,
    UpstreamTask,
)
from bbot.manifest.status import Status
from tests.store.builds import new_build, one_build, result


def lease(session: str, agent: str = "remote", challenge: str | None = "c" * 64) -> HttpLease:
    return HttpLease(session=session, agent=agent, reply_to="bbot.results.main", machine_name="m",
                     machine_summary="a machine", fingerprint="f" * 64, challenge=challenge,
                     handed_at=time.time())


def test_a_hand_over_renews_the_current_lease_only(store: Store) -> None:
    build_id = one_build(store)
    store.issue(build_id, "s1", time.time() + 10, "task")
    deadline = time.time() + 10_800
    assert store.hand_over(lease("s1"), own=True, deadline=deadline)
    build = store.get_build(build_id)
    assert build is not None and build.agent == "remote" and build.lease_deadline == pytest.approx(deadline)
    assert store.attempts(build_id)[0].agent == "remote"
    found = store.http_lease("s1")
    assert found is not None
    assert (found.agent, found.reply_to, found.machine_name, found.fingerprint, found.challenge) == (
        "remote", "bbot.results.main", "m", "f" * 64, "c" * 64)
    # A session that is no longer current (expired and issued again) is not handed over.
    assert store.expire(build_id, "s1", "lease ran out")
    store.issue(build_id, "s2", time.time() + 10, "task")
    assert not store.hand_over(lease("s1", agent="late"), own=True, deadline=deadline)
    assert store.get_build(build_id).agent != "late"  # type: ignore[union-attr]
    # Unknown sessions neither.
    assert not store.hand_over(lease("nope"), own=True, deadline=deadline)
    assert store.http_lease("nope") is None


def test_the_same_task_handed_out_twice_keeps_the_later_hand_over(store: Store) -> None:
    build_id = one_build(store)
    store.issue(build_id, "s1", time.time() + 10, "task")
    assert store.hand_over(lease("s1", agent="first", challenge="a" * 64), own=True, deadline=time.time())
    assert store.hand_over(lease("s1", agent="second", challenge="b" * 64), own=True, deadline=time.time())
    found = store.http_lease("s1")
    assert found is not None and (found.agent, found.challenge) == ("second", "b" * 64)


def test_another_controllers_task_is_recorded_as_it_is(store: Store) -> None:
    assert store.hand_over(lease("/other/1/t/c/p/n/v/5"), own=False, deadline=time.time())
    assert store.http_lease("/other/1/t/c/p/n/v/5") is not None
    assert store.prune_http_leases(time.time() + 1) == 1
    assert store.http_lease("/other/1/t/c/p/n/v/5") is None


UPSTREAM_SET = NewBuildSet(kind="upstream", source="https://ci.example.org/", repository_url="https://git/x",
                           ref=None, commit="abc", package_name="libhello", package_version="1.2.3+1")


def upstream_task(session: str = "/libhello/1.2.3+1/t/c/default/public/0.17.0/7") -> UpstreamTask:
    return UpstreamTask(url="https://ci.example.org/", session=session,
                        result_url="https://ci.example.org/?build-result", task_text=": 1\nname: libhello\n",
                        challenge="c" * 64, agent_checksum="a1")


def test_a_task_from_above_is_one_build_and_its_result_goes_up_once(store: Store) -> None:
    build_id, created = store.add_upstream_build(upstream_task(), UPSTREAM_SET, new_build())
    assert created
    # Handed out again by the upper controller: the same build.
    assert store.add_upstream_build(upstream_task(), UPSTREAM_SET, new_build()) == (build_id, False)
    assert store.upstream_task_texts([build_id, build_id + 1000]) == {build_id: ": 1\nname: libhello\n"}
    assert store.upstream_open_count() == 1
    assert store.upstream_results() == []  # not built yet
    store.issue(build_id, "local-1", time.time() + 10, "task")
    assert store.record_result("local-1", result(Status.WARNING)) is ResultOutcome.ACCEPTED
    (done,) = store.upstream_results()
    assert (done.build_id, done.status, done.task) == (build_id, Status.WARNING, upstream_task())
    assert [op.name for op in done.operations] == ["configure", "update"]
    assert (done.worker_checksum, done.dependency_checksum) == ("w1", "d1")
    assert store.upstream_open_count() == 0
    store.mark_upstream_posted(build_id, "posted")
    assert store.upstream_results() == []
    with pytest.raises(ValueError, match="kind"):
        store.add_upstream_build(upstream_task("/x/1/t/c/p/n/v/8"), replace_kind(UPSTREAM_SET), new_build())


def replace_kind(new_set: NewBuildSet) -> NewBuildSet:
    from dataclasses import replace

    return replace(new_set, kind="git")


def test_a_forced_rebuild_starts_a_new_round_of_attempts(store: Store) -> None:
    build_id = one_build(store)
    assert store.force(build_id, "why not") is ForceOutcome.QUEUED  # nothing to rebuild yet
    for number in (1, 2):
        store.issue(build_id, f"s{number}", time.time() + 10, "task")
        outcome = store.fail_attempt(f"s{number}", "machine died", agent="a", max_attempts=2)
    assert outcome is FailOutcome.GAVE_UP
    built = store.get_build(build_id)
    assert built is not None and (built.state, built.status, built.round_attempts) == (
        BuildState.BUILT, Status.ABNORMAL, 2)
    assert store.force(build_id, "the machine is fixed") is ForceOutcome.FORCED
    forced = store.get_build(build_id)
    assert forced is not None
    assert (forced.state, forced.forced, forced.first_attempt) == (BuildState.QUEUED, True, 3)
    assert forced.reason == "forced rebuild: the machine is fixed"
    # Two more attempts are allowed in the new round: the first failure retries.
    store.issue(build_id, "s3", time.time() + 10, "task")
    assert store.fail_attempt("s3", "machine died again", agent="a", max_attempts=2) is FailOutcome.RETRY
    # Forcing while building ends the running attempt: its late result is stale.
    store.issue(build_id, "s4", time.time() + 10, "task")
    assert store.force(build_id, "again") is ForceOutcome.FORCED
    assert store.record_result("s4", result()) is ResultOutcome.STALE
    assert store.attempts(build_id)[-1].detail == "forced rebuild: again"
