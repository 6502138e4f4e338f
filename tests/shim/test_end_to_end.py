"""End to end over brep's interface, with real builds of the sample project:

- an agent that polls the controller over HTTP (signed challenges);
- an AMQP agent below a middle controller on RabbitMQ, which takes its tasks
  from a top controller over HTTP and sends the results up: the build shows
  at the top with its logs, and the top mails about it.
"""

from __future__ import annotations

import mailbox
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from bbot.agent.service import Agent
from bbot.brep import keys
from bbot.config import AgentConfig, Config, MachineConfig, WebConfig, load_config
from bbot.controller.lease import BuildState
from bbot.farm import Farm, start_farm
from bbot.manifest.status import Status
from bbot.wire import log_url
from tests.conftest import SAMPLE, git_repo
from tests.shim.conftest import shim_config, wait_for

pytestmark = pytest.mark.slow


def agent_config(unique: str, name: str, **kwargs: object) -> AgentConfig:
    return AgentConfig(
        name=name, heartbeat=0.5, build_timeout=120,
        machines=(MachineConfig(f"{name}-1", f"linux_{unique}-gcc", "local GCC, process machine"),),
        **kwargs,  # type: ignore[arg-type]
    )


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        text: str = reply.read().decode()
        return text


def check_top(top: Farm, set_id: int, agent_name: str) -> None:
    assert top.controller.wait_for_sets([set_id], timeout=180)
    (build,) = top.controller.store.set_builds(set_id)
    assert build.state is BuildState.BUILT
    assert build.status is Status.SUCCESS, top.controller.store.operations(build.id)
    assert build.agent == agent_name
    assert [op.name for op in top.controller.store.operations(build.id)] == [
        "configure", "update", "test", "install"]
    page = fetch(log_url(top.url, build.key, "update"))
    assert "update: success" in page and "build machine:     linux_" in page
    # The submitter's mail, from the top controller, linking to the top's log pages.
    box = mailbox.Maildir(top.config.data_dir / "outbox", create=False)
    mails = [m for m in box if "sub@example.org" in (m["To"] or "")]
    assert len(mails) == 1 and "success" in mails[0]["Subject"]
    assert log_url(top.url, build.key) in mails[0].get_payload()


