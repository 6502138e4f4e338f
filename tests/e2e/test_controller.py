"""The controller's own promises: git sources, leases, once-per-session results, email."""

from __future__ import annotations

import mailbox
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import amqp.exceptions

from bbot import bus
from bbot.bus import names
from bbot.config import (
    AgentConfig,
    Config,
    EmailConfig,
    GitSourceConfig,
    MachineConfig,
    WebConfig,
    load_config,
)
from bbot.controller.lease import BuildState
from bbot.farm import Farm, start_farm
from bbot.manifest import MachineHeader, OperationResult, Result, ResultRequest, TaskRequest
from bbot.manifest.status import Status
from tests.conftest import git_repo


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def config_for(tmp_path: Path, unique: str, **changes: object):  # type: ignore[no-untyped-def]
    base = load_config(None, data_dir=tmp_path / "data")
    config = replace(
        base,
        web=WebConfig("127.0.0.1", 0),
        controller=replace(base.controller, name=f"c-{unique}", schedule_interval=0.05),
        agent=AgentConfig(name=f"agent-{unique}", heartbeat=0.5,
                          machines=(MachineConfig(f"p-{unique}", f"linux_{unique}-gcc", "local"),)),
        configurations=(replace(base.configurations[0], machine=f"linux_{unique}-*"),),
    )
    return replace(config, **changes)


GOOD = {"Makefile": "all:\n\t@echo built\ncheck:\n\t@echo tested\ninstall:\n\t@true\n"}
BAD = {"Makefile": "all:\n\t@echo 'error: it broke'; false\n"}


def test_git_source_builds_new_commits_and_mails_the_author_who_broke_it(tmp_path: Path, unique: str) -> None:
    repo = tmp_path / "libwatch"
    first = git_repo(repo, GOOD, author="Ann Author <ann@example.org>")
    config = config_for(
        tmp_path, unique,
        sources=(GitSourceConfig("libwatch", str(repo), ("main",), 0.2),),
        email=EmailConfig(sender="bbot@example.org", build_email=("farm@example.org",)),
    )
    farm = start_farm(config)
    store = farm.controller.store
    try:
        wait_until(lambda: any(b.state is BuildState.BUILT for b in store.list_builds(package="libwatch")),
                   60, "the first commit's build")
        (good,) = store.list_builds(package="libwatch")
        assert (good.commit, good.status, good.author_email) == (first, Status.SUCCESS, "ann@example.org")
        second = git_repo(repo, BAD, message="break it", author="Bob Breaker <bob@example.org>")
        wait_until(lambda: any(b.commit == second and b.state is BuildState.BUILT
                               for b in store.list_builds(package="libwatch")), 60, "the second commit's build")
        bad = next(b for b in store.list_builds(package="libwatch") if b.commit == second)
        assert bad.status is Status.ERROR
        ops = {o.name: o for o in store.operations(bad.id)}
        assert "error: it broke" in ops["update"].log
        # Mail goes out from the controller's mailer thread, just after the build is stored.
        box = mailbox.Maildir(config.data_dir / "outbox", create=False)
        wait_until(lambda: len(list(box)) == 2, 30, "the mail about both builds")
        mails = list(box)
        to_bob = [m for m in mails if "bob@example.org" in (m["To"] or "")]
        assert len(to_bob) == 1
        assert to_bob[0]["Subject"].startswith("build error: libwatch/")
        assert f"{farm.url}libwatch/{second[:12]}/log/" in to_bob[0].get_payload()
        # Ann's commit succeeded first: she is never mailed; the farm address hears of both changes.
        assert not [m for m in mails if "ann@example.org" in (m["To"] or "")]
        assert len([m for m in mails if "farm@example.org" in (m["To"] or "")]) == 2
    finally:
        farm.stop()


def announce(url: str, agent: str, machine: str) -> None:
    publisher = bus.Publisher(url)
    request = TaskRequest(agent=agent, toolchain_name="bbot", toolchain_version="0",
                          machines=[MachineHeader(id=f"id-{agent}", name=machine, summary="never answers")])
    publisher.publish(request.to_text(), exchange=bus.announce_exchange(), routing_key="", persistent=False)
    publisher.close()


def farm_with_silent_agent(config: Config, unique: str) -> Farm:
    """A farm without its own agent, whose only agent announces a machine and never answers."""
    farm = start_farm(config, with_agent=False)
    try:
        # Announced until heard, as an agent's heartbeat is: the controller's announcement
        # queue may not exist yet when the first one goes out.
        def heard() -> bool:
            announce(config.broker_url, f"silent-{unique}", f"linux_{unique}-gcc")
            time.sleep(0.1)
            return farm.controller.registry.live_agents() != []

        wait_until(heard, 10, "the announcement")
    except BaseException:
        farm.stop()
        raise
    return farm


def test_expired_leases_are_reissued_then_given_up(tmp_path: Path, unique: str) -> None:
    # An agent that announces a machine, takes nothing and never answers.
    config = config_for(tmp_path, unique)
    config = replace(config, controller=replace(config.controller, lease_timeout=0.5, max_attempts=3),
                     agent=replace(config.agent, heartbeat=60))
    git_repo(tmp_path / "p", GOOD)
    farm = farm_with_silent_agent(config, unique)
    try:
        set_id = farm.controller.submit(str(tmp_path / "p"))
        assert farm.controller.wait_for_sets([set_id], timeout=30)
        (build,) = farm.controller.store.set_builds(set_id)
        assert build.status is Status.ABNORMAL
        assert build.reason is not None and "gave up after 3 attempt(s)" in build.reason
        attempts = farm.controller.store.attempts(build.id)
        assert [a.number for a in attempts] == [1, 2, 3]
        assert len({a.session for a in attempts}) == 3  # a fresh session per attempt
    finally:
        farm.stop()


