"""Opening channels as a given user, and telling refusals apart."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pika
import pika.exceptions

Channel = Any  # pika's BlockingChannel: pika has no type information


@contextmanager
def open_channel(url: str, vhost: str) -> Iterator[Channel]:
    """A channel on ``vhost`` (not the one ``url`` names), with publisher confirms so that a
    refused publish raises at once; closed with its connection afterwards."""
    parameters = pika.URLParameters(url)
    parameters.virtual_host = vhost
    connection = pika.BlockingConnection(parameters)
    try:
        ch = connection.channel()
        ch.confirm_delivery()
        yield ch
    finally:
        if connection.is_open:
            connection.close()


def user_url(user: str, password: str) -> str:
    return f"amqp://{user}:{password}@127.0.0.1:5672/"


def refusal(url: str, vhost: str, operation: Callable[[Channel], object]) -> int | None:
    """The AMQP reply code the broker closes the channel with for ``operation``, None if it succeeds."""
    with open_channel(url, vhost) as ch:
        try:
            operation(ch)
        except pika.exceptions.ChannelClosedByBroker as e:
            return int(e.reply_code)
    return None


ACCESS_REFUSED = 403
