"""Messaging on kombu: the same code on RabbitMQ (``amqp://``) and in memory (``memory://``).

Bodies are manifests (``text/manifest``), sent as they are: kombu does not
serialize a body whose content type is given. Publishing retries through
kombu's own ``retry``/``retry_policy`` (reconnecting, and failing over across
``;``-separated URLs), with publisher confirms on RabbitMQ.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from amqp.method_framing import frame_writer as amqp_frame_writer
from kombu import Connection, Exchange, Queue
from kombu.mixins import ConsumerMixin

from bbot.bus import names
from broker import topology
from broker.topology import QueueSpec

log = logging.getLogger(__name__)

MANIFEST_CONTENT_TYPE = "text/manifest"
HEARTBEAT = 30  # seconds; AMQP heartbeats, so a dead peer is noticed within two of them
CONFIRM_TIMEOUT = 30.0  # seconds to wait for the broker to confirm a batch
RETRY_POLICY: dict[str, Any] = {
    "max_retries": 30,  # about a minute and a half of broker outage before giving up
    "interval_start": 0.1,
    "interval_step": 0.5,
    "interval_max": 3.0,
}


def connect(url: str, heartbeat: float = HEARTBEAT) -> Connection:
    """A connection for ``url`` (``;`` separates failover alternatives)."""
    if url.startswith("memory://"):
        # In one process: poll often, the queues are plain Python objects.
        # (An explicit host silences kombu's "no hostname" warning; memory ignores it.)
        return Connection("memory://localhost/", transport_options={"polling_interval": 0.01})
    # Confirms are handled by Publisher itself (batched), not by kombu's one-by-one option.
    return Connection(
        url,
        heartbeat=heartbeat,
        transport_options={"max_retries": 3},
        failover_strategy="round-robin",
        connect_timeout=5,
    )


# kombu entities built from broker.topology's specs, so names and arguments exist once.
# declare=False: on a broker provisioned by `bbot broker apply`, least-privilege users may
# not declare exchanges or shared queues (no_declare); the topology is already there.

_EXCHANGES = {x.name: x for x in topology.exchanges()}


def _exchange(name: str, *, declare: bool) -> Exchange:
    spec = _EXCHANGES[name]
    return Exchange(spec.name, type=spec.type, durable=spec.durable, no_declare=not declare)


def tasks_exchange(*, declare: bool = True) -> Exchange:
    return _exchange(names.TASKS_EXCHANGE, declare=declare)


def results_exchange(*, declare: bool = True) -> Exchange:
    return _exchange(names.RESULTS_EXCHANGE, declare=declare)


def announce_exchange(*, declare: bool = True) -> Exchange:
    return _exchange(names.ANNOUNCE_EXCHANGE, declare=declare)


def dead_letter_exchange(*, declare: bool = True) -> Exchange:
    return _exchange(names.DEAD_LETTER_EXCHANGE, declare=declare)


def _queue(spec: QueueSpec, *, declare: bool, declare_exchange: bool | None = None) -> Queue:
    exchange = _exchange(spec.exchange, declare=declare if declare_exchange is None else declare_exchange)
    return Queue(spec.name, exchange=exchange, routing_key=spec.routing_key, durable=spec.durable,
                 exclusive=spec.exclusive, auto_delete=spec.exclusive, queue_arguments=dict(spec.arguments),
                 no_declare=not declare)


def task_queue(machine_name: str, *, declare: bool = True) -> Queue:
    return _queue(topology.task_queue_spec(machine_name), declare=declare)


def results_queue(controller_name: str, *, declare: bool = True) -> Queue:
    return _queue(topology.results_queue_spec(controller_name), declare=declare)


def announce_queue(controller_name: str, *, declare: bool = True) -> Queue:
    # The queue is always declared: it belongs to the controller's connection, never to the
    # provisioned topology. Its exchange only when the controller declares the topology.
    return _queue(topology.announce_queue_spec(controller_name), declare=True, declare_exchange=declare)


def dead_letter_queue(*, declare: bool = True) -> Queue:
    return _queue(topology.dead_letter_queue_spec(), declare=declare)


def body_text(body: Any) -> str:
    """A message body as text, whatever the transport handed over."""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body).decode("utf-8")
    return str(body)


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: a manifest body and where it goes."""

    body: str
    exchange: Exchange
    routing_key: str
    declare: tuple[Queue, ...] = ()
    reply_to: str | None = None
    correlation_id: str | None = None
    headers: Mapping[str, Any] | None = None
    persistent: bool = True


