from __future__ import annotations

import threading
import time
import zlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from bbot.controller.lease import BuildState, IllegalTransition
from bbot.controller.store import (
    SCHEMA_VERSION,
    BuildNotFound,
    NewBuildSet,
    ResultOutcome,
    Store,
)
from bbot.manifest.status import Status
from bbot.wire import BuildKey
from tests.store.builds import GIT_SET, new_build, one_build, result


def test_new_builds_are_queued_with_their_set_fields(store: Store) -> None:
    set_id = store.add_build_set(GIT_SET)
    ids = store.add_builds(set_id, [new_build("a"), new_build("b")])
    assert len(ids) == 2
    build = store.get_build(ids[0])
    assert build is not None
    assert build.state is BuildState.QUEUED
    assert build.status is None and build.attempt == 0 and build.session is None
    assert build.set_id == set_id
    assert (build.kind, build.source, build.ref, build.commit) == ("git", "hello", "main",
                                                                   "0123456789abcdef")
    assert build.author_email == "ann@example.org"
    assert build.warning_regex == [r"^warning:", r"\bwarning C\d+"]
    assert build.config_args == "config.cc.coptions=-O2 config.cxx.std=latest"
    assert build.key == BuildKey("libhello", "1.2.3+1", "x86_64-linux-gnu", "a", "default",
                                 "public", "0.17.0", tenant="")
    assert [b.id for b in store.set_builds(set_id)] == ids
    assert store.unfinished_count([set_id]) == 2
    assert store.unfinished_count([]) == 0


def test_unknown_set_kind_and_missing_set_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match=r"kind 'svn'.*submit, git"):
        store.add_build_set(NewBuildSet(**{**GIT_SET.__dict__, "kind": "svn"}))
    with pytest.raises(LookupError, match="no build set with id 999"):
        store.add_builds(999, [new_build()])


def test_issue_leases_and_a_second_issue_is_illegal(store: Store) -> None:
    build_id = one_build(store)
    deadline = time.time() + 60
    assert store.issue(build_id, "s1", deadline, "task: 1\n") == 1
    build = store.get_build(build_id)
    assert build is not None
    assert build.state is BuildState.LEASED
    assert (build.attempt, build.session, build.lease_deadline) == (1, "s1", deadline)
    assert build.issued_at is not None
    assert store.build_by_session("s1") == build
    assert store.task_text(build_id, 1) == "task: 1\n"
    with pytest.raises(IllegalTransition):
        store.issue(build_id, "s2", deadline, "task")
    with pytest.raises(BuildNotFound):
        store.issue(12345, "s3", deadline, "task")
    (attempt,) = store.attempts(build_id)
    assert (attempt.number, attempt.session, attempt.outcome) == (1, "s1", None)


def test_expire_only_the_current_session(store: Store) -> None:
    build_id = one_build(store)
    store.issue(build_id, "s1", time.time() - 1, "task")
    assert [b.id for b in store.expired_leases(time.time())] == [build_id]
    assert store.expired_leases(time.time() - 3600) == []
    assert store.expire(build_id, "not-current", "timeout") is False
    assert store.expire(build_id, "s1", "no result in 3h") is True
    assert store.expire(build_id, "s1", "again") is False
    build = store.get_build(build_id)
    assert build is not None
    assert build.state is BuildState.QUEUED and build.lease_deadline is None
    assert store.expired_leases(time.time()) == []
    store.issue(build_id, "s2", time.time() + 60, "task")
    attempts = store.attempts(build_id)
    assert [(a.number, a.session, a.outcome, a.detail) for a in attempts] == [
        (1, "s1", "expired", "no result in 3h"),
        (2, "s2", None, None),
    ]
    assert attempts[0].ended_at is not None


