"""Fixtures for the broker package: a vhost of its own per test on the real RabbitMQ."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from broker.apply import BrokerError, Rabbitmqctl
from broker.topology import Topology


@pytest.fixture(scope="session")
def ctl(rabbitmq: str) -> Rabbitmqctl:
    found = Rabbitmqctl.find()
    if found is None:
        pytest.fail("rabbitmqctl is not on PATH: these tests create vhosts and users with it (run as root)")
    return found


@pytest.fixture
def fresh_vhost(ctl: Rabbitmqctl) -> Iterator[str]:
    """A vhost name nobody uses; deleted after the test if something created it."""
    name = f"bbot-test-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(BrokerError):
        ctl.run("delete_vhost", name)


@pytest.fixture
def vhost(ctl: Rabbitmqctl, fresh_vhost: str) -> str:
    """A new, empty vhost on which guest (the administrator in these tests) may do anything."""
    ctl.run("add_vhost", fresh_vhost)
    ctl.run("set_permissions", "-p", fresh_vhost, "guest", ".*", ".*", ".*")
    return fresh_vhost


@pytest.fixture
def topology(vhost: str, unique: str) -> Iterator[Topology]:
    """Two machines, a controller and an agent; their users are deleted after the test."""
    t = Topology.build(vhost=vhost, machines=[f"linux-{unique}", f"bsd-{unique}"],
                       controllers=[f"c-{unique}"], agents=[f"a-{unique}"])
    yield t
    ctl = Rabbitmqctl.find()
    assert ctl is not None
    for user in t.users():
        with contextlib.suppress(BrokerError):
            ctl.run("delete_user", user.name)
