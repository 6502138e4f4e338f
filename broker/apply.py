"""Put a ``Topology`` on a RabbitMQ broker, or check a broker against one.

Exchanges, queues and bindings go over AMQP with pika, as an administrator (any user with
full permissions on the vhost); the vhost comes from the topology, not the URL's path.

Users, permissions and vhosts have no AMQP operations: ``apply_users`` and ``verify_users``
run ``rabbitmqctl``, the CLI of the node *on this host* (run as root or as the rabbitmq
user: it needs the node's Erlang cookie). ``BBOT_RABBITMQCTL`` replaces the command, e.g.
``docker exec rabbitmq rabbitmqctl``. ``verify`` also reads queue arguments and bindings
through it when it is there; without it, arguments are checked by redeclaring (which does not
change an existing queue) and bindings are not checked.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from broker.topology import Topology

APPLY = "run `bbot broker apply`"
USERS = "run `bbot broker users`"


class BrokerError(Exception):
    """The broker (or rabbitmqctl) refused or could not be reached; the message says what to do."""


@dataclass(frozen=True)
class Difference:
    """One way the broker differs from the topology, and how to fix it."""

    what: str  # e.g. "queue 'bbot.tasks.x'"
    problem: str  # e.g. "is missing"
    fix: str

    def __str__(self) -> str:
        return f"{self.what} {self.problem}; {self.fix}"


class Rabbitmqctl:
    """The local ``rabbitmqctl`` (or ``$BBOT_RABBITMQCTL``)."""

    def __init__(self, command: Sequence[str]) -> None:
        self.command = list(command)

    @classmethod
    def find(cls) -> Rabbitmqctl | None:
        configured = os.environ.get("BBOT_RABBITMQCTL")
        if configured:
            return cls(shlex.split(configured))
        found = shutil.which("rabbitmqctl")
        return cls([found]) if found else None

    @classmethod
    def require(cls) -> Rabbitmqctl:
        ctl = cls.find()
        if ctl is None:
            raise BrokerError("rabbitmqctl is not on PATH: run this on a broker node or set BBOT_RABBITMQCTL "
                              "to a command running it (e.g. 'docker exec rabbitmq rabbitmqctl')")
        return ctl

    def run(self, *args: str, stdin: str | None = None) -> str:
        """Run one command; ``stdin`` carries passwords, which must not show in the process list."""
        try:
            done = subprocess.run([*self.command, "-q", *args], input=stdin, capture_output=True,
                                  text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BrokerError(f"cannot run {shlex.join(self.command)}: {e}") from e
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            raise BrokerError(f"`rabbitmqctl {args[0]}` failed ({done.returncode}): {detail}")
        return done.stdout

    def rows(self, *args: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.run(*args, "--formatter", "json") or "[]")
        return rows


@contextmanager
def _connection(url: str, vhost: str) -> Iterator[pika.BlockingConnection]:
    parameters = pika.URLParameters(url)
    parameters.virtual_host = vhost
    where = f"{parameters.host}:{parameters.port}"  # not the URL: it may hold a password
    try:
        connection = pika.BlockingConnection(parameters)
    except pika.exceptions.ProbableAccessDeniedError as e:
        raise BrokerError(
            f"{where} refused vhost '{vhost}' to user '{parameters.credentials.username}' ({e}): create "
            f"the vhost (`bbot broker users` or `rabbitmqctl add_vhost {vhost}`) and give the user "
            f"every permission on it (`rabbitmqctl set_permissions -p {vhost} USER '.*' '.*' '.*'`)"
        ) from e
    except pika.exceptions.ProbableAuthenticationError as e:
        raise BrokerError(f"{where} refused the user name or password in --url ({e})") from e
    except pika.exceptions.AMQPConnectionError as e:
        raise BrokerError(f"cannot connect to RabbitMQ at {where} ({e!r}): is it running? is --url right?") \
            from e
    try:
        yield connection
    finally:
        if connection.is_open:
            connection.close()


class _Channels:
    """A channel that is reopened after each error that closed it."""

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self.connection = connection
        self.channel = connection.channel()

    def attempt(self, method: str, *args: Any, **kwargs: Any) -> pika.exceptions.ChannelClosedByBroker | None:
        """Call the channel's ``method``; the broker's refusal, or None if it succeeded."""
        try:
            getattr(self.channel, method)(*args, **kwargs)
        except pika.exceptions.ChannelClosedByBroker as e:
            self.channel = self.connection.channel()
            return e
        return None


def apply(url: str, topology: Topology) -> None:
    """Declare every exchange, queue and binding; safe to run again. Raises BrokerError listing
    the entities that exist with other settings (they must be deleted first)."""
    problems: list[str] = []
    with _connection(url, topology.vhost) as connection:
        channels = _Channels(connection)
        for x in topology.exchanges():
            refused = channels.attempt("exchange_declare", x.name, x.type, durable=x.durable)
            if refused:
                problems.append(f"exchange '{x.name}': {refused.reply_text}")
        for q in topology.queues():
            refused = channels.attempt("queue_declare", q.name, durable=q.durable, arguments=q.arguments)
            if refused:
                problems.append(f"queue '{q.name}': {refused.reply_text}")
        for b in topology.bindings():
            channels.attempt("queue_bind", b.queue, b.exchange, routing_key=b.routing_key)
    if problems:
        raise BrokerError(
            "these exist with other settings, which RabbitMQ cannot change in place; delete them (a queue's "
            "messages go with it) and apply again:\n" + "\n".join(f"  {p}" for p in problems))


def verify(url: str, topology: Topology, *, use_rabbitmqctl: bool | None = None) -> list[Difference]:
    """How the broker differs from ``topology``; never changes the broker.

    ``use_rabbitmqctl``: None uses it when it is found, True requires it, False never uses it.
    """
    ctl = _rabbitmqctl(use_rabbitmqctl)
    vhost = topology.vhost
    differences: list[Difference] = []
    with _connection(url, vhost) as connection:
        channels = _Channels(connection)
        exchanges = [x for x in topology.exchanges() if not _missing(
            differences, f"exchange '{x.name}'",
            channels.attempt("exchange_declare", x.name, passive=True))]
        queues = [q for q in topology.queues() if not _missing(
            differences, f"queue '{q.name}'",
            channels.attempt("queue_declare", q.name, passive=True))]
        if ctl is None:
            # Redeclaring what exists with what we expect is refused if they differ, and is
            # otherwise a no-op: nothing changes either way.
            for x in exchanges:
                refused = channels.attempt("exchange_declare", x.name, x.type, durable=x.durable)
                if refused:
                    differences.append(Difference(f"exchange '{x.name}'", f"differs: {refused.reply_text}",
                                                  _recreate_exchange(x.name)))
            for q in queues:
                refused = channels.attempt("queue_declare", q.name, durable=q.durable, arguments=q.arguments)
                if refused:
                    differences.append(Difference(f"queue '{q.name}'", f"differs: {refused.reply_text}",
                                                  _recreate_queue(vhost, q.name)))
            return differences
    actual_x = {r["name"]: r for r in ctl.rows("list_exchanges", "-p", vhost, "name", "type", "durable")}
    for x in exchanges:
        row = actual_x.get(x.name)
        if row and (row["type"], row["durable"]) != (x.type, x.durable):
            differences.append(Difference(
                f"exchange '{x.name}'", f"is {_durable(row['durable'])} {row['type']}, "
                f"expected {_durable(x.durable)} {x.type}", _recreate_exchange(x.name)))
    actual_q = {r["name"]: r for r in ctl.rows("list_queues", "-p", vhost, "name", "durable", "arguments")}
    for q in queues:
        row = actual_q.get(q.name)
        if row is None:
            continue
        arguments = {key: value for key, _type, value in row["arguments"]}
        if row["durable"] != q.durable or arguments != q.arguments:
            differences.append(Difference(
                f"queue '{q.name}'", f"is {_durable(row['durable'])} with arguments {arguments}, "
                f"expected {_durable(q.durable)} with {q.arguments}", _recreate_queue(vhost, q.name)))
    actual_b = {(r["source_name"], r["destination_name"], r["routing_key"])
                for r in ctl.rows("list_bindings", "-p", vhost, "source_name", "destination_name",
                                  "destination_kind", "routing_key")
                if r["destination_kind"] == "queue"}
    for b in topology.bindings():
        if (b.exchange, b.queue, b.routing_key) not in actual_b:
            differences.append(Difference(f"binding '{b.exchange}' -> '{b.queue}' (key '{b.routing_key}')",
                                          "is missing", APPLY))
    return differences


def _missing(differences: list[Difference], what: str,
             refused: pika.exceptions.ChannelClosedByBroker | None) -> bool:
    if refused is None:
        return False
    if refused.reply_code == 404:
        differences.append(Difference(what, "is missing", APPLY))
    else:
        differences.append(Difference(what, f"cannot be checked: {refused.reply_text}",
                                      "give the --url user every permission on the vhost"))
    return True


def _durable(durable: bool) -> str:
    return "durable" if durable else "transient"


def _recreate_queue(vhost: str, name: str) -> str:
    return (f"delete it (`rabbitmqctl delete_queue -p {vhost} {name}`; its messages go with it) "
            f"and {APPLY}")


def _recreate_exchange(name: str) -> str:
    return f"delete it (an AMQP exchange.delete, or `rabbitmqadmin delete exchange name={name}`) and {APPLY}"


def _rabbitmqctl(use: bool | None) -> Rabbitmqctl | None:
    if use is False:
        return None
    return Rabbitmqctl.require() if use else Rabbitmqctl.find()


def apply_users(topology: Topology, passwords: Mapping[str, str], *, ctl: Rabbitmqctl | None = None) -> None:
    """Create the vhost and each user (or set its password), and set its permissions and tags.

    Needs rabbitmqctl on this host; passwords go to it on stdin.
    """
    ctl = ctl or Rabbitmqctl.require()
    users = topology.users()
    missing = [u.name for u in users if u.name not in passwords]
    if missing:
        raise ValueError(f"no password for broker user(s) {', '.join(missing)}")
    vhost = topology.vhost
    ctl.run("add_vhost", vhost)  # succeeds when it exists
    existing = {row["user"] for row in ctl.rows("list_users")}
    for u in users:
        if u.name in existing:
            ctl.run("change_password", u.name, stdin=passwords[u.name])
            ctl.run("set_user_tags", u.name)  # none, as a new user has: no management UI
        else:
            ctl.run("add_user", u.name, stdin=passwords[u.name])
        ctl.run("set_permissions", "-p", vhost, u.name, u.configure, u.write, u.read)


def verify_users(topology: Topology, *, ctl: Rabbitmqctl | None = None) -> list[Difference]:
    """Missing vhost, missing users, and permissions that are not exactly the topology's."""
    ctl = ctl or Rabbitmqctl.require()
    vhost = topology.vhost
    if vhost not in {row["name"] for row in ctl.rows("list_vhosts", "name")}:
        return [Difference(f"vhost '{vhost}'", "is missing", USERS)]
    users = {row["user"] for row in ctl.rows("list_users")}
    granted = {row["user"]: row for row in ctl.rows("list_permissions", "-p", vhost)}
    differences: list[Difference] = []
    for u in topology.users():
        if u.name not in users:
            differences.append(Difference(f"user '{u.name}'", "is missing", USERS))
            continue
        row = granted.get(u.name)
        expected = f"configure '{u.configure}' write '{u.write}' read '{u.read}'"
        if row is None:
            differences.append(Difference(f"user '{u.name}'", f"has no permissions on vhost '{vhost}', "
                                          f"expected {expected}", USERS))
            continue
        actual = f"configure '{row['configure']}' write '{row['write']}' read '{row['read']}'"
        if actual != expected:
            differences.append(Difference(f"user '{u.name}'", f"has permissions {actual} on vhost '{vhost}', "
                                          f"expected {expected}", USERS))
    return differences
