"""`bbot controller` and `bbot agent` (polling over HTTP) as separate processes, from their
YAML configurations: the commands an operator runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbot.devfarm import DevFarm
from tests.conftest import git_repo
from tests.shim.conftest import wait_for


@pytest.mark.rabbitmq
def test_an_http_agent_process_builds_for_a_controller_process(tmp_path: Path, unique: str,
                                                               rabbitmq: str) -> None:
    machine = f"null_{unique}-x86_64"
    farm = DevFarm(
        tmp_path / "farm", rabbitmq, controller_name=f"procs-{unique}",
        configurations=[{"name": f"conf-{i}", "machine": "null_*", "target": "x86_64-linux-gnu"}
                        for i in range(10)],
        controller_settings={"schedule_interval": 0.05},
    )
    farm.agent_settings = {"controllers": [farm.url], "poll_interval": 0.1}
    try:
        farm.start_controller()
        agent = farm.add_agent(f"remote-{unique}", [
            {"id": f"n{i}", "name": machine, "type": "null", "summary": "null"} for i in range(3)])
        git_repo(tmp_path / "repo", {"Makefile": "all:\n"})
        for _ in range(3):
            farm.submit(str(tmp_path / "repo"))
        farm.wait_built(30, timeout=60, watch=[agent, farm.controller])  # type: ignore[list-item]
        with farm.db() as db:
            agents = {row[0] for row in db.execute("SELECT DISTINCT agent FROM bbot_builds")}
            statuses = {row[0] for row in db.execute("SELECT DISTINCT status FROM bbot_builds")}
        assert agents == {f"remote-{unique}"} and statuses == {"success"}
        # Nothing is waiting in the agent's spool: every result was taken.
        spool = tmp_path / "farm" / f"agent-remote-{unique}" / "agent" / f"remote-{unique}" / "http-results"
        assert list(spool.glob("*.json")) == []
    finally:
        farm.stop()


@pytest.mark.rabbitmq
def test_three_processes_in_layers_top_controller_middle_controller_agent(tmp_path: Path, unique: str,
                                                                           rabbitmq: str) -> None:
    """`bbot controller` (top, no agents of its own, its in-memory broker) <- HTTP <- `bbot
    controller` with `upstream` (RabbitMQ) <- AMQP <- `bbot agent`."""
    machine = f"null_{unique}-x86_64"
    top = DevFarm(tmp_path / "top", "memory://", controller_name=f"top-{unique}",
                  configurations=[{"name": f"conf-{i}", "machine": "null_*", "target": "x86_64-linux-gnu"}
                                  for i in range(5)],
                  controller_settings={"schedule_interval": 0.05})
    middle = DevFarm(tmp_path / "middle", rabbitmq, controller_name=f"middle-{unique}", configurations=[],
                     controller_settings={"schedule_interval": 0.05, "upstream": [top.url],
                                          "upstream_interval": 0.1},
                     agent_settings={"heartbeat": 0.5})
    try:
        top.start_controller()
        middle.start_controller()
        agent = middle.add_agent(f"low-{unique}", [
            {"id": f"n{i}", "name": machine, "type": "null", "summary": "null"} for i in range(2)])
        git_repo(tmp_path / "repo", {"Makefile": "all:\n"})
        for _ in range(2):
            top.submit(str(tmp_path / "repo"))
        assert top.controller is not None and middle.controller is not None
        top.wait_built(10, timeout=60, watch=[top.controller, middle.controller, agent])
        with top.db() as db:
            rows = db.execute("SELECT agent, status FROM bbot_builds").fetchall()
        assert set(rows) == {(f"middle-{unique}", "success")}
        middle.wait_built(10, timeout=30)
        with middle.db() as db:
            kinds = db.execute("SELECT DISTINCT s.kind, b.agent FROM bbot_builds b "
                               "JOIN bbot_build_sets s ON s.id = b.set_id").fetchall()
        assert kinds == [("upstream", f"low-{unique}")]

        def posted() -> int:
            with middle.db() as db:
                return int(db.execute("SELECT COUNT(*) FROM bbot_upstream WHERE post_outcome = 'posted'")
                           .fetchone()[0])
        wait_for(lambda: posted() == 10, what="the middle to mark every result posted")
    finally:
        middle.stop()
        top.stop()
