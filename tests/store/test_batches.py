"""issue_many and record_results: one transaction each, the same outcomes as the single calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from bbot.controller.lease import BuildState
from bbot.controller.store import IssueItem, ResultItem, ResultOutcome, Store
from bbot.manifest import Result
from bbot.manifest.status import Status
from tests.store.builds import GIT_SET, new_build, result


def _builds(store: Store, count: int) -> list[int]:
    set_id = store.add_build_set(GIT_SET)
    return store.add_builds(set_id, [new_build(f"c{i}") for i in range(count)])


def _picture(store: Store, build_id: int) -> tuple[Any, ...]:
    """What a build looks like, without ids, times and session names (which differ by design)."""
    build = store.get_build(build_id)
    assert build is not None
    return (
        build.configuration, build.state, build.status, build.attempt, build.agent, build.machine_name,
        build.machine_summary, build.reason, build.lease_deadline is None, build.finished_at is None,
        [(o.name, o.status, o.log) for o in store.operations(build_id)],
        [(a.number, a.outcome, a.agent, a.machine, a.detail, a.metrics, a.infrastructure,
          a.ended_at is None) for a in store.attempts(build_id)],
    )


def _scenario(store: Store, prefix: str) -> tuple[list[int], list[ResultItem]]:
    """Five leased builds and results for them of every kind, sessions named after ``prefix``."""
    ids = _builds(store, 5)
    deadline = time.time() + 60
    for number, build_id in enumerate(ids):
        store.issue(build_id, f"{prefix}{number}.1", deadline, "task")
    store.expire(ids[1], f"{prefix}1.1", "timeout")
    store.issue(ids[1], f"{prefix}1.2", deadline, "task")
    empty = Result(name="libhello", version="1.2.3+1", status=Status.SUCCESS, results=[])
    items = [
        ResultItem(f"{prefix}0.1", result(), agent="a0", machine_name="m0", machine_summary="M 0",
                   metrics={"build_seconds": 1.5}),
        ResultItem(f"{prefix}1.1", result()),  # stale: attempt 2 is out
        ResultItem(f"{prefix}2.1", result(Status.WARNING), agent="a2"),
        ResultItem(f"{prefix}nope", result()),  # unknown
        ResultItem(f"{prefix}1.2", result(Status.ERROR), agent="a1", metrics={"ops": 2}),
        ResultItem(f"{prefix}2.1", result(Status.SUCCESS), agent="a2"),  # duplicate in the same batch
        ResultItem(f"{prefix}3.1", result(name="libother")),  # mismatch
        ResultItem(f"{prefix}4.1", empty, agent="a4"),
        ResultItem(f"{prefix}1.1", result()),  # stale: the build is built now
    ]
    return ids, items


def _counters_delta(store: Store, act: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    before = store.counters()
    value = act()
    after = store.counters()
    return value, {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def test_a_batch_of_results_equals_the_same_results_one_by_one(store: Store) -> None:
    single_ids, single_items = _scenario(store, "x")
    batch_ids, batch_items = _scenario(store, "y")

    single_outcomes, single_counts = _counters_delta(store, lambda: [
        store.record_result(i.session, i.result, agent=i.agent, machine_name=i.machine_name,
                            machine_summary=i.machine_summary, metrics=i.metrics)
        for i in single_items])
    batch_outcomes, batch_counts = _counters_delta(store, lambda: store.record_results(batch_items))

    assert batch_outcomes == single_outcomes == [
        ResultOutcome.ACCEPTED, ResultOutcome.STALE, ResultOutcome.ACCEPTED, ResultOutcome.UNKNOWN,
        ResultOutcome.ACCEPTED, ResultOutcome.DUPLICATE, ResultOutcome.MISMATCH, ResultOutcome.ACCEPTED,
        ResultOutcome.STALE,
    ]
    assert batch_counts == single_counts == {
        "results_dropped_stale": 2, "results_dropped_unknown": 1, "results_dropped_duplicate": 1,
        "results_dropped_mismatch": 1,
    }
    assert [_picture(store, b) for b in batch_ids] == [_picture(store, b) for b in single_ids]
    # And what the batch stored is what was sent.
    picture = _picture(store, batch_ids[2])
    assert picture[1:4] == (BuildState.BUILT, Status.WARNING, 1)
    assert [op[:2] for op in picture[10]] == [("configure", Status.SUCCESS), ("update", Status.WARNING)]
    assert _picture(store, batch_ids[3])[1] is BuildState.LEASED  # the mismatch changed nothing
    assert store.operations(batch_ids[4]) == []


def test_empty_batches_do_nothing(store: Store) -> None:
    assert store.record_results([]) == []
    assert store.issue_many([]) == []
    assert store.counters() == {}


def test_issue_many_leases_the_queued_builds_and_skips_the_others(store: Store) -> None:
    ids = _builds(store, 5)
    deadline = time.time() + 60
    store.issue(ids[1], "earlier", deadline, "task")  # leased already
    store.give_up(ids[3], "no machine")  # built already
    items = [IssueItem(build_id, f"s{build_id}", deadline, f"task {build_id}") for build_id in ids]
    items.insert(2, IssueItem(ids[0], "s-again", deadline, "task"))  # came earlier in this batch
    items.append(IssueItem(999_999, "s-missing", deadline, "task"))

    assert store.issue_many(items) == [ids[0], ids[2], ids[4]]

    for build_id in (ids[0], ids[2], ids[4]):
        build = store.get_build(build_id)
        assert build is not None
        assert (build.state, build.attempt, build.session, build.lease_deadline) == (
            BuildState.LEASED, 1, f"s{build_id}", deadline)
        assert build.issued_at is not None
        assert store.task_text(build_id, 1) == f"task {build_id}"
        (attempt,) = store.attempts(build_id)
        assert (attempt.session, attempt.outcome, attempt.infrastructure) == (f"s{build_id}", None, False)
    leased = store.get_build(ids[1])
    assert leased is not None and leased.session == "earlier"
    assert store.build_by_session("s-again") is None and store.build_by_session("s-missing") is None


def test_issue_many_equals_issue_one_by_one(store: Store) -> None:
    singles, batch = _builds(store, 3), _builds(store, 3)
    deadline = time.time() + 60
    for build_id in (singles[0], batch[0]):  # an attempt before: the next one is number 2
        store.issue(build_id, f"first-{build_id}", deadline, "task")
        store.expire(build_id, f"first-{build_id}", "timeout")
    for build_id in singles:
        store.issue(build_id, f"s{build_id}", deadline, "task")
    store.issue_many([IssueItem(build_id, f"s{build_id}", deadline, "task") for build_id in batch])
    assert [_picture(store, b) for b in batch] == [_picture(store, b) for b in singles]
    assert [_picture(store, b)[3] for b in batch] == [2, 1, 1]  # attempt numbers


def _run_together(jobs: list[Callable[[], Any]]) -> list[Any]:
    start = threading.Barrier(len(jobs))
    answers: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait(timeout=10)
            answers[index] = jobs[index]()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    return answers


def test_concurrent_batches_accept_each_result_once(store: Store) -> None:
    ids = _builds(store, 30)
    store.issue_many([IssueItem(b, f"s{b}", time.time() + 60, "task") for b in ids])
    items = [ResultItem(f"s{b}", result(), agent="a") for b in ids]
    # Opposite orders: on PostgreSQL the row locks must still be taken without deadlock.
    orders = [items, items[::-1], items[10:] + items[:10]]
    answers = _run_together([lambda order=order: store.record_results(order) for order in orders])
    outcomes = [o for answer in answers for o in answer]
    assert outcomes.count(ResultOutcome.ACCEPTED) == 30
    assert outcomes.count(ResultOutcome.DUPLICATE) == 60
    assert store.count_builds(state="built") == 30
    assert all(len(store.operations(b)) == 2 for b in ids)


def test_concurrent_issue_many_issues_each_build_once(store: Store) -> None:
    ids = _builds(store, 30)
    deadline = time.time() + 60
    answers = _run_together([
        lambda: store.issue_many([IssueItem(b, f"a{b}", deadline, "task") for b in ids]),
        lambda: store.issue_many([IssueItem(b, f"b{b}", deadline, "task") for b in reversed(ids)]),
    ])
    first, second = answers
    assert sorted(first + second) == ids
    assert all(len(store.attempts(b)) == 1 for b in ids)
