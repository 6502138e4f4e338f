"""Nothing is lost, nothing is doubled: real processes on a real broker, while parts die.

Each test runs ``bbot controller`` and ``bbot agent`` as separate processes
(bbot.devfarm), kills something at a chosen moment, and then reads the
controller's store: every build built exactly once (one accepted result), and
no build left behind. Recovery times are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kombu import Connection

from bbot.bus import names
from bbot.devfarm import DevFarm
from tests.conftest import git_repo

SLOW_MAKEFILE = "all:\n\tsleep {seconds}\ncheck:\n\t@true\ninstall:\n\t@true\n"
# Kills its whole process group: the worker and everything under it, every time.
POISON_MAKEFILE = "all:\n\tkill -9 0\ncheck:\n\t@true\ninstall:\n\t@true\n"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def rows(farm: DevFarm, query: str, *params: object) -> list[tuple[object, ...]]:
    for _ in range(100):
        try:
            with farm.db() as conn:
                return list(conn.execute(query, params).fetchall())
        except sqlite3.OperationalError:  # the controller is writing or just starting
            time.sleep(0.05)
    raise AssertionError("the store stayed unreadable")


def assert_exactly_once(farm: DevFarm, n: int, status: str = "success") -> None:
    """n builds, all built with ``status``, each with exactly one accepted result."""
    built = rows(farm, "SELECT id, state, status FROM bbot_builds")
    assert len(built) == n
    assert {(state, st) for _, state, st in built} == {("built", status)}
    per_build = dict(rows(farm, "SELECT build_id, COUNT(*) FROM bbot_attempts WHERE outcome = 'result' "
                                "GROUP BY build_id"))
    assert len(per_build) == n and set(per_build.values()) == {1}, "a build has no or several results"
    ops = dict(rows(farm, "SELECT build_id, COUNT(*) FROM bbot_operations GROUP BY build_id"))
    assert len(ops) == n


def make_farm(tmp_path: Path, broker: str, unique: str, machine: str, *, builds_per_set: int = 2,
              heartbeat: float = 0.5, **controller: object) -> DevFarm:
    return DevFarm(
        tmp_path / "farm", broker, controller_name=f"faults-{unique}",
        configurations=[{"name": f"conf-{i}", "machine": machine, "target": "x86_64-linux-gnu"}
                        for i in range(builds_per_set)],
        controller_settings={"lease_timeout": 120, "schedule_interval": 0.05, "max_attempts": 3,
                             **controller},
        agent_settings={"heartbeat": heartbeat, "build_timeout": 60, "shutdown_grace": 1},
    )


def process_machines(prefix: str, name: str, count: int) -> list[dict[str, str]]:
    return [{"id": f"{prefix}-{i}", "name": name, "type": "process", "summary": "host process"}
            for i in range(count)]


def null_machines(prefix: str, name: str, count: int) -> list[dict[str, str]]:
    return [{"id": f"{prefix}-{i}", "name": name, "type": "null"} for i in range(count)]



def slow_farm(tmp_path: Path, rabbitmq: str, unique: str, farms: list[DevFarm],
              seconds: float) -> tuple[DevFarm, str, Path]:
    """A started controller (no agent yet) and a package whose build takes ``seconds``."""
    machine = f"slow-{unique}"
    repo = tmp_path / "slow"
    git_repo(repo, {"Makefile": SLOW_MAKEFILE.format(seconds=seconds)})
    farm = make_farm(tmp_path, rabbitmq, unique, machine)
    farms.append(farm)
    farm.start_controller()
    return farm, machine, repo


def report(what: str, seconds: float) -> None:
    print(f"\n[recovery] {what}: {seconds:.2f} s")


@pytest.mark.rabbitmq
def test_agent_killed_mid_build_every_build_completes_once_elsewhere(
        tmp_path: Path, rabbitmq: str, unique: str, farms: list[DevFarm]) -> None:
    farm, machine, repo = slow_farm(tmp_path, rabbitmq, unique, farms, seconds=1)
    assert farm.controller is not None
    controller = farm.controller
    victim = farm.add_agent(f"victim-{unique}", process_machines("v", machine, 2))
    for _ in range(4):
        farm.submit(str(repo))
    # The victim is building (its heartbeats renewed the leases under its name): kill it.
    wait_for(lambda: len(rows(farm, "SELECT 1 FROM bbot_attempts WHERE agent = ? AND ended_at IS NULL",
                              f"victim-{unique}")) >= 2, 60, "the victim to build")
    victim.kill()
    killed_at = time.monotonic()
    survivor = farm.add_agent(f"survivor-{unique}", process_machines("s", machine, 2))
    farm.wait_built(8, timeout=120, watch=[controller, survivor])
    report("agent SIGKILL -> all 8 builds done", time.monotonic() - killed_at)
    assert_exactly_once(farm, 8)
    # What the victim had was given up by the lease (agent lost) and built by the survivor.
    lost = rows(farm, "SELECT build_id FROM bbot_attempts WHERE outcome = 'expired'")
    assert len(lost) >= 2
    agents = {a for (a,) in rows(farm, "SELECT agent FROM bbot_attempts WHERE outcome = 'result'")}
    assert f"survivor-{unique}" in agents


@pytest.mark.rabbitmq
def test_controller_killed_and_restarted_takes_in_results_that_arrived_meanwhile(
        tmp_path: Path, rabbitmq: str, unique: str, farms: list[DevFarm]) -> None:
    farm, machine, repo = slow_farm(tmp_path, rabbitmq, unique, farms, seconds=2)
    assert farm.controller is not None
    controller = farm.controller
    agent = farm.add_agent(f"agent-{unique}", process_machines("m", machine, 4))
    for _ in range(4):
        farm.submit(str(repo))
    wait_for(lambda: len(rows(farm, "SELECT 1 FROM bbot_attempts WHERE agent IS NOT NULL AND ended_at IS NULL"))
             >= 4, 60, "four builds running")
    running = {b for (b,) in rows(farm, "SELECT build_id FROM bbot_attempts WHERE ended_at IS NULL "
                                        "AND agent IS NOT NULL")}
    controller.kill()
    killed_at = time.monotonic()
    # The builds finish while the controller is away: their results wait in its queue.
    with Connection(rabbitmq) as conn, conn.channel() as channel:
        queue = names.results_queue(farm.controller_name)
        wait_for(lambda: channel.queue_declare(queue=queue, passive=True)[1] >= len(running), 60,
                 "results to wait in the queue")
    farm.start_controller()
    farm.wait_built(8, timeout=120, watch=[controller, agent])
    report("controller SIGKILL + restart -> all 8 builds done", time.monotonic() - killed_at)
    assert_exactly_once(farm, 8)
    # The results that arrived while it was dead were taken in: no second attempt for those.
    attempts = dict(rows(farm, "SELECT build_id, COUNT(*) FROM bbot_attempts GROUP BY build_id"))
    assert all(attempts[b] == 1 for b in running), attempts


@pytest.mark.rabbitmq
def test_poison_task_ends_abnormal_after_the_retry_limit_without_looping(
        tmp_path: Path, rabbitmq: str, unique: str, farms: list[DevFarm]) -> None:
    machine = f"poison-{unique}"
    repo = tmp_path / "poison"
    git_repo(repo, {"Makefile": POISON_MAKEFILE})
    farm = make_farm(tmp_path, rabbitmq, unique, machine, builds_per_set=1)
    farms.append(farm)
    controller = farm.start_controller()
    agents = [farm.add_agent(f"{n}-{unique}", process_machines(n, machine, 1)) for n in ("a", "b")]
    farm.submit(str(repo))
    farm.wait_built(1, timeout=120, watch=[controller, *agents])
    ((status, reason),) = rows(farm, "SELECT status, reason FROM bbot_builds")
    assert status == "abnormal" and "gave up after 3 attempts" in str(reason)
    attempts = rows(farm, "SELECT number, outcome, infrastructure, agent, detail FROM bbot_attempts "
                          "ORDER BY number")
    assert [(n, o, bool(i)) for n, o, i, _, _ in attempts] == [(1, "failed", True), (2, "failed", True),
                                                                (3, "failed", True)]
    assert all("SIGKILL" in str(d) for *_, d in attempts)
    # A retry goes to another agent first.
    assert attempts[0][3] != attempts[1][3]
    ((log,),) = rows(farm, "SELECT log FROM bbot_operations")
    import zlib

    text = zlib.decompress(log).decode()  # type: ignore[arg-type]
    assert text.count("SIGKILL") == 3 and "gave up after 3 attempts" in text
    # It does not loop: nothing is leased or queued, and no task waits on the broker.
    assert rows(farm, "SELECT COUNT(*) FROM bbot_builds WHERE state != 'built'") == [(0,)]
    with Connection(rabbitmq) as conn, conn.channel() as channel:
        assert channel.queue_declare(queue=names.task_queue(machine), passive=True)[1] == 0
    assert not rows(farm, "SELECT 1 FROM bbot_attempts WHERE ended_at IS NULL")
