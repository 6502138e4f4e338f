"""`bbot controller` and `bbot agent` (polling over HTTP) as separate processes, from their
YAML configurations: the commands an operator runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbot.devfarm import DevFarm
from tests.conftest import git_repo


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
