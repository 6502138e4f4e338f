"""Running a real Agent (memory:// broker, real TFTP) on one task, for machine tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kombu import Connection

from bbot import bus
from bbot.agent.lifecycle import BootLife
from bbot.agent.service import Agent
from bbot.bus import names
from bbot.config import AgentConfig
from bbot.manifest import ResultRequest, Task


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll ``condition`` until it is truthy (returned) or ``timeout`` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Outcome:
    request: ResultRequest
    headers: dict[str, object]
    lives: list[BootLife] = field(default_factory=list)


@contextlib.contextmanager
def running_agent(config: AgentConfig, data_dir: Path) -> Iterator[tuple[Agent, list[BootLife]]]:
    lives: list[BootLife] = []
    agent = Agent(config, broker_url="memory://", data_dir=data_dir, on_boot_done=lives.append)
    agent.start()
    try:
        yield agent, lives
    finally:
        agent.stop()


def submit(task: Task, reply_suffix: str, session: str = "/s/1.0/t/c/d/n/1/42") -> str:
    """Publish ``task`` as a controller would; returns the results queue name to read."""
    reply = f"bbot.results.test-{reply_suffix}"
    with Connection("memory://") as conn:
        bus.results_queue(f"test-{reply_suffix}")(conn.default_channel).declare()
    publisher = bus.Publisher("memory://")
    publisher.publish(task.to_text(), exchange=bus.tasks_exchange(),
                      routing_key=names.machine_key(task.machine), declare=[bus.task_queue(task.machine)],
                      reply_to=reply, correlation_id=session)
    publisher.close()
    return reply_suffix


def result(reply_suffix: str, timeout: float) -> tuple[ResultRequest, dict[str, object]]:
    with Connection("memory://") as conn:
        queue = conn.SimpleQueue(bus.results_queue(f"test-{reply_suffix}"))
        try:
            message = queue.get(block=True, timeout=timeout)
            message.ack()
            return ResultRequest.from_text(bus.body_text(message.body)), dict(message.headers)
        finally:
            queue.close()