class _Republish(Exception):
    """The broker nacked some messages: publish those again, on a fresh channel."""


class Publisher:
    """A thread-safe publisher on its own connection (kombu connections are not thread-safe).

    On RabbitMQ every message is confirmed by the broker before ``publish`` or
    ``publish_many`` returns. kombu's own ``confirm_publish`` waits for each
    confirm in turn (about 1,400 messages/s here); a batch here is published as a
    whole and its confirms awaited together, which is what makes batches fast.
    Lost connections are handled by kombu's ``Connection.ensure`` (reconnect,
    failover across the URLs, revive, call again); a nack closes the channel
    (RabbitMQ nacks every later publish on it) and publishes the unconfirmed
    messages again on a new one. So delivery is at least once: consumers drop
    duplicates by session.
    """

    def __init__(self, url: str, *, declare: bool = True, heartbeat: float = HEARTBEAT) -> None:
        self._connection = connect(url, heartbeat)
        self._heartbeat = heartbeat
        self.reconnects = 0  # connections lost and made again (for tests and diagnostics)
        self._confirms = not url.startswith("memory://")
        self._declare = declare
        self._lock = threading.Lock()
        self._channel: Any = None
        self._declared: set[str] = set()
        self._last_tag = 0  # the delivery tag of the last message published on this channel
        self._acked: set[int] = set()
        self._acked_upto = 0  # every tag up to this one is confirmed
        self._nacked = False
        self._ensured = self._connection.ensure(
            self, self._publish_batch, errback=self._on_connection_error,
            retry_errors=(_Republish,), **RETRY_POLICY,
        )
        self._closed = threading.Event()
        self._keepalive: threading.Thread | None = None
        if self._confirms:
            self._keepalive = threading.Thread(target=self._keep_alive, name="bus-keepalive", daemon=True)
            self._keepalive.start()

    # -- the channel and its confirms --------------------------------------------------------------

    def revive(self, channel: Any) -> None:
        """kombu's ``ensure`` hands over a new channel after reconnecting."""
        self._channel = channel
        self._declared.clear()
        self._last_tag = self._acked_upto = 0
        self._acked.clear()
        self._nacked = False
        if self._confirms:
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            channel.confirm_select()

    def _ensure_channel(self) -> Any:
        if self._channel is None or not getattr(self._channel, "is_open", True):
            self.revive(self._connection.channel())
        return self._channel

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._acked_upto = max(self._acked_upto, delivery_tag)
        else:
            self._acked.add(delivery_tag)
        while self._acked_upto + 1 in self._acked:
            self._acked_upto += 1
            self._acked.discard(self._acked_upto)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked = True

    def _on_connection_error(self, exc: Exception, interval: float) -> None:
        self.reconnects += 1
        log.warning("broker connection lost (%s); reconnecting in %.1f s", exc, interval)

    # -- publishing ---------------------------------------------------------------------------------

    def publish(self, body: str, *, exchange: Exchange, routing_key: str, declare: Sequence[Queue] = (),
                reply_to: str | None = None, correlation_id: str | None = None,
                headers: Mapping[str, Any] | None = None, persistent: bool = True) -> None:
        self.publish_many([Outgoing(body, exchange, routing_key, tuple(declare), reply_to, correlation_id,
                                    headers, persistent)])

    def publish_many(self, messages: Sequence[Outgoing]) -> None:
        """Publish every message; returns when the broker confirmed all of them."""
        if not messages:
            return
        with self._lock:
            self._ensured(list(messages), [False] * len(messages), [0])

    def _publish_batch(self, messages: list[Outgoing], confirmed: list[bool], nacks: list[int]) -> None:
        channel = self._ensure_channel()
        tags: dict[int, int] = {}  # delivery tag -> index in messages
        todo = [i for i in range(len(messages)) if not confirmed[i]]  # not sent twice after a nack
        if self._declare:
            # Declarations wait for the broker's answer: all of them before the batch.
            for i in todo:
                for entity in (messages[i].exchange, *messages[i].declare):
                    if entity.name not in self._declared:
                        # A bound copy: the message's own entity may still be bound to the
                        # channel of a connection that died since.
                        entity.bind(channel).declare()
                        self._declared.add(entity.name)
        with self._coalesced_writes():
            for i in todo:
                m = messages[i]
                # What kombu's Producer.publish does, without its per-message serializer and
                # declaration bookkeeping: the body is text already, the entities declared above.
                properties: dict[str, Any] = {"delivery_mode": 2 if m.persistent else 1}
                if m.reply_to:
                    properties["reply_to"] = m.reply_to
                if m.correlation_id:
                    properties["correlation_id"] = m.correlation_id
                message = channel.prepare_message(m.body.encode("utf-8"), None, MANIFEST_CONTENT_TYPE,
                                                  "utf-8", dict(m.headers or {}), properties)
                channel.basic_publish(message, exchange=m.exchange.name, routing_key=m.routing_key)
                if self._confirms:
                    self._last_tag += 1
                    tags[self._last_tag] = i
                else:
                    confirmed[i] = True
        if not self._confirms:
            return
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        last = self._last_tag
        while self._acked_upto < last and not self._nacked:
            left = deadline - time.monotonic()
            if left <= 0:
                # No answer from the broker: treat the connection as lost (ensure reconnects).
                raise TimeoutError(f"no publisher confirm within {CONFIRM_TIMEOUT:g} s")
            try:
                self._connection.drain_events(timeout=min(left, 1.0))
            except TimeoutError:
                continue
        for tag, i in tags.items():
            if tag <= self._acked_upto or tag in self._acked:
                confirmed[i] = True
        if not all(confirmed):
            # E.g. a quorum queue between leaders: it nacks until one is elected. kombu's
            # ensure() retries these without a pause, so back off here.
            nacks[0] += 1
            pause = min(RETRY_POLICY["interval_max"], RETRY_POLICY["interval_start"] * 2 ** nacks[0])
            log.warning("broker nacked %d message(s); publishing them again on a new channel in %.1f s",
                        confirmed.count(False), pause)
            with contextlib.suppress(Exception):
                channel.close()
            self._channel = None
            time.sleep(pause)
            raise _Republish()

    @contextlib.contextmanager
    def _coalesced_writes(self) -> Iterator[None]:
        """On RabbitMQ, write a batch's frames to the socket at once when it is all framed.

        py-amqp writes every message with a system call of its own; here its frame writer
        writes into a list for the length of the batch. If publishing fails half way, nothing
        is written and ensure() publishes the batch again.
        """
        if not self._confirms:
            yield
            return
        connection = self._connection.connection  # py-amqp's
        chunks: list[bytes] = []

        class _Collector:
            @staticmethod
            def write(data: Any) -> None:
                chunks.append(bytes(data))  # the frame writer reuses its buffer: copy

        socket_writer = connection.frame_writer
        connection.frame_writer = amqp_frame_writer(connection, _Collector())
        try:
            yield
        finally:
            connection.frame_writer = socket_writer
        if chunks:
            connection.transport.write(b"".join(chunks))

    def ready_count(self, queue: Queue) -> int | None:
        """Messages ready in ``queue`` (a passive declare; None when the broker cannot tell now)."""
        with self._lock:
            try:
                channel = self._ensure_channel()
                return int(channel.queue_declare(queue=queue.name, passive=True)[1])
            except Exception as e:
                # Missing queue, or a lost connection: a passive declare failure closes the channel.
                log.debug("cannot count the messages in %s: %s", queue.name, e)
                self._channel = None
                if self._confirms and not self._connection.connected:
                    with contextlib.suppress(Exception):
                        self._connection.ensure_connection(max_retries=1)
                return None

    def _keep_alive(self) -> None:
        """Answer the broker's heartbeats while nothing is published (e.g. during a long build)."""
        interval = min(max(0.2, self._heartbeat / 4), 10.0)
        while not self._closed.wait(interval):
            with self._lock:
                if self._channel is None or not self._connection.connected:
                    continue
                try:
                    with contextlib.suppress(socket.timeout):
                        self._connection.drain_events(timeout=0.01)
                    self._connection.heartbeat_check()
                except Exception as e:
                    # The next publish reconnects through ensure().
                    log.info("broker connection idle check failed (%s); will reconnect on next publish", e)
                    self.reconnects += 1
                    self._channel = None
                    with contextlib.suppress(Exception):
                        self._connection.collect()

    def close(self) -> None:
        self._closed.set()
        if self._keepalive is not None:
            self._keepalive.join(timeout=5)
        with self._lock:
            self._channel = None
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

    @contextlib.contextmanager
    def establish_connection(self) -> Iterator[Connection]:
        # kombu's own, with the publisher's retry intervals instead of its default 2, 4, 6 ...
        # up to 30 s: a broker back after a restart is found within 3 s, not half a minute.
        with self.create_connection() as conn:
            conn.ensure_connection(self.on_connection_error, self.connect_max_retries,
                                   interval_start=RETRY_POLICY["interval_start"],
                                   interval_step=RETRY_POLICY["interval_step"],
                                   interval_max=RETRY_POLICY["interval_max"])
            yield conn