def test_accepted_result_is_stored_compressed(store: Store) -> None:
    build_id = one_build(store)
    store.issue(build_id, "s1", time.time() + 60, "task")
    outcome = store.record_result(
        "s1", result(Status.WARNING), agent="agent-1", machine_name="linux_debian_12",
        machine_summary="Debian 12", metrics={"build_seconds": 12.5, "ops": 2},
    )
    assert outcome is ResultOutcome.ACCEPTED
    build = store.get_build(build_id)
    assert build is not None
    assert build.state is BuildState.BUILT and build.status is Status.WARNING
    assert (build.agent, build.machine_name, build.machine_summary) == (
        "agent-1", "linux_debian_12", "Debian 12")
    assert build.finished_at is not None and build.lease_deadline is None
    ops = store.operations(build_id)
    assert [(o.name, o.status) for o in ops] == [("configure", Status.SUCCESS),
                                                 ("update", Status.WARNING)]
    assert ops[1].log == "compiling é ünïcode\n" * 50
    (attempt,) = store.attempts(build_id)
    assert attempt.outcome == "result" and attempt.agent == "agent-1"
    assert attempt.metrics == {"build_seconds": 12.5, "ops": 2.0}
    # The log is stored compressed, not as text.
    with store._engine.connect() as conn:  # the raw column, bypassing the API
        raw = conn.execute(sa.text(
            "select log from bbot_operations where build_id = :b and name = 'update'"),
            {"b": build_id}).scalar_one()
    assert bytes(raw) != ops[1].log.encode()
    assert zlib.decompress(bytes(raw)).decode() == ops[1].log
    assert store.unfinished_count([build.set_id]) == 0


def test_dropped_results_change_nothing_but_a_counter(store: Store) -> None:
    build_id = one_build(store)
    store.issue(build_id, "s1", time.time() + 60, "task")
    store.expire(build_id, "s1", "timeout")
    store.issue(build_id, "s2", time.time() + 60, "task")
    before = store.get_build(build_id)

    assert store.record_result("s1", result()) is ResultOutcome.STALE
    assert store.record_result("nope", result()) is ResultOutcome.UNKNOWN
    assert store.record_result("s2", result(name="libother")) is ResultOutcome.MISMATCH
    assert store.record_result("s2", result(version="9")) is ResultOutcome.MISMATCH
    assert store.get_build(build_id) == before
    assert store.operations(build_id) == []

    assert store.record_result("s2", result(Status.ERROR)) is ResultOutcome.ACCEPTED
    after = store.get_build(build_id)
    assert store.record_result("s2", result(Status.SUCCESS)) is ResultOutcome.DUPLICATE
    assert store.record_result("s1", result()) is ResultOutcome.STALE
    assert store.get_build(build_id) == after
    assert after is not None and after.status is Status.ERROR
    assert store.counters() == {
        "results_dropped_stale": 2,
        "results_dropped_unknown": 1,
        "results_dropped_mismatch": 2,
        "results_dropped_duplicate": 1,
    }


def test_give_up_ends_abnormal_from_queued_or_leased(store: Store) -> None:
    queued = one_build(store)
    store.give_up(queued, "no machine matches linux_debian_12*")
    build = store.get_build(queued)
    assert build is not None
    assert (build.state, build.status, build.reason) == (
        BuildState.BUILT, Status.ABNORMAL, "no machine matches linux_debian_12*")
    with pytest.raises(IllegalTransition):
        store.give_up(queued, "again")

    leased = one_build(store)
    store.issue(leased, "s1", time.time() + 60, "task")
    store.give_up(leased, "3 attempts without a result")
    assert store.attempts(leased)[0].outcome == "given-up"
    assert store.record_result("s1", result()) is ResultOutcome.STALE
    build = store.get_build(leased)
    assert build is not None and build.status is Status.ABNORMAL


def test_set_reason(store: Store) -> None:
    build_id = one_build(store)
    store.set_reason(build_id, "no agent offers linux_debian_12*")
    build = store.get_build(build_id)
    assert build is not None and build.reason == "no agent offers linux_debian_12*"
    store.set_reason(build_id, None)
    build = store.get_build(build_id)
    assert build is not None and build.reason is None
    with pytest.raises(BuildNotFound):
        store.set_reason(9999, "x")


def test_listing_filters_counts_and_pages(store: Store) -> None:
    ids = [one_build(store, configuration=c) for c in ("a", "b", "a", "b", "a")]
    other = one_build(store, NewBuildSet(**{**GIT_SET.__dict__, "package_name": "libother"}))
    store.issue(ids[0], "s0", time.time() + 60, "task")
    store.record_result("s0", result(Status.ERROR))
    store.issue(ids[1], "s1", time.time() + 60, "task")

    assert [b.id for b in store.list_builds()] == [other, *reversed(ids)]
    assert [b.id for b in store.queued_builds()] == [ids[2], ids[3], ids[4], other]
    assert [b.id for b in store.queued_builds(limit=2)] == [ids[2], ids[3]]
    assert [b.id for b in store.list_builds(package="libhello", configuration="a")] == [
        ids[4], ids[2], ids[0]]
    assert [b.id for b in store.list_builds(status="error")] == [ids[0]]
    assert [b.id for b in store.list_builds(state=BuildState.LEASED)] == [ids[1]]
    assert [b.id for b in store.list_builds(limit=2, offset=1)] == [ids[4], ids[3]]
    assert store.count_builds() == 6
    assert store.count_builds(package="libhello") == 5
    assert store.count_builds(state="queued") == 4
    assert store.count_builds(status=Status.ERROR) == 1
    build = store.get_build(ids[0])
    assert build is not None
    assert [b.id for b in store.list_builds(set_id=build.set_id)] == [ids[0]]
    with pytest.raises(ValueError, match=r"unknown status 'bad'.*skip, success, warning"):
        store.list_builds(status="bad")
    with pytest.raises(ValueError, match=r"unknown state 'done'.*queued, leased, built"):
        store.count_builds(state="done")


