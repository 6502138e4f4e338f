"""Every AMQP name bbot puts on a broker, defined once.

``broker/`` (topology provisioning) and ``bbot.bus`` (runtime) both read these.

- Tasks go to the direct exchange ``bbot.tasks`` with the routing key naming
  the build machine they need; each machine name has one durable queue that
  every agent owning such a machine consumes from (competing consumers).
- Results go to the direct exchange ``bbot.results`` with the routing key set
  to the ``reply_to`` of the task message: the controller's own durable
  results queue. ``correlation_id`` carries the session.
- Agents announce their machines (a task request manifest: agent, toolchain
  and one machine header per machine) on the fanout exchange
  ``bbot.announce``; each controller reads them through its own queue.
"""

from __future__ import annotations

import re

TASKS_EXCHANGE = "bbot.tasks"
RESULTS_EXCHANGE = "bbot.results"
ANNOUNCE_EXCHANGE = "bbot.announce"

# Message headers (beside the manifest body) that carry what the manifest has no field for.
HEADER_AGENT = "bbot-agent"
HEADER_MACHINE_NAME = "bbot-machine-name"
HEADER_MACHINE_SUMMARY = "bbot-machine-summary"
HEADER_METRICS_PREFIX = "bbot-metric-"  # e.g. bbot-metric-worker-seconds: 1.25

_KEY_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


def machine_key(machine_name: str) -> str:
    """The routing key for tasks that need a machine of this name."""
    if not _KEY_RE.match(machine_name):
        raise ValueError(
            f"machine name '{machine_name}' cannot be a routing key: use letters, digits, "
            "'_', '.', '+' and '-' only"
        )
    return machine_name


def task_queue(machine_name: str) -> str:
    return f"bbot.tasks.{machine_key(machine_name)}"


def results_queue(controller_name: str) -> str:
    return f"bbot.results.{controller_name}"


def announce_queue(controller_name: str) -> str:
    return f"bbot.announce.{controller_name}"