class BrokerUnavailable(RuntimeError):
    """The broker could not be reached within a request's patience: try again later."""


class TaskGetter:
    """``basic.get`` on task queues, for handing tasks out over HTTP (the controller's shim).

    Each web server thread has its own connection and channel (kombu connections
    are not thread-safe). A message got here is the caller's until it acks or
    requeues it, on the same thread. A missing queue (on a provisioned broker)
    answers None, like an empty one; a broker that stays away raises
    BrokerUnavailable after kombu's reconnect attempts.
    """

    def __init__(self, url: str, *, declare: bool = True) -> None:
        self._url = url
        self._declare = declare
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._lock = threading.Lock()
        self._queues: dict[str, Queue] = {}  # kombu entities are costly to make: one per name

    def _state(self) -> Any:
        state = self._local
        if getattr(state, "connection", None) is None:
            state.connection = connect(self._url)
            state.channel = None
            state.declared = set()
            with self._lock:
                self._connections.append(state.connection)
        return state

    def get(self, machine_name: str) -> Any | None:
        """The next task for ``machine_name``, unacknowledged; None when there is none."""
        queue = self._queues.get(machine_name)
        if queue is None:
            queue = self._queues[machine_name] = task_queue(machine_name, declare=self._declare)
        state = self._state()
        connection: Connection = state.connection
        for attempt in range(2):
            try:
                if state.channel is None or not getattr(state.channel, "is_open", True):
                    connection.ensure_connection(max_retries=2, interval_start=0.1, interval_step=0.2)
                    state.channel = connection.channel()
                    state.declared.clear()
                bound = queue(state.channel)
                if self._declare and machine_name not in state.declared:
                    bound.declare()
                    state.declared.add(machine_name)
                return bound.get(no_ack=False)
            except connection.channel_errors as e:
                # No such queue on a provisioned broker: the channel is closed, the queue is empty.
                log.debug("no task queue for machine %s: %s", machine_name, e)
                state.channel = None
                return None
            except connection.connection_errors as e:
                state.channel = None
                with contextlib.suppress(Exception):
                    connection.collect()
                if attempt:
                    raise BrokerUnavailable(f"the broker is unreachable: {e}") from e
        return None  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.release()
