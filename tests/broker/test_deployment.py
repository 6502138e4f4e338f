"""A datacenter deployment end to end: provisioned topology, least-privilege users, separate processes.

`bbot broker users` and `bbot broker apply` prepare a vhost as the README says;
then `bbot controller` and `bbot agent`, each with its own broker user and
``broker.declare: false``, build a package there.
"""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import yaml

from bbot import bus
from bbot.bus import names
from bbot.cli import main as bbot_main
from bbot.devfarm import DevFarm
from bbot.manifest import MachineHeader, TaskRequest
from broker.apply import Rabbitmqctl, verify
from broker.topology import Topology
from tests.conftest import git_repo


def test_controller_and_agent_build_with_least_privilege_users_on_a_provisioned_vhost(
        rabbitmq: str, ctl: Rabbitmqctl, vhost: str, unique: str, tmp_path: Path) -> None:
    machine, controller, agent = f"linux-{unique}", f"c-{unique}", f"a-{unique}"
    passwords = {f"bbot-controller-{controller}": f"cpw-{unique}", f"bbot-agent-{agent}": f"apw-{unique}"}
    password_file = tmp_path / "passwords.yaml"
    password_file.write_text(yaml.safe_dump(passwords))
    quoted = urllib.parse.quote(vhost, safe="")
    admin = f"amqp://guest:guest@127.0.0.1:5672/{quoted}"
    who = ["--url", admin, "--vhost", vhost, "--machine", machine, "--controller", controller,
             "--agent", agent]
    try:
        assert bbot_main(["broker", "users", *who, "--password-file", str(password_file)]) == 0
        assert bbot_main(["broker", "apply", *who]) == 0
        topology = Topology.build(vhost=vhost, machines=[machine], controllers=[controller], agents=[agent])
        assert verify(admin, topology) == []

        repo = tmp_path / "hello"
        git_repo(repo, {"Makefile": "all:\n\t@echo built\ncheck:\n\t@true\ninstall:\n\t@true\n"})
        farm = DevFarm(
            tmp_path / "farm",
            f"amqp://bbot-controller-{controller}:cpw-{unique}@127.0.0.1:5672/{quoted}",
            agent_broker_url=f"amqp://bbot-agent-{agent}:apw-{unique}@127.0.0.1:5672/{quoted}",
            controller_name=controller, declare=False,
            configurations=[{"name": "default", "machine": "linux-*", "target": "x86_64-linux-gnu"},
                            {"name": "ghost", "machine": "ghost-*", "target": "x86_64-linux-gnu"}],
            agent_settings={"heartbeat": 0.5},
        )
        try:
            farm.start_controller()
            # m2's machine name was never provisioned: the agent leaves it out and says why.
            agent_proc = farm.add_agent(agent, [{"id": "m1", "name": machine, "type": "process",
                                                 "summary": "this host"},
                                                {"id": "m2", "name": f"other-{unique}", "type": "process"}])
            # An agent (here the admin, speaking for one) offers a machine nobody provisioned.
            ghost = f"ghost-{unique}"
            announcement = TaskRequest(agent=f"ghost-agent-{unique}", toolchain_name="bbot", toolchain_version="0",
                                       machines=[MachineHeader(id="g1", name=ghost, summary="unprovisioned")])
            farm.submit(str(repo))
            assert farm.controller is not None
            farm.wait_built(1, timeout=120, watch=[farm.controller, agent_proc])

            def ghost_reason() -> str:
                publisher = bus.Publisher(admin, declare=False)
                publisher.publish(announcement.to_text(), exchange=bus.announce_exchange(), routing_key="",
                                  persistent=False, headers={names.HEADER_HEARTBEAT: 60})
                publisher.close()
                with farm.db() as conn:
                    return str(conn.execute("SELECT reason FROM bbot_builds WHERE configuration = 'ghost'")
                               .fetchone()[0])

            deadline = time.monotonic() + 30
            while f"the broker has no queue bbot.tasks.{ghost}" not in ghost_reason():
                assert time.monotonic() < deadline, ghost_reason()
                time.sleep(0.2)
            assert f"provision it: bbot broker apply --machine {ghost}" in ghost_reason()
            with farm.db() as conn:
                assert conn.execute("SELECT configuration, state, status, agent FROM bbot_builds ORDER BY id"
                                    ).fetchall() == [("default", "built", "success", agent),
                                                     ("ghost", "queued", None, None)]
            # An agent polling over HTTP, with the AMQP agent gone: the controller's shim takes the
            # task from the provisioned queue and publishes the result, within its permissions.
            agent_proc.stop()
            remote = f"remote-{unique}"
            farm.agent_settings = {"controllers": [farm.url], "poll_interval": 0.1}
            remote_proc = farm.add_agent(remote, [{"id": "r1", "name": machine, "type": "process"}])
            farm.submit(str(repo))
            farm.wait_built(2, timeout=120, watch=[farm.controller, remote_proc])
            with farm.db() as conn:
                assert conn.execute("SELECT status, agent FROM bbot_builds WHERE configuration = 'default' "
                                    "ORDER BY id").fetchall() == [("success", agent), ("success", remote)]
        finally:
            farm.stop()
        agent_log = (tmp_path / "farm" / f"agent-{agent}.log").read_text()
        assert (f"the broker has no queue bbot.tasks.other-{unique}, so machine name 'other-{unique}' is "
                f"left out; provision it (bbot broker apply --machine other-{unique})") in agent_log
        # Nobody needed more than their permissions: no access refusal in either log.
        for log in (tmp_path / "farm").glob("*.log"):
            assert "ACCESS_REFUSED" not in log.read_text(), log.name
        # And the runtime left the provisioned topology as it was.
        assert verify(admin, topology) == []
    finally:
        for user in passwords:
            ctl.run("delete_user", user)
