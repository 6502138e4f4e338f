"""The broker dies under a running farm: a restarted node, a killed cluster leader.

Controller and agent are real processes (bbot.devfarm) on test-owned RabbitMQ
nodes (tests/rabbit_nodes.py), building on null machines so that hundreds of
builds are in flight when the broker goes. Afterwards the store must hold
every build exactly once.
"""

from __future__ import annotations

import time
from pathlib import Path

from bbot.bus import names
from bbot.devfarm import DevFarm
from tests.conftest import git_repo
from tests.faults.test_delivery import assert_exactly_once, null_machines, report, rows, wait_for
from tests.rabbit_nodes import RabbitCluster, RabbitNode

CONFIGURATIONS = 10


def null_farm(tmp_path: Path, broker: str, unique: str) -> tuple[DevFarm, str]:
    repo = tmp_path / "null-package"
    git_repo(repo, {"README": "nothing to build\n"})
    farm = DevFarm(
        tmp_path / "farm", broker, controller_name=f"faults-{unique}",
        configurations=[{"name": f"conf-{i}", "machine": "null*", "target": "x86_64-linux-gnu"}
                        for i in range(CONFIGURATIONS)],
        controller_settings={"lease_timeout": 60, "schedule_interval": 0.05, "max_attempts": 3},
        agent_settings={"heartbeat": 0.5},
    )
    return farm, str(repo)


def built(farm: DevFarm) -> int:
    return int(rows(farm, "SELECT COUNT(*) FROM bbot_builds WHERE state = 'built'")[0][0])  # type: ignore[arg-type]



def test_rabbitmq_restart_during_a_run_loses_and_doubles_nothing(
        tmp_path: Path, rabbit_node: RabbitNode, unique: str, farms: list[DevFarm]) -> None:
    n = 1000
    farm, repo = null_farm(tmp_path, rabbit_node.url, unique)
    farms.append(farm)
    controller = farm.start_controller()
    for _ in range(n // CONFIGURATIONS):
        farm.submit(repo)
    # Few machines, so the run lasts long enough to restart the broker in its middle.
    agent = farm.add_agent(f"agent-{unique}", null_machines("n", "null-x86_64", 2))
    wait_for(lambda: built(farm) >= 100, 120, "the first 100 builds")
    restart_started = time.monotonic()
    rabbit_node.restart()
    back = time.monotonic()
    before = built(farm)
    assert before < n, "the run ended before the broker was back: nothing was tested"
    wait_for(lambda: built(farm) > before + 10, 120, "builds to go on after the restart")
    report(f"RabbitMQ restart ({back - restart_started:.1f} s down) -> builds flowing again",
           time.monotonic() - back)
    farm.wait_built(n, timeout=300, watch=[controller, agent])
    report("RabbitMQ restart -> all builds done", time.monotonic() - restart_started)
    assert_exactly_once(farm, n)


def test_cluster_leader_killed_during_500_builds_all_complete_exactly_once(
        tmp_path: Path, rabbit_cluster: RabbitCluster, unique: str, farms: list[DevFarm]) -> None:
    n = 500
    farm, repo = null_farm(tmp_path, rabbit_cluster.url, unique)
    farms.append(farm)
    controller = farm.start_controller()
    for _ in range(n // CONFIGURATIONS):
        farm.submit(repo)
    agent = farm.add_agent(f"agent-{unique}", null_machines("n", "null-x86_64", 2))
    wait_for(lambda: built(farm) >= 50, 120, "the first 50 builds")
    leader = rabbit_cluster.leader_of(names.task_queue("null-x86_64"))
    killed_at = time.monotonic()
    leader.kill()
    assert built(farm) < n, "the run ended before the leader died: nothing was tested"
    new_leader = rabbit_cluster.wait_new_leader(names.task_queue("null-x86_64"), leader)
    report(f"leader {leader} SIGKILL -> new leader {new_leader}", time.monotonic() - killed_at)
    farm.wait_built(n, timeout=300, watch=[controller, agent])
    report("leader SIGKILL -> all 500 builds done", time.monotonic() - killed_at)
    assert_exactly_once(farm, n)
