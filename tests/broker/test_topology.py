"""The topology as data: names, arguments, permissions and the definitions document."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from bbot.bus import names
from broker.topology import (
    Topology,
    agent_permissions,
    announce_queue_spec,
    controller_permissions,
    definitions,
    password_hash,
    task_queue_spec,
)


def test_task_queue_is_a_quorum_queue_with_a_delivery_limit_bound_by_machine_name() -> None:
    spec = task_queue_spec("linux_debian_12-gcc_12")
    assert spec.name == "bbot.tasks.linux_debian_12-gcc_12"
    assert (spec.exchange, spec.routing_key) == (names.TASKS_EXCHANGE, "linux_debian_12-gcc_12")
    assert spec.arguments == {"x-queue-type": "quorum", "x-delivery-limit": names.DELIVERY_LIMIT,
                              "x-dead-letter-exchange": names.DEAD_LETTER_EXCHANGE}


def test_announce_queue_keeps_announcements_briefly() -> None:
    spec = announce_queue_spec("main")
    assert not spec.durable and spec.exclusive and spec.exchange == names.ANNOUNCE_EXCHANGE
    assert spec.arguments == {"x-message-ttl": names.ANNOUNCE_TTL_MS, "x-max-length": names.ANNOUNCE_MAX_LENGTH}


def test_names_that_cannot_be_routing_keys_are_refused() -> None:
    with pytest.raises(ValueError, match=r"machine name 'linux gcc' cannot be a routing key"):
        Topology.build(machines=["linux gcc"])
    with pytest.raises(ValueError, match=r"controller name 'a/b'"):
        Topology.build(controllers=["a/b"])
    with pytest.raises(ValueError, match="longer than 255 bytes"):
        Topology.build(machines=["m" * 250])


def test_topology_lists_each_name_once() -> None:
    t = Topology.build(machines=["m1", "m2", "m1"], controllers=["main"], agents=["h1", "h1"])
    assert [q.name for q in t.queues()] == [
        "bbot.tasks.m1", "bbot.tasks.m2", "bbot.results.main", "bbot.dead"]
    assert [u.name for u in t.users()] == ["bbot-controller-main", "bbot-agent-h1"]
    renamed = Topology.build(agents=["h1"], user_names={"bbot-agent-h1": "builder"})
    assert [u.name for u in renamed.users()] == ["builder"]


def test_agent_reads_only_task_queues_and_writes_only_results_and_announcements() -> None:
    # The broker enforces these (tests/broker/test_permissions.py); this pins the expressions.
    agent = agent_permissions("h1")
    assert agent.configure == "^$"
    assert [n for n in ("bbot.results", "bbot.announce", "bbot.tasks", "bbot.results.main")
            if re.search(agent.write, n)] == ["bbot.results", "bbot.announce"]
    assert [n for n in ("bbot.tasks.m1", "bbot.tasks", "bbot.results.main", "bbot.dead")
            if re.search(agent.read, n)] == ["bbot.tasks.m1"]
    controller = controller_permissions("main")
    assert not re.search(controller.configure, "bbot.results.other")
    assert not re.search(controller.read, "bbot.results.other")
    # It publishes results (its shim passes on those of HTTP agents), but no announcements.
    assert re.search(controller.write, "bbot.results")
    assert not re.search(controller.write, "bbot.announce")


def test_password_hash_is_rabbitmq_sha256() -> None:
    raw = base64.b64decode(password_hash("s3cret", salt=b"\x01\x02\x03\x04"))
    assert raw == b"\x01\x02\x03\x04" + hashlib.sha256(b"\x01\x02\x03\x04s3cret").digest()


def test_definitions_need_every_password() -> None:
    t = Topology.build(vhost="v", machines=["m1"], controllers=["main"], agents=["h1"])
    with pytest.raises(ValueError, match="bbot-agent-h1"):
        definitions(t, {"bbot-controller-main": "x"})
    document = definitions(t, {"bbot-controller-main": "x", "bbot-agent-h1": "y"})
    assert document["vhosts"] == [{"name": "v"}]
    assert {b["destination"] for b in document["bindings"]} == {q.name for q in t.queues()}
    assert {p["user"] for p in document["permissions"]} == {"bbot-controller-main", "bbot-agent-h1"}
