"""The test-owned RabbitMQ nodes behave like brokers that can crash: data survives, leaders fail over."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kombu import Connection, Queue
from kombu.message import Message

from tests.rabbit_nodes import RabbitCluster, RabbitNode, pid_alive, port_open

FAILOVER_DEADLINE = 15.0


def quorum_queue(name: str) -> Queue:
    return Queue(name, routing_key=name, durable=True, queue_arguments={"x-queue-type": "quorum"})


def publish_confirmed(url: str, queue: str, body: str) -> None:
    """Publish a persistent message and return only once the broker confirmed it."""
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        conn.Producer().publish(body, exchange="", routing_key=queue, delivery_mode=2,
                                declare=[quorum_queue(queue)], retry=False, serializer="json")


def get_one(url: str, queue: str, timeout: float = 20) -> tuple[Message, str]:
    """Fetch and ack one message from ``queue``; returns it and the URL of the node that served it."""
    deadline = time.monotonic() + timeout
    with Connection(url) as conn:
        conn.ensure_connection(max_retries=3)
        served_by = conn.as_uri()
        bound = quorum_queue(queue)(conn.default_channel)
        while True:
            msg = bound.get(no_ack=False)
            if msg is not None:
                msg.ack()
                return msg, served_by
            if time.monotonic() > deadline:
                raise AssertionError(f"no message in {queue} via {url} within {timeout:g} s")
            time.sleep(0.1)


def test_node_serves_amqp_on_its_own_port(rabbit_node: RabbitNode) -> None:
    assert rabbit_node.name == "bbottest4@localhost"
    assert rabbit_node.url == "amqp://guest:guest@127.0.0.1:5676//"
    assert rabbit_node.running
    assert pid_alive(rabbit_node.pid)
    # Isolated from the system node: its own name, not clustered with rabbit@localhost.
    assert "bbottest4@localhost" in rabbit_node.ctl("cluster_status")
    assert "rabbit@localhost" not in rabbit_node.ctl("cluster_status")


def test_persistent_message_survives_sigkill(rabbit_node: RabbitNode, unique: str) -> None:
    queue = f"faults.survive.{unique}"
    publish_confirmed(rabbit_node.url, queue, "first")
    msg, _ = get_one(rabbit_node.url, queue)
    assert msg.payload == "first"
    publish_confirmed(rabbit_node.url, queue, "survivor")
    # A kill within 0.5 s of declaring a quorum queue loses it on 3.10.8 (see quorum_member_saved).
    rabbit_node.wait_quorum_member_saved(queue)
    old_pid = rabbit_node.pid

    rabbit_node.kill()
    assert not port_open(rabbit_node.port)
    assert not rabbit_node.running
    rabbit_node.start()
    rabbit_node.wait_ready()

    assert rabbit_node.pid != old_pid
    assert not pid_alive(old_pid)
    msg, _ = get_one(rabbit_node.url, queue)
    assert msg.payload == "survivor"
    assert msg.properties["delivery_mode"] == 2


def test_graceful_restart_keeps_data(rabbit_node: RabbitNode, unique: str) -> None:
    queue = f"faults.restart.{unique}"
    publish_confirmed(rabbit_node.url, queue, "kept")
    rabbit_node.restart()
    msg, _ = get_one(rabbit_node.url, queue)
    assert msg.payload == "kept"


def test_start_replaces_a_leftover_node(rabbit_node: RabbitNode, unique: str, tmp_path: Path) -> None:
    """A node left running by a crashed run (other files, other cookie) is killed; the new one starts empty."""
    queue = f"faults.leftover.{unique}"
    publish_confirmed(rabbit_node.url, queue, "stale")
    leftover_pid = rabbit_node.pid
    fresh = RabbitNode(rabbit_node.index, tmp_path)
    try:
        fresh.start()
        fresh.wait_ready()
        assert not pid_alive(leftover_pid)
        assert fresh.pid != leftover_pid
        assert queue not in fresh.ctl("list_queues", "name")
    finally:
        fresh.stop()
    assert not fresh.running


def test_cluster_has_three_running_nodes(rabbit_cluster: RabbitCluster) -> None:
    assert rabbit_cluster.running_nodes() == ["bbottest1@localhost", "bbottest2@localhost", "bbottest3@localhost"]
    assert [int(u.split(":")[-1].rstrip("/")) for u in rabbit_cluster.urls] == [5673, 5674, 5675]
    assert rabbit_cluster.url == ";".join(rabbit_cluster.urls)
    assert rabbit_cluster.node(2).port == 5674
    with pytest.raises(KeyError, match="no node 9"):
        rabbit_cluster.node(9)


def test_leader_sigkill_fails_over_without_losing_confirmed_message(
        rabbit_cluster: RabbitCluster, unique: str) -> None:
    queue = f"faults.failover.{unique}"
    publish_confirmed(rabbit_cluster.first.url, queue, "confirmed before the kill")
    leader = rabbit_cluster.leader_of(queue)
    # So the killed node's member comes back intact when the next test restarts it.
    leader.wait_quorum_member_saved(queue)

    started = time.monotonic()
    leader.kill()
    new_leader = rabbit_cluster.wait_new_leader(queue, leader, timeout=FAILOVER_DEADLINE)
    failover = time.monotonic() - started

    assert new_leader is not leader
    assert new_leader.running and not leader.running
    assert failover < FAILOVER_DEADLINE
    # The dead node's URL may come first: kombu's failover moves on to a live one.
    others = [n for n in rabbit_cluster.nodes if n is not leader]
    msg, served_by = get_one(";".join([leader.url, *(n.url for n in others)]), queue)
    assert msg.payload == "confirmed before the kill"
    assert f":{leader.port}/" not in served_by


def test_cluster_is_whole_again_after_a_kill(rabbit_cluster: RabbitCluster, unique: str) -> None:
    """Runs after the failover test: the autouse fixture restarted the killed node and it rejoined."""
    assert all(n.running for n in rabbit_cluster.nodes)
    assert len(rabbit_cluster.running_nodes()) == 3
    queue = f"faults.whole.{unique}"
    for node in rabbit_cluster.nodes:
        publish_confirmed(node.url, queue, node.name)
    got = sorted(get_one(rabbit_cluster.url, queue)[0].payload for _ in rabbit_cluster.nodes)
    assert got == sorted(n.name for n in rabbit_cluster.nodes)
