"""Messaging on kombu: the same code on RabbitMQ (``amqp://``) and in memory (``memory://``).

Bodies are manifests (``text/manifest``), sent as they are: kombu does not
serialize a body whose content type is given. Publishing retries through
kombu's own ``retry``/``retry_policy`` (reconnecting, and failing over across
``;``-separated URLs), with publisher confirms on RabbitMQ.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

from kombu import Connection, Exchange, Producer, Queue
from kombu.mixins import ConsumerMixin

from bbot.bus import names

MANIFEST_CONTENT_TYPE = "text/manifest"
RETRY_POLICY: dict[str, Any] = {
    "max_retries": 30,  # about a minute and a half of broker outage before giving up
    "interval_start": 0.1,
    "interval_step": 0.5,
    "interval_max": 3.0,
}


def connect(url: str) -> Connection:
    """A connection for ``url`` (``;`` separates failover alternatives)."""
    if url.startswith("memory://"):
        # In one process: poll often, the queues are plain Python objects.
        # (An explicit host silences kombu's "no hostname" warning; memory ignores it.)
        return Connection("memory://localhost/", transport_options={"polling_interval": 0.01})
    return Connection(
        url,
        heartbeat=30,
        transport_options={"confirm_publish": True, "max_retries": 3},
        failover_strategy="round-robin",
        connect_timeout=5,
    )


def tasks_exchange() -> Exchange:
    return Exchange(names.TASKS_EXCHANGE, type="direct", durable=True)


def results_exchange() -> Exchange:
    return Exchange(names.RESULTS_EXCHANGE, type="direct", durable=True)


def announce_exchange() -> Exchange:
    return Exchange(names.ANNOUNCE_EXCHANGE, type="fanout", durable=True)


def task_queue(machine_name: str) -> Queue:
    return Queue(
        names.task_queue(machine_name),
        exchange=tasks_exchange(),
        routing_key=names.machine_key(machine_name),
        durable=True,
    )


def results_queue(controller_name: str) -> Queue:
    name = names.results_queue(controller_name)
    return Queue(name, exchange=results_exchange(), routing_key=name, durable=True)


def announce_queue(controller_name: str) -> Queue:
    # Announcements are state, refreshed on every heartbeat: no need to keep old ones.
    return Queue(
        names.announce_queue(controller_name),
        exchange=announce_exchange(),
        durable=False,
        auto_delete=True,
        message_ttl=60,
    )


def body_text(body: Any) -> str:
    """A message body as text, whatever the transport handed over."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body).decode("utf-8")
    return str(body)


class Publisher:
    """A thread-safe publisher on its own connection (kombu connections are not thread-safe)."""

    def __init__(self, url: str) -> None:
        self._connection = connect(url)
        self._lock = threading.Lock()
        self._producer: Producer | None = None

    def publish(
        self,
        body: str,
        *,
        exchange: Exchange,
        routing_key: str,
        declare: Sequence[Queue] = (),
        reply_to: str | None = None,
        correlation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        persistent: bool = True,
    ) -> None:
        with self._lock:
            if self._producer is None:
                self._producer = Producer(self._connection)
            self._producer.publish(
                body.encode("utf-8"),
                exchange=exchange,
                routing_key=routing_key,
                declare=[exchange, *declare],
                content_type=MANIFEST_CONTENT_TYPE,
                content_encoding="utf-8",
                delivery_mode=2 if persistent else 1,
                reply_to=reply_to,
                correlation_id=correlation_id,
                headers=dict(headers or {}),
                retry=True,
                retry_policy=RETRY_POLICY,
            )

    def close(self) -> None:
        with self._lock:
            self._producer = None
            self._connection.release()


class ConsumerLoop(ConsumerMixin):  # type: ignore[misc]
    """kombu's ConsumerMixin on its own connection: it reconnects (with failover) by itself.

    Subclasses give ``get_consumers``; ``run()`` blocks until ``should_stop`` is set,
    then releases the connection.
    """

    # How often the loop wakes to check ``should_stop`` and run ``on_iteration``.
    SAFETY_INTERVAL = 0.1

    def __init__(self, url: str) -> None:
        self.connection = connect(url)

    def run(self, _tokens: int = 1, **kwargs: Any) -> None:
        try:
            super().run(_tokens, **kwargs)
        finally:
            self.connection.release()

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("safety_interval", self.SAFETY_INTERVAL)
        return super().consume(*args, **kwargs)
