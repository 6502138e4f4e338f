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
# Task messages a task queue gave up on (delivered DELIVERY_LIMIT times without an ack) land here.
DEAD_LETTER_EXCHANGE = "bbot.dead"
DEAD_LETTER_QUEUE = "bbot.dead"

# Queue arguments (RabbitMQ's names). Task and result queues are quorum queues: replicated,
# and they count deliveries, so a task that kills every consumer before its ack cannot loop.
QUEUE_TYPE_ARG = "x-queue-type"
DELIVERY_LIMIT_ARG = "x-delivery-limit"
DEAD_LETTER_EXCHANGE_ARG = "x-dead-letter-exchange"
MESSAGE_TTL_ARG = "x-message-ttl"
MAX_LENGTH_ARG = "x-max-length"
# Redeliveries of one task message before it is dead-lettered. Agents hand a task back when
# no machine is free or it avoids them, so this is generous; the controller's lease and its
# attempt limit, not this, decide when a build gives up.
DELIVERY_LIMIT = 20
# Announcements are state refreshed on every heartbeat: old ones are worthless.
ANNOUNCE_TTL_MS = 60_000
ANNOUNCE_MAX_LENGTH = 10_000

# Message headers (beside the manifest body) that carry what the manifest has no field for.
HEADER_AGENT = "bbot-agent"
HEADER_MACHINE_NAME = "bbot-machine-name"
HEADER_MACHINE_SUMMARY = "bbot-machine-summary"
HEADER_METRICS_PREFIX = "bbot-metric-"  # e.g. bbot-metric-worker-seconds: 1.25
# On a result: set (to the reason) when the agent, not the package, failed the build (machine
# did not boot, worker crashed, TFTP failed): the controller retries it on another agent.
HEADER_INFRA_FAILURE = "bbot-infrastructure-failure"
# On an announcement: the sessions of the tasks the agent is building, comma-separated; the
# controller extends their leases, so a lease ends soon after its agent stops announcing.
HEADER_RUNNING_SESSIONS = "bbot-running-sessions"
HEADER_HEARTBEAT = "bbot-heartbeat"  # on an announcement: seconds until the agent's next one
# On a task: the agents whose earlier attempts of it failed for infrastructure reasons,
# comma-separated; such an agent hands the task back once so another can take it.
HEADER_AVOID_AGENTS = "bbot-avoid-agents"

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


def results_key(controller_name: str) -> str:
    """The routing key (and ``reply_to``) of a controller's results: its queue's name."""
    return results_queue(controller_name)