def test_a_result_is_accepted_once_per_session(tmp_path: Path, unique: str) -> None:
    config = config_for(tmp_path, unique)
    git_repo(tmp_path / "p", GOOD)
    farm = start_farm(config)
    store = farm.controller.store
    try:
        set_id = farm.controller.submit(str(tmp_path / "p"))
        assert farm.controller.wait_for_sets([set_id], timeout=60)
        (build,) = store.set_builds(set_id)
        assert build.status is Status.SUCCESS and build.session is not None
        # The same session again, claiming an error, and a message that is no manifest at all.
        forged = ResultRequest(session=build.session, result=Result(
            build.package_name, build.package_version, Status.ERROR,
            [OperationResult("update", Status.ERROR, "forged\n")]))
        publisher = bus.Publisher(config.broker_url)
        for body in (forged.to_text(), "this is not a manifest"):
            publisher.publish(body, exchange=bus.results_exchange(),
                              routing_key=names.results_queue(config.controller.name),
                              correlation_id=build.session)
        publisher.close()
        wait_until(lambda: store.counters().get("results_malformed", 0) == 1, 10, "the malformed result")
        wait_until(lambda: store.counters().get("results_dropped_duplicate", 0) == 1, 10, "the duplicate")
        after = store.get_build(build.id)
        assert after is not None and after.status is Status.SUCCESS
        assert [o.name for o in store.operations(build.id)] == ["configure", "update", "test", "install"]
    finally:
        farm.stop()


def test_only_a_few_tasks_wait_per_machine(tmp_path: Path, unique: str) -> None:
    # One machine, six builds: never more than two tasks out at once (one building, one queued).
    config = config_for(tmp_path, unique)
    git_repo(tmp_path / "p", {"Makefile": "all:\n\t@sleep 0.3\ncheck:\n\t@true\ninstall:\n\t@true\n"})
    farm = start_farm(config)
    store = farm.controller.store
    try:
        set_ids = [farm.controller.submit(str(tmp_path / "p")) for _ in range(6)]
        most = 0
        deadline = time.monotonic() + 120
        while store.unfinished_count(set_ids) and time.monotonic() < deadline:
            most = max(most, store.count_builds(state=BuildState.LEASED))
            time.sleep(0.02)
        assert store.unfinished_count(set_ids) == 0
        assert most == 2
        assert all(b.attempt == 1 for s in set_ids for b in store.set_builds(s))
    finally:
        farm.stop()


def test_embedded_restart_reissues_the_tasks_that_were_out(tmp_path: Path, unique: str) -> None:
    config = config_for(tmp_path, unique)
    config = replace(config, agent=replace(config.agent, heartbeat=60))
    git_repo(tmp_path / "p", GOOD)
    first = farm_with_silent_agent(config, unique)
    try:
        set_id = first.controller.submit(str(tmp_path / "p"))
        wait_until(lambda: first.controller.store.count_builds(state=BuildState.LEASED) == 1, 10, "the lease")
    finally:
        first.stop()
    # The process "dies" with the task out; a new farm on the same data directory builds it.
    second = start_farm(config)
    try:
        assert second.controller.wait_for_sets([set_id], timeout=60)
        (build,) = second.controller.store.set_builds(set_id)
        assert build.status is Status.SUCCESS
        attempts = second.controller.store.attempts(build.id)
        assert [a.outcome for a in attempts] == ["expired", "result"]
        assert attempts[0].detail == "the in-memory broker did not survive a restart"
    finally:
        second.stop()


def test_a_task_redelivered_too_often_is_dead_lettered_and_counts_as_a_failed_attempt(
        tmp_path: Path, unique: str, rabbitmq: str) -> None:
    # On RabbitMQ: a "consumer" that takes the task and hands it back every time, as an agent
    # that crashes before its ack would. The quorum queue gives up after DELIVERY_LIMIT returns.
    config = config_for(tmp_path, unique, broker_url=rabbitmq)
    config = replace(config, controller=replace(config.controller, lease_timeout=300, max_attempts=2),
                     agent=replace(config.agent, heartbeat=60))
    git_repo(tmp_path / "p", GOOD)
    farm = farm_with_silent_agent(config, unique)
    store = farm.controller.store
    returned = 0
    try:
        set_id = farm.controller.submit(str(tmp_path / "p"))
        (build,) = store.set_builds(set_id)
        queue = bus.task_queue(f"linux_{unique}-gcc")
        # The controller declares the task queue with its first task (and a quorum queue's
        # process starts just after): wait until the task is there.
        def waiting() -> int:
            with bus.connect(rabbitmq) as conn, conn.channel() as channel:
                try:
                    return int(channel.queue_declare(queue=queue.name, passive=True)[1])
                except amqp.exceptions.NotFound:
                    return 0

        wait_until(lambda: waiting() == 1, 30, "the task in its queue")
        with bus.connect(rabbitmq) as conn, conn.channel() as channel:
            deadline = time.monotonic() + 60
            while store.attempts(build.id)[0].outcome is None:
                assert time.monotonic() < deadline, "the task was never dead-lettered"
                message = queue(channel).get()
                if message is None:
                    time.sleep(0.05)
                    continue
                message.requeue()
                returned += 1
        assert returned == names.DELIVERY_LIMIT + 1
        first = store.attempts(build.id)[0]
        assert (first.outcome, first.infrastructure) == ("failed", True)
        assert first.detail is not None and "dead-lettered" in first.detail
        # Attempt 2 goes out as usual (and, with nobody answering, stays out).
        wait_until(lambda: len(store.attempts(build.id)) == 2, 10, "the second attempt")
    finally:
        farm.stop()
