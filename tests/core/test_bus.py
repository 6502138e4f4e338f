"""The publisher on the real broker: confirmed batches, and a connection that stays up while idle."""

from __future__ import annotations

import time

import pytest

from bbot import bus


@pytest.mark.rabbitmq
def test_a_confirmed_batch_lands_whole_and_in_order(rabbitmq: str, unique: str) -> None:
    queue = bus.task_queue(f"batch-{unique}")
    publisher = bus.Publisher(rabbitmq)
    try:
        publisher.publish_many([bus.Outgoing(f"message {i}", bus.tasks_exchange(), queue.routing_key,
                                             declare=(queue,), correlation_id=str(i)) for i in range(300)])
    finally:
        publisher.close()
    with bus.connect(rabbitmq) as conn, conn.channel() as channel:
        bound = queue(channel)
        got = []
        while (message := bound.get(no_ack=True)) is not None:
            got.append((bus.body_text(message.body), message.properties["correlation_id"],
                        message.properties["delivery_mode"]))
        bound.delete()
    assert got == [(f"message {i}", str(i), 2) for i in range(300)]


@pytest.mark.rabbitmq
def test_an_idle_publisher_keeps_its_connection_through_heartbeats(rabbitmq: str, unique: str) -> None:
    # With a 1 s heartbeat the broker closes a connection that stays silent for about 2 s; an
    # agent's publisher is silent for a whole build. Its keepalive answers the heartbeats.
    queue = bus.task_queue(f"idle-{unique}")
    publisher = bus.Publisher(rabbitmq, heartbeat=1)
    try:
        publisher.publish("before", exchange=bus.tasks_exchange(), routing_key=queue.routing_key,
                          declare=[queue])
        time.sleep(5)  # the scenario itself: five heartbeat intervals with nothing to publish
        publisher.publish("after", exchange=bus.tasks_exchange(), routing_key=queue.routing_key)
        assert publisher.reconnects == 0
    finally:
        publisher.close()
    with bus.connect(rabbitmq) as conn, conn.channel() as channel:
        assert channel.queue_declare(queue=queue.name, passive=True)[1] == 2
        queue(channel).delete()
