"""brep's agent interface on the controller: ``?build-task`` and ``?build-result`` over HTTP.

Agents that poll (real bbot agents, ours on remote hosts, lower controllers)
take tasks from the same broker queues the AMQP agents consume, competing
with them: a poll ``basic.get``s a task for one of the machines it offers,
records the hand-over (agent, machine, challenge) and answers with brep's task
response. A result is checked (session, challenge signature) and published to
the results queue named by the task, like any agent's result; the controller
that owns the build takes it in from there. So a task may be handed out by
any controller's shim, and its result still reaches the right controller.

Status codes and texts follow brep (§3.3, §3.9): rejections of the request
are 4xx with a text/plain reason; a result that cannot be accepted (unknown
or stale session, failed authentication) is a 200 that changes nothing, so a
malicious agent learns nothing, and is logged and counted. No I/O happens
here that is not the broker or the store: the Flask views in
``web/agents.py`` read and write the bytes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bbot import bus
from bbot.brep import keys as agent_keys
from bbot.brep import protocol
from bbot.brep.protocol import HttpError, Route
from bbot.bus import names
from bbot.controller.store import HttpLease
from bbot.manifest import ManifestError, ResultRequest, Task, TaskRequest, TaskResponse
from bbot.wire import SessionError, parse_session

if TYPE_CHECKING:
    from bbot.controller.service import Controller

log = logging.getLogger(__name__)

# At most this many tasks of one queue are looked at for one poll (tasks the agent
# must not take, e.g. for another repository, are put back after the poll).
SCAN_LIMIT = 20
# A first poll from an agent (or one offering new machines) waits this long for the
# scheduler to issue tasks for its machines, instead of sending it away to poll again later.
FIRST_POLL_WAIT = 2.0

# A task queue found empty is not asked again for this long, unless this controller's scheduler
# published since: an empty poll then costs no broker round trip. Only tasks of *other*
# controllers sharing the queue can wait this long for an HTTP agent (AMQP agents are not
# affected).
EMPTY_QUEUE_MEMORY = 0.25


@dataclass(frozen=True)
class Reply:
    """What the view sends back: status, content type and body."""

    status: int
    body: str
    manifest: bool = False  # text/manifest (else text/plain)


NO_TASK = Reply(200, TaskResponse(session="").to_text(), manifest=True)


class AgentShim:
    def __init__(self, controller: Controller, *, trusted: agent_keys.TrustedKeys | None,
                 result_timeout: float, agent_expiry: float) -> None:
        self.controller = controller
        self.trusted = trusted
        self.result_timeout = result_timeout
        self.agent_expiry = agent_expiry
        config = controller.config
        self._getter = bus.TaskGetter(config.broker_url, declare=config.broker_declare)
        self._publisher: bus.Publisher | None = None
        self._publisher_lock = threading.Lock()
        self._results_exchange = bus.results_exchange()
        self._offers: dict[str, frozenset[str]] = {}  # agent -> machine names it offered last
        self._offers_lock = threading.Lock()
        # machine name -> (when its queue was found empty, the scheduler's publish count then)
        self._empty: dict[str, tuple[float, int]] = {}

    def close(self) -> None:
        self._getter.close()
        if self._publisher is not None:
            self._publisher.close()

    # -- ?build-task --------------------------------------------------------------------------------

    def build_task(self, route: Route, body: bytes) -> Reply:
        params = protocol.task_parameters(route)
        try:
            request = TaskRequest.from_text(body)  # invalid UTF-8 is a ManifestError too, in place
        except ManifestError as error:
            raise HttpError(400, str(error)) from None
        if self.trusted is not None:
            if request.fingerprint is None:
                raise HttpError(401, protocol.UNAUTHORIZED)
            if self.trusted.get(request.fingerprint) is None:
                # brep takes an unknown key for a custom bot, which only builds packages that
                # name its key: bbot has no such packages, so there is nothing for it.
                log.warning("agent %s polls with fingerprint %s, which is not in the agent keys: "
                            "no task for it", request.agent, request.fingerprint)
                return NO_TASK
        if not params.hands_out(request.effective_interactive_mode):
            return NO_TASK
        # One per name: machines of a name are interchangeable, and share one queue.
        by_name = {m.name: m for m in reversed(request.machines)
                   if m.effective_role == "build" and _routable(m.name)}
        machines = [m for m in request.machines if by_name.get(m.name) is m]
        if not machines:
            return NO_TASK
        new_offer = self._announce(request, [m.name for m in machines])
        reply = self._hand_out(request, machines, params)
        if reply is None and new_offer:
            # A new agent: the scheduler has not issued tasks for its machines yet. Give it
            # the chance now rather than sending the agent away for a whole poll interval.
            reply = self._wait_and_hand_out(request, machines, params)
        return reply or NO_TASK

    def _announce(self, request: TaskRequest, machine_names: list[str]) -> bool:
        """The polling agent is alive: the scheduler issues tasks for its machines. True when it
        offers machines it did not offer at its last poll."""
        self.controller.registry.announce(request, heartbeat=self.agent_expiry / 3)
        offered = frozenset(machine_names)
        with self._offers_lock:
            new = not offered <= self._offers.get(request.agent, frozenset())
            self._offers[request.agent] = offered
        if new:
            self.controller.wake()
        return new

    def _wait_and_hand_out(self, request: TaskRequest, machines: list[Any],
                           params: protocol.TaskParameters) -> Reply | None:
        deadline = time.monotonic() + FIRST_POLL_WAIT
        while (left := deadline - time.monotonic()) > 0:
            if not self.controller.wait_issued(left):
                return None
            reply = self._hand_out(request, machines, params)
            if reply is not None:
                return reply
        return None

    def _hand_out(self, request: TaskRequest, machines: list[Any],
                  params: protocol.TaskParameters) -> Reply | None:
        """Take the first task that one of ``machines`` (in request order, as brep) may build."""
        put_back: list[Any] = []
        try:
            for machine in machines:
                for _ in range(SCAN_LIMIT):
                    message = self._get(machine.name)
                    if message is None:
                        break
                    try:
                        reply = self._consider(message, request, machine, params, put_back)
                    except BaseException:
                        # Not handed out (the store failed?): back to the queue for the next poll,
                        # not left unacknowledged on this thread's channel.
                        put_back.append(message)
                        raise
                    if reply is not None:
                        return reply
            return None
        finally:
            for message in put_back:
                message.requeue()
            if put_back:
                # Those queues are not empty any more, whatever their last get said.
                for machine in machines:
                    self._empty.pop(machine.name, None)

    def _get(self, machine_name: str) -> Any | None:
        """The next task for ``machine_name``, or None; remembers an empty queue for a moment."""
        issued = self.controller.issued_count
        seen = self._empty.get(machine_name)
        if seen is not None and seen[1] == issued and time.monotonic() - seen[0] < EMPTY_QUEUE_MEMORY:
            return None
        try:
            message = self._getter.get(machine_name)
        except bus.BrokerUnavailable as error:
            raise HttpError(503, f"the controller cannot reach its broker: {error}; "
                                 "poll again later") from error
        if message is None:
            self._empty[machine_name] = (time.monotonic(), issued)
        else:
            self._empty.pop(machine_name, None)
        return message

    def _consider(self, message: Any, request: TaskRequest, machine: Any,
                  params: protocol.TaskParameters, put_back: list[Any]) -> Reply | None:
        props = message.properties
        session = props.get("correlation_id") or ""
        reply_to = props.get("reply_to") or ""
        try:
            task = Task.from_text(bus.body_text(message.body))
        except (ManifestError, UnicodeDecodeError) as error:
            log.error("dropping an unreadable task (session %r): %s", session, error)
            message.ack()
            return None
        if not session or not reply_to:
            log.error("dropping task %s/%s without session or reply_to", task.name, task.version)
            message.ack()
            return None
        repository = task.repository_url.split("#", 1)[0]
        avoid = str((message.headers or {}).get(names.HEADER_AVOID_AGENTS, "")).split(",")
        if (params.repositories and repository not in params.repositories) or (
                request.agent in avoid and not message.delivery_info.get("redelivered")):
            put_back.append(message)  # for another agent (or for this one, when nobody else takes it)
            return None
        if task.machine != machine.name:
            log.warning("task %s for machine %s came from queue %s; handing it out anyway",
                        session, task.machine, machine.name)
        challenge = agent_keys.new_challenge() if self.trusted is not None else None
        own = reply_to == self.controller.results_queue_name
        lease = HttpLease(session=session, agent=request.agent, reply_to=reply_to,
                          machine_name=machine.name, machine_summary=machine.summary,
                          fingerprint=request.fingerprint if self.trusted is not None else None,
                          challenge=challenge, handed_at=time.time())
        if not self.controller.store.hand_over(lease, own=own, deadline=time.time() + self.result_timeout):
            # Its lease ended while it waited in the queue (and it was issued again): drop it.
            self.controller.store.bump(protocol.COUNTER_STALE_TASKS)
            message.ack()
            return None
        tenant = _tenant_of(session)
        response = TaskResponse(session=session, challenge=challenge,
                                result_url=protocol.result_url(self.controller.base_url, tenant), task=task)
        message.ack()  # last: until here an error puts the task back
        log.info("handed task %s to agent %s (machine %s) over HTTP", session, request.agent, machine.name)
        return Reply(200, response.to_text(), manifest=True)

    # -- ?build-result ------------------------------------------------------------------------------

    def build_result(self, route: Route, body: bytes) -> Reply:
        protocol.result_parameters(route)
        try:
            request = ResultRequest.from_text(body)
        except ManifestError as error:
            raise HttpError(400, str(error)) from None
        try:
            session = parse_session(request.session)
        except SessionError as error:
            raise HttpError(400, str(error)) from None
        if session.key.tenant != route.tenant:
            raise HttpError(400, "invalid session: tenant mismatch")
        result = request.result
        if (result.name, result.version) != (session.key.package_name, session.key.package_version):
            raise HttpError(400, f"invalid session: the result is for {result.name}/{result.version}, "
                                 f"the session for {session.key.package_name}/{session.key.package_version}")
        store = self.controller.store
        lease = store.http_lease(request.session)
        if lease is None:
            log.warning("dropping a result for session %s: no task was handed out over HTTP under it",
                        request.session)
            store.bump(protocol.COUNTER_NOT_HANDED_OUT)
            return Reply(200, "")
        problem = self._authentication_problem(lease, request)
        if problem is not None:
            log.warning("dropping the result of agent %s for session %s: %s", lease.agent, request.session,
                        problem)
            store.bump(protocol.COUNTER_AUTH_FAILED)
            return Reply(200, "")
        headers = {names.HEADER_AGENT: lease.agent, names.HEADER_MACHINE_NAME: lease.machine_name,
                   names.HEADER_MACHINE_SUMMARY: lease.machine_summary}
        try:
            self._results_publisher().publish(
                request.to_text(), exchange=self._results_exchange, routing_key=lease.reply_to,
                correlation_id=request.session, headers=headers)
        except Exception as error:
            log.exception("could not publish the result for session %s", request.session)
            raise HttpError(503, "the controller cannot take results now; post again later") from error
        return Reply(200, "")

    def _authentication_problem(self, lease: HttpLease, request: ResultRequest) -> str | None:
        """Why the result is not the handed-out agent's (§3.5), or None."""
        if lease.challenge is None:
            return "unexpected challenge" if request.challenge is not None else None
        if request.challenge is None:
            return "no challenge signature"
        key = self.trusted.get(lease.fingerprint) if self.trusted and lease.fingerprint else None
        if key is None:
            return f"agent key {lease.fingerprint} is no longer trusted"
        if not agent_keys.verify_challenge(key, lease.challenge, request.challenge):
            return "the challenge signature does not verify with the agent's key"
        return None

    def _results_publisher(self) -> bus.Publisher:
        with self._publisher_lock:
            if self._publisher is None:
                config = self.controller.config
                self._publisher = bus.Publisher(config.broker_url, declare=config.broker_declare)
            return self._publisher


def _routable(name: str) -> bool:
    try:
        names.machine_key(name)
    except ValueError:
        return False
    return True


def _tenant_of(session: str) -> str:
    try:
        return parse_session(session).key.tenant
    except SessionError:
        return ""
