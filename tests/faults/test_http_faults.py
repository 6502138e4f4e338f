"""Nothing is lost over brep's HTTP interface either: real processes, real sockets, while parts die.

- The controller is SIGKILLed while agents that poll over HTTP are building: their results
  wait in the agents' spools, and go in when the controller is back.
- An agent that polls is SIGKILLed mid-build: it sends no heartbeats, so its builds come back
  when ``controller.result_timeout`` runs out, and another agent builds them, once.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bbot.devfarm import DevFarm
from tests.conftest import git_repo
from tests.faults.test_delivery import (
    SLOW_MAKEFILE,
    assert_exactly_once,
    make_farm,
    process_machines,
    report,
    rows,
    wait_for,
)


def http_farm(tmp_path: Path, rabbitmq: str, unique: str, farms: list[DevFarm], *, seconds: float,
              **controller: object) -> tuple[DevFarm, str, Path]:
    machine = f"slow-{unique}"
    repo = tmp_path / "slow"
    git_repo(repo, {"Makefile": SLOW_MAKEFILE.format(seconds=seconds)})
    farm = make_farm(tmp_path, rabbitmq, unique, machine, **controller)
    farm.agent_settings = {**farm.agent_settings, "controllers": [farm.url], "poll_interval": 0.1,
                           "poll_backoff_max": 0.5}
    farms.append(farm)
    farm.start_controller()
    return farm, machine, repo


def running_over_http(farm: DevFarm, agent: str) -> int:
    return len(rows(farm, "SELECT 1 FROM bbot_attempts a JOIN bbot_http_leases h ON h.session = a.session "
                          "WHERE a.ended_at IS NULL AND h.agent = ?", agent))


@pytest.mark.rabbitmq
def test_controller_killed_while_http_agents_build_their_results_go_in_when_it_is_back(
        tmp_path: Path, rabbitmq: str, unique: str, farms: list[DevFarm]) -> None:
    farm, machine, repo = http_farm(tmp_path, rabbitmq, unique, farms, seconds=2)
    assert farm.controller is not None
    agent = farm.add_agent(f"remote-{unique}", process_machines("m", machine, 4))
    for _ in range(2):
        farm.submit(str(repo))
    wait_for(lambda: running_over_http(farm, f"remote-{unique}") >= 4, 60, "four builds running")
    farm.controller.kill()
    killed_at = time.monotonic()
    spool = tmp_path / "farm" / f"agent-remote-{unique}" / "agent" / f"remote-{unique}" / "http-results"
    # The builds end while the controller is down: their results wait on the agent's disk.
    wait_for(lambda: len(list(spool.glob("*.json"))) >= 4, 60, "the results to wait in the spool")
    farm.start_controller()
    farm.wait_built(4, timeout=60, watch=[farm.controller, agent])
    report("controller SIGKILL with results spooled at an HTTP agent -> all 4 built",
           time.monotonic() - killed_at)
    assert_exactly_once(farm, 4)
    assert list(spool.glob("*.json")) == []


@pytest.mark.rabbitmq
def test_http_agent_killed_mid_build_its_builds_come_back_after_the_result_timeout(
        tmp_path: Path, rabbitmq: str, unique: str, farms: list[DevFarm]) -> None:
    farm, machine, repo = http_farm(tmp_path, rabbitmq, unique, farms, seconds=1, result_timeout=3)
    assert farm.controller is not None
    victim = farm.add_agent(f"victim-{unique}", process_machines("v", machine, 2))
    for _ in range(2):
        farm.submit(str(repo))
    wait_for(lambda: running_over_http(farm, f"victim-{unique}") >= 2, 60, "the victim to build")
    victim.kill()
    killed_at = time.monotonic()
    survivor = farm.add_agent(f"survivor-{unique}", process_machines("s", machine, 2))
    farm.wait_built(4, timeout=60, watch=[farm.controller, survivor])
    report("HTTP agent SIGKILL (result_timeout 3 s) -> all 4 built", time.monotonic() - killed_at)
    assert_exactly_once(farm, 4)
    assert len(rows(farm, "SELECT 1 FROM bbot_attempts WHERE outcome = 'expired'")) >= 2
    agents = {a for (a,) in rows(farm, "SELECT agent FROM bbot_attempts WHERE outcome = 'result'")}
    assert f"survivor-{unique}" in agents
