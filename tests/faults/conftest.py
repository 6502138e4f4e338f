"""Fixtures for fault tests: RabbitMQ nodes the tests own and may kill (never the system node on 5672)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bbot.devfarm import DevFarm
from tests.rabbit_nodes import RabbitCluster, RabbitMQMissing, RabbitNode, require_rabbitmq

# Node 4 (AMQP 5676) is the single node; 1-3 (5673-5675) form the cluster: both can run at once.
SINGLE_NODE_INDEX = 4
CLUSTER_INDICES = (1, 2, 3)


def _require_rabbitmq() -> None:
    try:
        require_rabbitmq()
    except RabbitMQMissing as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def rabbit_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A fresh, ready single node ``bbottest4@localhost`` on 127.0.0.1:5676; stopped after the test."""
    _require_rabbitmq()
    node = RabbitNode(SINGLE_NODE_INDEX, tmp_path_factory.mktemp("rabbit-node"))
    try:
        node.start()
        node.wait_ready()
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """A ready 3-node cluster on 127.0.0.1:5673-5675, shared by the tests of one module; stopped after them."""
    _require_rabbitmq()
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbit-cluster"), CLUSTER_INDICES)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(autouse=True)
def _whole_rabbit_cluster(request: pytest.FixtureRequest) -> None:
    """The cluster outlives single tests: restart nodes an earlier test killed, so each test starts whole."""
    if "rabbit_cluster" in request.fixturenames:
        cluster: RabbitCluster = request.getfixturevalue("rabbit_cluster")
        cluster.ensure_running()


@pytest.fixture
def farms() -> Iterator[list[DevFarm]]:
    """Farms a test started; stopped (every process) at teardown, whatever happened."""
    started: list[DevFarm] = []
    yield started
    for farm in started:
        farm.stop()