def test_find_by_key_and_previous_build(store: Store) -> None:
    first = one_build(store)
    other_branch = one_build(store, NewBuildSet(**{**GIT_SET.__dict__, "ref": "dev"}))
    other_config = one_build(store, configuration="windows-msvc")
    second = one_build(store)
    third = one_build(store)
    for number, build_id in enumerate([first, other_branch, other_config, second]):
        store.issue(build_id, f"s{number}", time.time() + 60, "task")
        store.record_result(f"s{number}", result())

    found = store.find_by_key(BuildKey("libhello", "1.2.3+1", "x86_64-linux-gnu", "linux-gcc",
                                       "default", "public", "0.17.0"))
    assert found is not None and found.id == third
    assert store.find_by_key(BuildKey("libhello", "9", "t", "c", "p", "n", "v")) is None

    current = store.get_build(third)
    assert current is not None
    previous = store.previous_build(current)
    assert previous is not None and previous.id == second
    before = store.previous_build(previous)
    assert before is not None and before.id == first
    assert store.previous_build(before) is None


def test_previous_build_matches_a_missing_ref(store: Store) -> None:
    submitted = NewBuildSet(kind="submit", source="submit", repository_url="https://x/y.git",
                            ref=None, commit=None, package_name="y", package_version="1",
                            submitter_email="sub@example.org")
    first = one_build(store, submitted)
    store.issue(first, "s1", time.time() + 60, "task")
    store.record_result("s1", result(name="y", version="1"))
    second = store.get_build(one_build(store, submitted))
    assert second is not None and second.submitter_email == "sub@example.org"
    previous = store.previous_build(second)
    assert previous is not None and previous.id == first


def test_counters(store: Store) -> None:
    assert store.counters() == {}
    store.bump("tasks_issued")
    store.bump("tasks_issued", 4)
    store.bump("results_accepted")
    assert store.counters() == {"tasks_issued": 5, "results_accepted": 1}


def test_one_result_wins_among_threads(store: Store) -> None:
    build_id = one_build(store)
    store.issue(build_id, "s1", time.time() + 60, "task")
    outcomes: list[ResultOutcome] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def deliver() -> None:
        try:
            start.wait(timeout=10)
            outcomes.append(store.record_result("s1", result()))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert sorted(o.value for o in outcomes) == ["accepted"] + ["duplicate"] * 5
    assert len(store.operations(build_id)) == 2


def test_threads_issue_different_builds(store: Store) -> None:
    set_id = store.add_build_set(GIT_SET)
    ids = store.add_builds(set_id, [new_build(f"c{i}") for i in range(8)])
    errors: list[BaseException] = []

    def lease(build_id: int) -> None:
        try:
            store.issue(build_id, f"s-{build_id}", time.time() + 60, "task")
            store.record_result(f"s-{build_id}", result())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=lease, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert store.count_builds(state="built", set_id=set_id) == 8


def test_reopening_keeps_data_and_schema_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bbot.sqlite'}"
    first = Store(url)
    build_id = one_build(first)
    first.close()
    second = Store(url)
    try:
        assert second.get_build(build_id) is not None
        with second._engine.connect() as conn:
            versions = conn.execute(sa.text("select version from bbot_schema_version")).all()
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        assert versions == [(SCHEMA_VERSION,)]
        assert mode == "wal"
    finally:
        second.close()


def test_in_memory_sqlite_works_across_threads() -> None:
    store = Store("sqlite://")
    try:
        build_id = one_build(store)
        found: list[object] = []
        thread = threading.Thread(target=lambda: found.append(store.get_build(build_id)))
        thread.start()
        thread.join(timeout=10)
        assert found and found[0] is not None
    finally:
        store.close()


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_bad_store_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"sqlite:///<path> or postgresql"):
        Store(url)