def trusted_key(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A private key for agent ``name``, and a keys directory that trusts it."""
    key_path = tmp_path / f"{name}.pem"
    keys.write_private_key(keys.generate_private_key(2048), key_path)
    trusted = tmp_path / "agent-keys"
    trusted.mkdir()
    (trusted / f"{name}.pem").write_text(keys.public_pem(keys.load_private_key(key_path)))
    return key_path, trusted


def submit(top: Farm, tmp_path: Path) -> int:
    git_repo(tmp_path / "libhello", SAMPLE)
    return top.controller.submit(f"file://{tmp_path / 'libhello'}#main", email="sub@example.org")


def test_an_agent_polling_over_http_with_keys(tmp_path: Path, unique: str) -> None:
    key_path, trusted = trusted_key(tmp_path, "remote")
    top = start_farm(shim_config(tmp_path / "top", unique, "memory://", agent_keys=trusted), with_agent=False)
    agent = None
    try:
        set_id = submit(top, tmp_path)
        config = agent_config(unique, f"remote-{unique}", controllers=(top.url,), poll_interval=0.2,
                              key=key_path)
        # Its own data directory and no broker at all: it talks HTTP only.
        agent = Agent(config, broker_url="amqp://nobody:nothing@127.0.0.1:1//", data_dir=tmp_path / "remote")
        agent.start()
        check_top(top, set_id, f"remote-{unique}")
        assert top.controller.store.counters().get("results_dropped_auth") is None
        assert wait_for(lambda: agent._spool.pending() == [], what="the spool to empty")
    finally:
        if agent is not None:
            agent.stop()
        top.stop()


def middle_config(tmp_path: Path, unique: str, rabbitmq: str, top_url: str, key: Path) -> Config:
    base = load_config(None, data_dir=tmp_path / "middle")
    return replace(
        base,
        broker_url=rabbitmq,
        web=WebConfig("127.0.0.1", 0),
        controller=replace(base.controller, name=f"middle-{unique}", schedule_interval=0.05,
                           upstream=(top_url,), upstream_interval=0.2, key=key),
        agent=agent_config(unique, f"low-{unique}"),
        configurations=(),  # it builds only what comes from above
    )


@pytest.mark.rabbitmq
def test_agent_below_a_middle_controller_below_a_top_controller(tmp_path: Path, unique: str,
                                                                 rabbitmq: str) -> None:
    key_path, trusted = trusted_key(tmp_path, "middle")
    top = start_farm(shim_config(tmp_path / "top", unique, "memory://", agent_keys=trusted), with_agent=False)
    middle = None
    try:
        set_id = submit(top, tmp_path)
        middle = start_farm(middle_config(tmp_path, unique, rabbitmq, top.url, key_path))
        check_top(top, set_id, f"middle-{unique}")
        # The middle built it as a build of its own, from the top's task, and mailed nobody.
        (local,) = middle.controller.store.list_builds()
        assert (local.kind, local.state, local.status) == ("upstream", BuildState.BUILT, Status.SUCCESS)
        assert local.agent == f"low-{unique}"
        wait_for(lambda: middle.controller.upstream is not None and middle.controller.upstream.posted == 1,
                 what="the middle to mark the result posted")
        assert not list((middle.config.data_dir / "outbox").glob("*/*"))
        assert top.controller.store.counters().get("results_dropped_auth") is None
    finally:
        if middle is not None:
            middle.stop()
        top.stop()


@pytest.mark.rabbitmq
def test_a_result_waits_at_the_middle_while_the_top_is_unreachable(tmp_path: Path, unique: str,
                                                                   rabbitmq: str) -> None:
    from bbot.controller.web.server import serve

    top = start_farm(shim_config(tmp_path / "top", unique, "memory://"), with_agent=False)
    middle = None
    try:
        set_id = submit(top, tmp_path)
        key_path = tmp_path / "middle.pem"
        keys.write_private_key(keys.generate_private_key(1024), key_path)
        middle = start_farm(middle_config(tmp_path, unique, rabbitmq, top.url, key_path))
        link = middle.controller.upstream
        assert link is not None
        wait_for(lambda: link.taken == 1, what="the middle to take the task")
        # The top's web server goes away (a network outage, a restart of its front end).
        host, port = top.web.host, top.web.port
        top.web.stop()
        wait_for(lambda: link._post_backoff.failures >= 2, timeout=120,
                 what="the middle to fail posting the result up")
        (local,) = middle.controller.store.list_builds()
        assert local.state is BuildState.BUILT and link.posted == 0
        assert top.controller.store.set_builds(set_id)[0].state is BuildState.LEASED
        # Back on the same address: the result goes up, once.
        assert top.app is not None
        top.web = serve(top.app, host, port)
        check_top(top, set_id, f"middle-{unique}")
        wait_for(lambda: link.posted == 1, what="the middle to mark the result posted")
        assert top.controller.store.counters().get("results_dropped_duplicate") is None
    finally:
        if middle is not None:
            middle.stop()
        top.stop()


def test_an_http_agent_that_stops_gives_its_running_task_back_at_once(tmp_path: Path, unique: str) -> None:
    top = start_farm(shim_config(tmp_path / "top", unique, "memory://"), with_agent=False)
    agent = None
    try:
        git_repo(tmp_path / "slow", {"Makefile": "all:\n\tsleep 60\ncheck:\n\t@true\ninstall:\n\t@true\n"})
        set_id = top.controller.submit(f"file://{tmp_path / 'slow'}#main")
        config = agent_config(unique, f"remote-{unique}", controllers=(top.url,), poll_interval=0.2)
        agent = Agent(config, broker_url="amqp://nobody:nothing@127.0.0.1:1//", data_dir=tmp_path / "remote")
        agent.start()
        wait_for(lambda: top.controller.store.set_builds(set_id)[0].agent == f"remote-{unique}",
                 what="the agent to take the task")
        (first,) = top.controller.store.set_builds(set_id)
        agent.stop()  # interrupts the build and posts `interrupt` before it returns
        agent = None
        # The controller issues it again at once, not after result_timeout (3 h).
        wait_for(lambda: top.controller.store.attempts(first.id)[0].outcome is not None,
                 what="the first attempt to end")
        attempt = top.controller.store.attempts(first.id)[0]
        assert (attempt.outcome, attempt.detail) == ("expired", f"interrupted: agent remote-{unique} stopped")
        assert top.controller.store.set_builds(set_id)[0].state is not BuildState.BUILT
    finally:
        if agent is not None:
            agent.stop()
        top.stop()
