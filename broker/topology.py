"""bbot's RabbitMQ topology as data: exchanges, queues, bindings, users and their permissions.

No I/O here. ``broker.apply`` puts a ``Topology`` on a broker (or checks one against it);
``definitions`` renders it as a definitions document for ``rabbitmqctl import_definitions``
or the management plugin. The runtime (``bbot.bus``) takes its queue arguments from the
``*_queue_spec`` functions, so they are written once.

Permissions are RabbitMQ's three regular expressions per user and vhost, matched against
exchange and queue names alike (https://www.rabbitmq.com/access-control.html):

- configure: declare or delete the resource (a passive declare needs nothing);
- write: publish to an exchange; be the *destination* of ``queue.bind``;
- read: consume from a queue; be the *source* exchange of ``queue.bind``.

Declaring a queue with ``x-dead-letter-exchange`` additionally needs read on that queue and
write on the dead-letter exchange (RabbitMQ stops a user from leaking messages into an
exchange it could not publish to). Declaring an exchange that exists, without ``passive``,
still needs configure: users below may only declare exchanges passively.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bbot.bus import names

# Bytes: AMQP short strings cap queue names and routing keys.
_MAX_NAME = 255
# Controller and agent names appear in queue and user names: the same alphabet as machine names.
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
# The version the definitions document claims; import accepts documents from older nodes.
RABBIT_VERSION = "3.10.0"


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str
    durable: bool = True


@dataclass(frozen=True)
class QueueSpec:
    name: str
    durable: bool
    arguments: dict[str, Any]
    exchange: str  # the exchange this queue is bound to
    routing_key: str
    # Queues of one connection (deleted with it): declared at run time, never provisioned.
    exclusive: bool = False


@dataclass(frozen=True)
class UserSpec:
    name: str
    configure: str
    write: str
    read: str


def exchanges() -> list[ExchangeSpec]:
    return [
        ExchangeSpec(names.TASKS_EXCHANGE, "direct"),
        ExchangeSpec(names.RESULTS_EXCHANGE, "direct"),
        ExchangeSpec(names.ANNOUNCE_EXCHANGE, "fanout"),
        ExchangeSpec(names.DEAD_LETTER_EXCHANGE, "fanout"),
    ]


def task_queue_spec(machine: str) -> QueueSpec:
    """One quorum queue per machine name: a task killing every consumer is dead-lettered, not looped."""
    return QueueSpec(
        names.task_queue(machine),
        durable=True,
        arguments={
            names.QUEUE_TYPE_ARG: "quorum",
            names.DELIVERY_LIMIT_ARG: names.DELIVERY_LIMIT,
            names.DEAD_LETTER_EXCHANGE_ARG: names.DEAD_LETTER_EXCHANGE,
        },
        exchange=names.TASKS_EXCHANGE,
        routing_key=names.machine_key(machine),
    )


def results_queue_spec(controller: str) -> QueueSpec:
    check_name("controller", controller)
    return QueueSpec(
        names.results_queue(controller),
        durable=True,
        arguments={names.QUEUE_TYPE_ARG: "quorum"},
        exchange=names.RESULTS_EXCHANGE,
        routing_key=names.results_key(controller),
    )


def announce_queue_spec(controller: str) -> QueueSpec:
    """Announcements are state refreshed on every heartbeat: the controller's own, short-lived queue.

    Exclusive to the controller's connection and not durable, so it lives on the
    node the controller is connected to: when that node dies, the controller
    reconnects elsewhere and declares it again (a durable classic queue would
    stay unavailable with its home node). Old ones expire; a backlog is capped.
    """
    check_name("controller", controller)
    return QueueSpec(
        names.announce_queue(controller),
        durable=False,
        arguments={names.MESSAGE_TTL_ARG: names.ANNOUNCE_TTL_MS,
                   names.MAX_LENGTH_ARG: names.ANNOUNCE_MAX_LENGTH},
        exchange=names.ANNOUNCE_EXCHANGE,
        routing_key="",
        exclusive=True,
    )


def dead_letter_queue_spec() -> QueueSpec:
    return QueueSpec(
        names.DEAD_LETTER_QUEUE,
        durable=True,
        arguments={names.QUEUE_TYPE_ARG: "quorum"},
        exchange=names.DEAD_LETTER_EXCHANGE,
        routing_key="",
    )


def controller_user(controller: str) -> str:
    return f"bbot-controller-{controller}"


def agent_user(agent: str) -> str:
    return f"bbot-agent-{agent}"


def _any_of(*patterns: str) -> str:
    return "^(?:" + "|".join(patterns) + ")$"


_TASK_QUEUES = re.escape(names.task_queue("x")[: -len("x")]) + ".+"  # bbot\.tasks\..+


def controller_permissions(controller: str, user: str | None = None) -> UserSpec:
    own = [re.escape(names.results_queue(controller)), re.escape(names.announce_queue(controller))]
    return UserSpec(
        user or controller_user(controller),
        # Its own queues, and task queues: it declares the queue of a machine name it
        # has not seen before publishing the first task for it.
        configure=_any_of(*own, _TASK_QUEUES),
        # Publish tasks; bind its own queues and new task queues (bind needs write on the
        # queue); declaring a task queue with a dead-letter exchange needs write on that exchange.
        # Publish results: its HTTP shim passes on those of tasks handed out over HTTP, to the
        # controller whose task it was.
        write=_any_of(re.escape(names.TASKS_EXCHANGE), re.escape(names.RESULTS_EXCHANGE),
                      re.escape(names.DEAD_LETTER_EXCHANGE), *own, _TASK_QUEUES),
        # Consume its own queues and the dead letters; bind from the three exchanges (bind
        # needs read on the source exchange); declaring a task queue with a dead-letter
        # exchange needs read on that queue, so the controller could consume tasks too.
        read=_any_of(*own, re.escape(names.DEAD_LETTER_QUEUE), re.escape(names.TASKS_EXCHANGE),
                     re.escape(names.RESULTS_EXCHANGE), re.escape(names.ANNOUNCE_EXCHANGE), _TASK_QUEUES),
    )


def agent_permissions(agent: str, user: str | None = None) -> UserSpec:
    return UserSpec(
        user or agent_user(agent),
        configure="^$",  # declares nothing: everything it uses exists before it starts
        write=_any_of(re.escape(names.RESULTS_EXCHANGE), re.escape(names.ANNOUNCE_EXCHANGE)),
        read="^" + _TASK_QUEUES + "$",  # consume tasks, any machine name
    )


def check_name(kind: str, name: str) -> None:
    """ValueError unless ``name`` (of a controller or agent) can be part of queue and user names."""
    if not _NAME_RE.match(name):
        raise ValueError(f"{kind} name '{name}' cannot be part of a queue name: "
                         "use letters, digits, '_', '.', '+' and '-' only")


@dataclass(frozen=True)
class Binding:
    exchange: str
    queue: str
    routing_key: str


@dataclass(frozen=True)
class Topology:
    """Everything bbot needs on one vhost of a broker."""

    vhost: str = "/"
    machines: tuple[str, ...] = ()
    controllers: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    # Broker user names other than bbot-controller-<name> / bbot-agent-<name>, by that default.
    user_names: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.vhost:
            raise ValueError("vhost is empty: use '/' for the default vhost")
        for machine in self.machines:
            names.machine_key(machine)
        for kind, values in (("controller", self.controllers), ("agent", self.agents)):
            for value in values:
                check_name(kind, value)
        for queue in self.queues():
            if len(queue.name.encode()) > _MAX_NAME:
                raise ValueError(f"queue name '{queue.name}' is longer than {_MAX_NAME} bytes: "
                                 "use a shorter machine or controller name")

    @classmethod
    def build(cls, *, vhost: str = "/", machines: Iterable[str] = (), controllers: Iterable[str] = (),
              agents: Iterable[str] = (), user_names: Mapping[str, str] | None = None) -> Topology:
        """A topology from names in any order, duplicates dropped."""
        return cls(vhost, _unique(machines), _unique(controllers), _unique(agents), dict(user_names or {}))

    def exchanges(self) -> list[ExchangeSpec]:
        return exchanges()

    def queues(self) -> list[QueueSpec]:
        return [
            *(task_queue_spec(m) for m in self.machines),
            # (Announcement queues are declared by their controllers at run time.)
            *(results_queue_spec(c) for c in self.controllers),
            dead_letter_queue_spec(),
        ]

    def bindings(self) -> list[Binding]:
        return [Binding(q.exchange, q.name, q.routing_key) for q in self.queues()]

    def users(self) -> list[UserSpec]:
        return [
            *(controller_permissions(c, self.user_names.get(controller_user(c))) for c in self.controllers),
            *(agent_permissions(a, self.user_names.get(agent_user(a))) for a in self.agents),
        ]


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode("ascii")


def definitions(topology: Topology, passwords: Mapping[str, str]) -> dict[str, Any]:
    """A definitions document for the whole topology, users included.

    ``passwords`` maps each user name to its password; a missing one is a ValueError
    naming the users.
    """
    users = topology.users()
    missing = [u.name for u in users if u.name not in passwords]
    if missing:
        raise ValueError(f"no password for broker user(s) {', '.join(missing)}: "
                         "give them in --password-file or the environment")
    vhost = topology.vhost
    return {
        "rabbit_version": RABBIT_VERSION,
        "users": [{"name": u.name, "password_hash": password_hash(passwords[u.name]),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""} for u in users],
        "vhosts": [{"name": vhost}],
        "permissions": [{"user": u.name, "vhost": vhost, "configure": u.configure, "write": u.write,
                         "read": u.read} for u in users],
        "exchanges": [{"name": e.name, "vhost": vhost, "type": e.type, "durable": e.durable,
                       "auto_delete": False, "internal": False, "arguments": {}}
                      for e in topology.exchanges()],
        "queues": [{"name": q.name, "vhost": vhost, "durable": q.durable, "auto_delete": False,
                    "arguments": q.arguments} for q in topology.queues()],
        "bindings": [{"source": b.exchange, "vhost": vhost, "destination": b.queue,
                      "destination_type": "queue", "routing_key": b.routing_key, "arguments": {}}
                     for b in topology.bindings()],
    }
