"""The users' permissions, enforced by the real broker: each role can do its work and no more."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bbot.bus import names
from broker.apply import apply, apply_users
from broker.topology import (
    Topology,
    announce_queue_spec,
    dead_letter_queue_spec,
    results_queue_spec,
    task_queue_spec,
)
from tests.broker.amqp import ACCESS_REFUSED, Channel, open_channel, refusal, user_url

Operation = Callable[[Channel], object]


@pytest.fixture
def provisioned(rabbitmq: str, topology: Topology) -> dict[str, str]:
    """The topology and its users on the broker; each user's AMQP URL by role."""
    apply(rabbitmq, topology)
    controller, agent = topology.users()
    apply_users(topology, {controller.name: "c-secret", agent.name: "a-secret"})
    return {"controller": user_url(controller.name, "c-secret"), "agent": user_url(agent.name, "a-secret")}


def publish(exchange: str, key: str = "") -> Operation:
    return lambda ch: ch.basic_publish(exchange, key, b"x")


def get(queue: str) -> Operation:
    return lambda ch: ch.basic_get(queue, auto_ack=True)


def assert_refused(url: str, vhost: str, operations: dict[str, Operation]) -> None:
    allowed = [label for label, op in operations.items() if refusal(url, vhost, op) != ACCESS_REFUSED]
    assert allowed == [], f"not refused: {allowed}"


def test_agent_takes_tasks_and_sends_results_and_announcements_only(
        rabbitmq: str, topology: Topology, provisioned: dict[str, str]) -> None:
    vhost, agent = topology.vhost, provisioned["agent"]
    task = task_queue_spec(topology.machines[0])
    results = results_queue_spec(topology.controllers[0])
    announce = announce_queue_spec(topology.controllers[0])
    with open_channel(rabbitmq, vhost) as admin:
        admin.basic_publish(names.TASKS_EXCHANGE, task.routing_key, b"a task")
        # What a controller declares at run time (not exclusive here: another connection reads it).
        admin.queue_declare(announce.name, durable=False, arguments=announce.arguments)
        admin.queue_bind(announce.name, announce.exchange, announce.routing_key)

    with open_channel(agent, vhost) as ch:
        assert ch.basic_get(task.name, auto_ack=True)[2] == b"a task"
        ch.basic_publish(names.RESULTS_EXCHANGE, results.routing_key, b"a result")
        ch.basic_publish(names.ANNOUNCE_EXCHANGE, "", b"an announcement")
        ch.queue_declare(task.name, passive=True)  # checking that a queue is there needs nothing
    with open_channel(rabbitmq, vhost) as admin:
        assert admin.basic_get(results.name, auto_ack=True)[2] == b"a result"
        assert admin.basic_get(announce.name, auto_ack=True)[2] == b"an announcement"

    assert_refused(agent, vhost, {
        "publish a task": publish(names.TASKS_EXCHANGE, task.routing_key),
        "publish to a queue by name": publish("", task.name),
        "consume results": get(results.name),
        "consume announcements": get(announce.name),
        "consume dead letters": get(dead_letter_queue_spec().name),
        "declare a queue": lambda ch: ch.queue_declare("bbot.tasks.new", durable=True),
        "redeclare its task queue": lambda ch: ch.queue_declare(task.name, durable=True, arguments=task.arguments),
        "declare an exchange": lambda ch: ch.exchange_declare(names.RESULTS_EXCHANGE, "direct", durable=True),
        "bind": lambda ch: ch.queue_bind(task.name, names.TASKS_EXCHANGE, "other"),
        "delete a queue": lambda ch: ch.queue_delete(task.name),
    })


def test_controller_sends_tasks_and_reads_its_own_queues_only(
        rabbitmq: str, topology: Topology, provisioned: dict[str, str]) -> None:
    vhost, controller = topology.vhost, provisioned["controller"]
    name = topology.controllers[0]
    task = task_queue_spec(topology.machines[0])
    new_machine = task_queue_spec(f"new-{name}")
    other = results_queue_spec(f"other-{name}")
    with open_channel(rabbitmq, vhost) as admin:
        admin.queue_declare(other.name, durable=True, arguments=other.arguments)
        admin.queue_bind(other.name, other.exchange, other.routing_key)

    with open_channel(controller, vhost) as ch:
        for spec in (results_queue_spec(name), announce_queue_spec(name)):  # what the runtime declares
            ch.queue_declare(spec.name, durable=spec.durable, exclusive=spec.exclusive, arguments=spec.arguments)
            ch.queue_bind(spec.name, spec.exchange, spec.routing_key)
            ch.basic_get(spec.name, auto_ack=True)
        # A machine name no one provisioned: the controller declares its queue before the first task.
        ch.queue_declare(new_machine.name, durable=True, arguments=new_machine.arguments)
        ch.queue_bind(new_machine.name, new_machine.exchange, new_machine.routing_key)
        ch.basic_publish(names.TASKS_EXCHANGE, task.routing_key, b"a task")
        ch.basic_get(dead_letter_queue_spec().name, auto_ack=True)
        ch.exchange_declare(names.TASKS_EXCHANGE, passive=True)
        # Declaring a queue with a dead-letter exchange needs read on it, so a controller that
        # declares task queues can also consume them: RabbitMQ has no narrower grant for that.
        assert ch.basic_get(task.name, auto_ack=True)[2] == b"a task"
        # Its HTTP shim passes the result of a task it handed out over HTTP to the controller
        # whose task it was (here another one).
        ch.basic_publish(names.RESULTS_EXCHANGE, other.routing_key, b"a result from an HTTP agent")
    with open_channel(rabbitmq, vhost) as admin:
        assert admin.basic_get(other.name, auto_ack=True)[2] == b"a result from an HTTP agent"

    assert_refused(controller, vhost, {
        "publish an announcement": publish(names.ANNOUNCE_EXCHANGE),
        "publish to a queue by name": publish("", task.name),
        "consume another controller's results": get(other.name),
        "declare another controller's queue": lambda ch: ch.queue_declare(
            announce_queue_spec(f"other-{name}").name, durable=True),
        "declare an unrelated queue": lambda ch: ch.queue_declare("bbot.something", durable=True),
        "declare an exchange": lambda ch: ch.exchange_declare(names.TASKS_EXCHANGE, "direct", durable=True),
        "delete an exchange": lambda ch: ch.exchange_delete(names.TASKS_EXCHANGE),
        "bind another controller's queue": lambda ch: ch.queue_bind(other.name, names.RESULTS_EXCHANGE, "x"),
    })
