"""Applying and verifying the topology on the real broker, each test on a vhost of its own."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import pytest

from broker.apply import BrokerError, Difference, Rabbitmqctl, apply, apply_users, verify, verify_users
from broker.topology import Topology, definitions, task_queue_spec
from tests.broker.amqp import open_channel


def wait_for(differences: Callable[[], list[Difference]], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while found := differences():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}: " + "; ".join(map(str, found)))
        time.sleep(0.1)


def queues(ctl: Rabbitmqctl, vhost: str) -> dict[str, str]:
    return {r["name"]: r["type"] for r in ctl.rows("list_queues", "-p", vhost, "name", "type")}


def test_apply_then_verify_finds_no_difference_and_apply_is_idempotent(
        rabbitmq: str, ctl: Rabbitmqctl, topology: Topology) -> None:
    apply(rabbitmq, topology)
    apply(rabbitmq, topology)
    assert verify(rabbitmq, topology, use_rabbitmqctl=True) == []
    assert verify(rabbitmq, topology, use_rabbitmqctl=False) == []
    assert queues(ctl, topology.vhost) == {q.name: "quorum" if "x-queue-type" in q.arguments else "classic"
                                           for q in topology.queues()}


@pytest.mark.parametrize("use_rabbitmqctl", [True, False])
def test_verify_reports_a_missing_queue_and_does_not_create_it(
        rabbitmq: str, ctl: Rabbitmqctl, topology: Topology, use_rabbitmqctl: bool) -> None:
    apply(rabbitmq, topology)
    gone = topology.queues()[0].name
    ctl.run("delete_queue", "-p", topology.vhost, gone)
    differences = [str(d) for d in verify(rabbitmq, topology, use_rabbitmqctl=use_rabbitmqctl)]
    assert f"queue '{gone}' is missing; run `bbot broker apply`" in differences
    assert gone not in queues(ctl, topology.vhost)


@pytest.mark.parametrize("use_rabbitmqctl", [True, False])
def test_verify_reports_a_queue_with_other_arguments_and_leaves_it(
        rabbitmq: str, ctl: Rabbitmqctl, topology: Topology, use_rabbitmqctl: bool) -> None:
    apply(rabbitmq, topology)
    spec = task_queue_spec(topology.machines[0])
    ctl.run("delete_queue", "-p", topology.vhost, spec.name)
    with open_channel(rabbitmq, topology.vhost) as ch:
        ch.queue_declare(spec.name, durable=True)  # classic, no delivery limit
        ch.queue_bind(spec.name, spec.exchange, spec.routing_key)
    differences = verify(rabbitmq, topology, use_rabbitmqctl=use_rabbitmqctl)
    assert [d.what for d in differences] == [f"queue '{spec.name}'"]
    assert "x-queue-type" in differences[0].problem or "inequivalent arg" in differences[0].problem
    assert f"rabbitmqctl delete_queue -p {topology.vhost} {spec.name}" in differences[0].fix
    assert queues(ctl, topology.vhost)[spec.name] == "classic"
    with pytest.raises(BrokerError, match=f"queue '{spec.name}'.*inequivalent arg"):
        apply(rabbitmq, topology)


def test_verify_reports_a_missing_binding(rabbitmq: str, topology: Topology) -> None:
    apply(rabbitmq, topology)
    spec = task_queue_spec(topology.machines[0])
    with open_channel(rabbitmq, topology.vhost) as ch:
        ch.queue_unbind(spec.name, spec.exchange, spec.routing_key)
    assert [str(d) for d in verify(rabbitmq, topology, use_rabbitmqctl=True)] == [
        f"binding 'bbot.tasks' -> '{spec.name}' (key '{spec.routing_key}') is missing; run `bbot broker apply`"]


def test_a_vhost_that_does_not_exist_is_named_with_the_fix(rabbitmq: str, fresh_vhost: str) -> None:
    with pytest.raises(BrokerError, match=f"refused vhost '{fresh_vhost}'.*rabbitmqctl add_vhost {fresh_vhost}"):
        verify(rabbitmq, Topology.build(vhost=fresh_vhost, machines=["m1"]))


def test_definitions_imported_into_a_new_vhost_match_the_topology(
        rabbitmq: str, ctl: Rabbitmqctl, fresh_vhost: str, unique: str) -> None:
    t = Topology.build(vhost=fresh_vhost, machines=[f"m-{unique}"], controllers=[f"c-{unique}"],
                       agents=[f"a-{unique}"])
    passwords = {u.name: f"pw-{u.name}" for u in t.users()}
    try:
        # 3.10 imports a whole-broker document: the vhost, users and permissions come with it.
        # (On stdin: rabbitmqctl runs as the rabbitmq user, who cannot read a root's temporary files.)
        # The import runs on after the command returns: wait for its users, then its queues.
        ctl.run("import_definitions", stdin=json.dumps(definitions(t, passwords)))
        wait_for(lambda: verify_users(t), "the users to be imported")
        ctl.run("set_permissions", "-p", fresh_vhost, "guest", ".*", ".*", ".*")
        wait_for(lambda: verify(rabbitmq, t), "the topology to be imported")
        for user in t.users():
            ctl.run("authenticate_user", user.name, passwords[user.name])
    finally:
        for user in t.users():
            with contextlib.suppress(BrokerError):
                ctl.run("delete_user", user.name)


def test_users_are_created_then_their_drift_is_reported(topology: Topology, ctl: Rabbitmqctl) -> None:
    controller, agent = topology.users()
    apply_users(topology, {controller.name: "one", agent.name: "two"})
    assert verify_users(topology) == []
    apply_users(topology, {controller.name: "one", agent.name: "three"})  # a new password, not a failure
    ctl.run("authenticate_user", agent.name, "three")
    ctl.run("set_permissions", "-p", topology.vhost, agent.name, ".*", ".*", ".*")
    ctl.run("delete_user", controller.name)
    assert sorted(str(d) for d in verify_users(topology)) == sorted([
        f"user '{controller.name}' is missing; run `bbot broker users`",
        f"user '{agent.name}' has permissions configure '.*' write '.*' read '.*' on vhost "
        f"'{topology.vhost}', expected configure '^$' write '{agent.write}' read '{agent.read}'; "
        "run `bbot broker users`",
    ])
