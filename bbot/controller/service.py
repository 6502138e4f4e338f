"""The controller: turns sources into builds, leases tasks out, takes results in.

Threads, each with its own broker connection (kombu connections are not
thread-safe):

- the scheduler: ends expired leases (re-queue, or give up after
  ``max_attempts``) and publishes a task for every queued build that some live
  agent can build, under a new session, after recording the lease;
- the consumer: the results queue (each result committed once per session,
  then acknowledged, then mailed) and the announcements of agents;
- one poller per git source.

Order of writes keeps "nothing lost": a lease is stored before its task is
published (a lost publish is re-issued when the lease expires), and a result
message is acknowledged only after the store committed it.
"""

from __future__ import annotations

import logging
import queue
import re
import shlex
import threading
import time
from collections.abc import Iterable
from typing import Any

from kombu import Consumer, Queue

from bbot import bus
from bbot.bus import names
from bbot.config import BuildConfiguration, Config
from bbot.controller.lease import BuildState
from bbot.controller.notify import Notifier, notify_built, rules
from bbot.controller.notify.maildir import MaildirNotifier
from bbot.controller.notify.smtp import SmtpNotifier
from bbot.controller.registry import Registry
from bbot.controller.sources.git import (
    Commit,
    GitError,
    GitMirror,
    GitPoller,
    package_name,
    package_version,
    split_url,
)
from bbot.controller.store import (
    BuildRow,
    FailOutcome,
    IssueItem,
    NewBuild,
    NewBuildSet,
    ResultItem,
    ResultOutcome,
    Store,
)
from bbot.controller.upstream import UpstreamLink
from bbot.manifest import ManifestError, ResultRequest, Task, TaskRequest
from bbot.manifest.status import Status
from bbot.wire import DEFAULT_PACKAGE_CONFIG, new_session

log = logging.getLogger(__name__)

# Git URLs a submission may name; anything else (ext::, fd::, options) is refused.
_SUBMIT_URL_RE = re.compile(r"^(https?|git|ssh|file)://[^\s]+$|^/[^\s]*$")


# How often hand-overs to HTTP agents are pruned (seconds).
HTTP_PRUNE_INTERVAL = 60.0

# Tasks out per live machine: one building, one waiting in the queue for the moment it frees.
OUTSTANDING_PER_MACHINE = 2


class SubmitError(ValueError):
    """A submission that cannot be built: the message says what to fix."""


class Controller:
    def __init__(self, config: Config, *, base_url: str | None = None, store: Store | None = None,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.cc = config.controller
        self.base_url = base_url or self.cc.base_url or f"http://{config.web.host}:{config.web.port}/"
        self.store = store or Store(config.effective_store_url)
        self.registry = Registry(heartbeat=config.agent.heartbeat)
        self.notifier = notifier or self._make_notifier()
        self.results_queue_name = names.results_queue(self.cc.name)
        self.git_dir = config.data_dir / "git"
        self._mirrors: dict[str, GitMirror] = {}
        self._mirrors_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._issued = threading.Condition()  # notified after each scheduler pass that published
        self.issued_count = 0  # scheduler passes that published (the shim's empty-queue memory reads it)
        self._threads: list[threading.Thread] = []
        self._publisher: bus.Publisher | None = None
        self._consumer: _ControllerConsumer | None = None
        self._pollers: list[GitPoller] = []
        self.upstream: UpstreamLink | None = None  # with controller.upstream: tasks from above
        self._started = time.monotonic()
        self._mail_queue: queue.Queue[int | None] = queue.Queue()
        self._patterns: set[str] = set()
        self._queues_seen: set[str] = set()
        self._patterns_read_at = 0.0
        self._pruned_at = 0.0
        # kombu's in-memory transport acks one delivery at a time, whatever ``multiple`` says.
        self._ack_multiple = not config.broker_url.startswith("memory://")

    def _make_notifier(self) -> Notifier:
        smtp = self.config.email.smtp
        if smtp is not None:
            return SmtpNotifier(smtp.host, smtp.port, self.config.email.sender, username=smtp.username,
                                password=smtp.password, starttls=smtp.starttls)
        return MaildirNotifier(self.config.data_dir / "outbox")

    # -- start and stop -------------------------------------------------------------------------

    def start(self) -> None:
        self._started = time.monotonic()
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        if self.config.broker_url.startswith("memory://"):
            # The in-memory broker died with the last process, and every task out with it:
            # issue them again now rather than when their leases run out.
            for build in self.store.expired_leases(float("inf")):
                assert build.session is not None
                self.store.expire(build.id, build.session, "the in-memory broker did not survive a restart")
        self._publisher = bus.Publisher(self.config.broker_url, declare=self.config.broker_declare)
        self._consumer = _ControllerConsumer(self)
        for target, name in ((self._consumer.run, "controller-consumer"),
                             (self._schedule_loop, "controller-scheduler"),
                             (self._mail_loop, "controller-mailer")):
            t = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(t)
            t.start()
        for source in self.config.sources:
            poller = GitPoller(source.name, self._mirror(source.url), source.branches, source.interval,
                               self._on_commit, self.config.data_dir / "sources" / f"{source.name}.heads")
            self._pollers.append(poller)
            poller.start()
        if self.cc.upstream:
            self.upstream = UpstreamLink(self)
            self.upstream.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        for poller in self._pollers:
            poller.stop()
        if self.upstream is not None:
            self.upstream.stop()
        if self._consumer is not None:
            self._consumer.should_stop = True
        for t in self._threads:
            if t.name != "controller-mailer":
                t.join(timeout=30)
        self._mail_queue.put(None)  # after what is queued: every finished build is mailed
        for t in self._threads:
            t.join(timeout=30)
        self._threads.clear()
        if self._publisher is not None:
            self._publisher.close()
        self.store.close()

    def wake(self) -> None:
        """Run the scheduler now instead of at its next tick."""
        self._wake.set()

    # -- sources --------------------------------------------------------------------------------

    def _mirror(self, url: str) -> GitMirror:
        with self._mirrors_lock:
            if url not in self._mirrors:
                self._mirrors[url] = GitMirror(self.git_dir, url)
            return self._mirrors[url]

    def submit(self, url: str, ref: str | None = None, email: str | None = None) -> int:
        """Build ``url`` (a git URL, ``#ref`` optional) on every configuration; returns the set id."""
        base, fragment = split_url(url.strip())
        ref = ref or fragment
        if not _SUBMIT_URL_RE.match(base):
            raise SubmitError(
                f"'{base}' is not a git URL bbot can fetch; use http(s)://, git://, ssh://, file:// "
                "or an absolute path"
            )
        if ref is not None and (ref.startswith("-") or not re.match(r"^[\w./+-]+$", ref)):
            raise SubmitError(f"'{ref}' is not a branch, tag or commit name")
        if email is not None and not re.match(r"^[^@\s<>]+@[^@\s<>]+$", email):
            raise SubmitError(f"'{email}' is not an email address")
        mirror = self._mirror(base)
        try:
            mirror.fetch()
            commit = mirror.commit(mirror.resolve(ref))
        except GitError as e:
            raise SubmitError(str(e)) from e
        return self._add_set("submit", "submit", base, ref, commit, submitter_email=email)

    def _on_commit(self, source: str, branch: str, commit: Commit) -> None:
        url = next(s.url for s in self.config.sources if s.name == source)
        self._add_set("git", source, url, branch, commit)

    def _add_set(self, kind: str, source: str, url: str, ref: str | None, commit: Commit,
                 submitter_email: str | None = None) -> int:
        set_id = self.store.add_build_set(NewBuildSet(
            kind=kind, source=source, repository_url=url, ref=ref, commit=commit.sha,
            package_name=package_name(url), package_version=package_version(commit.sha),
            author_name=commit.author_name, author_email=commit.author_email,
            submitter_email=submitter_email,
        ))
        self.store.add_builds(set_id, [self._new_build(c) for c in self.config.configurations])
        log.info("build set %d: %s %s at %s, %d configuration(s)", set_id, kind, url, commit.sha[:12],
                 len(self.config.configurations))
        self.wake()
        return set_id

    def _new_build(self, conf: BuildConfiguration) -> NewBuild:
        return NewBuild(
            configuration=conf.name, machine_pattern=conf.machine, target=conf.target,
            config_args=shlex.join(conf.args), warning_regex=list(conf.warning_regex),
            package_config=DEFAULT_PACKAGE_CONFIG, toolchain_name=self.cc.toolchain_name,
            toolchain_version=self.cc.toolchain_version,
        )

    # -- scheduling -----------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.schedule_once()
            except Exception:
                log.exception("scheduler pass failed; retrying")
            self._wake.wait(self.cc.schedule_interval)
            self._wake.clear()

    def schedule_once(self) -> int:
        """End expired leases, then issue every queued build some live machine can build."""
        now = time.time()
        # Just after start, wait for the agents' first announcements (which renew the leases
        # of what they are building) and for the results that came in meanwhile.
        grace = min(self.registry.expiry, self.cc.lease_timeout)
        if time.monotonic() - self._started >= grace and self._results_caught_up():
            for build in self.store.expired_leases(now):
                self._end_lease(build, "agent lost: no result and no heartbeat within its lease")
        if now - self._pruned_at >= HTTP_PRUNE_INTERVAL:
            # Hand-overs to HTTP agents whose results can no longer come (their leases ended).
            self.store.prune_http_leases(now - 2 * self.cc.result_timeout)
            self._pruned_at = now
        # Say why builds wait for a machine nobody offers; the others may go out.
        machine_for: dict[str, str] = {}
        for pattern in self._queued_patterns(now):
            machine = self.registry.machine_for(pattern)
            if machine is None:
                self.store.set_waiting_reason(
                    pattern, f"waiting: no agent offers a machine matching '{pattern}'")
            elif not self._task_queue_exists(machine.name):
                queue = names.task_queue(machine.name)
                self.store.set_waiting_reason(
                    pattern, f"waiting: the broker has no queue {queue} for machine '{machine.name}'; "
                             f"provision it: bbot broker apply --machine {machine.name}")
            else:
                machine_for[pattern] = machine.name
        # Keep only a little more out than the live machines can take: a task that waits
        # long in a broker queue would outlive its lease and be built twice.
        machines = sum(len(a.machines) for a in self.registry.live_agents())
        room = OUTSTANDING_PER_MACHINE * machines - self.store.count_builds(state=BuildState.LEASED)
        chosen: list[tuple[BuildRow, str]] = []
        if room > 0 and machine_for:
            for build in self.store.queued_builds(limit=min(room, 1000), patterns=list(machine_for)):
                chosen.append((build, machine_for[build.machine_pattern]))
        return self._issue(chosen, now)

    def _queued_patterns(self, now: float) -> set[str]:
        """The machine patterns queued builds ask for: read from the store once a second (it
        scans every queued build), with the current configurations' patterns always in."""
        if now - self._patterns_read_at >= 1.0:
            self._patterns = set(self.store.queued_patterns())
            self._patterns_read_at = now
        return self._patterns | {c.machine for c in self.config.configurations}

    def _task_queue_exists(self, machine_name: str) -> bool:
        """On a provisioned broker (``broker.declare: false``) a task for a machine name with no
        queue would be dropped by the exchange: hold such builds back, with the fix as reason."""
        if self.config.broker_declare or machine_name in self._queues_seen:
            return True
        assert self._publisher is not None
        if self._publisher.ready_count(bus.task_queue(machine_name, declare=False)) is None:
            return False
        self._queues_seen.add(machine_name)
        return True

    def _results_caught_up(self) -> bool:
        """True when no result waits to be taken in: only then may a lease be called lost.

        After a controller restart the results of tasks that were out wait in the
        results queue; expiring their leases first would drop them as stale.
        """
        if self._consumer is not None and self._consumer.pending:
            return False
        assert self._publisher is not None
        queue = bus.results_queue(self.cc.name, declare=self.config.broker_declare)
        # None: the broker cannot say now; then the lease deadlines alone decide.
        return self._publisher.ready_count(queue) in (0, None)

    def _end_lease(self, build: BuildRow, why: str) -> None:
        assert build.session is not None
        if build.round_attempts >= self.cc.max_attempts:
            self.store.give_up(build.id, f"{why}; gave up after {build.round_attempts} attempt(s)")
            self._finished([build.id])
        else:
            self.store.expire(build.id, build.session, why)

    def _issue(self, chosen: list[tuple[BuildRow, str]], now: float) -> int:
        """Lease each build under a new session (stored first), then publish its task."""
        assert self._publisher is not None
        items: list[IssueItem] = []
        messages: dict[int, bus.Outgoing] = {}
        declare = self.config.broker_declare
        exchange = bus.tasks_exchange()
        queues: dict[str, tuple[Queue, ...]] = {}
        # A task from an upper controller goes down as it came (its machine is one of ours).
        from_above = self.store.upstream_task_texts([b.id for b, _ in chosen if b.kind == "upstream"])
        for build, machine_name in chosen:
            text = from_above.get(build.id) or Task(
                name=build.package_name, version=build.package_version,
                repository_url=f"{build.repository_url}#{build.commit}", machine=machine_name,
                target=build.target, target_config=build.config_args or None,
                warning_regex=list(build.warning_regex),
            ).to_text()
            previous_ns = int(build.session.rsplit("/", 1)[1]) if build.session else 0
            session = str(new_session(build.key, previous_ns))
            items.append(IssueItem(build.id, session, now + self.cc.lease_timeout, text))
            headers: dict[str, Any] = {}
            if build.attempt > 0:
                # A retry: steer it away from the agents that failed it before.
                avoid = self.store.failed_agents(build.id)
                if avoid:
                    headers[names.HEADER_AVOID_AGENTS] = ",".join(avoid)
            if machine_name not in queues:  # kombu entities are costly to make: once per pass
                queues[machine_name] = (bus.task_queue(machine_name, declare=declare),)
            messages[build.id] = bus.Outgoing(
                text, exchange, names.machine_key(machine_name), declare=queues[machine_name],
                reply_to=self.results_queue_name, correlation_id=session, headers=headers,
            )
        if not items:
            return 0
        issued = self.store.issue_many(items)
        self._publisher.publish_many([messages[build_id] for build_id in issued])
        if issued:
            with self._issued:
                self.issued_count += 1
                self._issued.notify_all()
        return len(issued)

    def wait_issued(self, timeout: float) -> bool:
        """Wait until the scheduler published tasks (for an HTTP poll that found none); False on
        timeout."""
        with self._issued:
            return self._issued.wait(timeout)

    # -- results --------------------------------------------------------------------------------

    def on_result(self, message: Any) -> None:
        """A result message: parsed now, committed with its batch (``take_results``), then acked."""
        try:
            request = ResultRequest.from_text(bus.body_text(message.body))
        except (ManifestError, UnicodeDecodeError) as e:
            log.error("dropping a malformed result (correlation id %r): %s",
                      message.properties.get("correlation_id"), e)
            self.store.bump("results_malformed")
            message.ack()
            return
        assert self._consumer is not None
        self._consumer.pending.append((message, request))

    def take_results(self, batch: list[tuple[Any, ResultRequest]]) -> None:
        """Commit a batch of results in one transaction, then ack them, then mail.

        A result is acked only after the store committed it: if the controller dies
        in between, the broker delivers it again and the store drops the duplicate.
        """
        finished: list[int] = []
        plain: list[ResultItem] = []
        for message, request in batch:
            headers = message.headers or {}
            agent = headers.get(names.HEADER_AGENT)
            status = request.result.status
            if status is Status.INTERRUPT:
                # The agent gave the task back without building: issue it again.
                build = self.store.build_by_session(request.session)
                current = build is not None and build.session == request.session
                if build is not None and current and build.state is BuildState.LEASED:
                    self._end_lease(build, f"interrupted: agent {agent or '?'} stopped")
            elif status is Status.ABNORMAL and headers.get(names.HEADER_INFRA_FAILURE):
                self._infrastructure_failure(request.session, str(headers[names.HEADER_INFRA_FAILURE]),
                                             agent, finished)
            else:
                metrics = {k[len(names.HEADER_METRICS_PREFIX):]: float(v) for k, v in headers.items()
                           if k.startswith(names.HEADER_METRICS_PREFIX)}
                plain.append(ResultItem(
                    request.session, request.result, agent=agent,
                    machine_name=headers.get(names.HEADER_MACHINE_NAME),
                    machine_summary=headers.get(names.HEADER_MACHINE_SUMMARY), metrics=metrics,
                ))
        if plain:
            accepted: list[str] = []
            for item, outcome in zip(plain, self.store.record_results(plain), strict=True):
                if outcome is ResultOutcome.ACCEPTED:
                    accepted.append(item.session)
                else:
                    log.warning("dropped result for session %s: %s", item.session, outcome.name.lower())
            finished.extend(self.store.build_ids(accepted).values())
        if self._ack_multiple and batch:
            # One frame for the whole batch: every earlier delivery on this channel is either
            # in it or was acked when it came (announcements, dead letters, malformed results).
            batch[-1][0].ack(multiple=True)
        else:
            for message, _ in batch:
                message.ack()
        self._finished(finished)

    def _finished(self, build_ids: list[int]) -> None:
        """Builds that ended: mail about them, wake who waits for them, and the scheduler."""
        for build_id in build_ids:
            self._notify(build_id)
        if build_ids:
            self._changed_notify()
            if self.upstream is not None:
                self.upstream.results_ready()
        self.wake()

    def _infrastructure_failure(self, session: str, reason: str, agent: str | None,
                                finished: list[int]) -> None:
        """The agent, not the package, failed this attempt: retry elsewhere, or give up."""
        outcome = self.store.fail_attempt(session, reason, agent=agent, max_attempts=self.cc.max_attempts)
        log.warning("infrastructure failure of session %s on agent %s: %s (%s)", session, agent or "?",
                    reason, outcome.name.lower())
        if outcome is FailOutcome.GAVE_UP:
            build = self.store.build_by_session(session)
            if build is not None:
                finished.append(build.id)

    def on_dead_letter(self, message: Any) -> None:
        """A task the broker gave up on (redelivered too often): counts as a failed attempt."""
        props = message.properties
        session = props.get("correlation_id")
        if props.get("reply_to") == self.results_queue_name and session:
            finished: list[int] = []
            self._infrastructure_failure(
                session, f"the broker dead-lettered the task after {names.DELIVERY_LIMIT} deliveries",
                None, finished)
            self._finished(finished)
        else:
            log.info("dead-lettered task of controller %r (session %r): its lease brings it back",
                     props.get("reply_to"), session)
        message.ack()

    def on_announcement(self, message: Any) -> None:
        try:
            request = TaskRequest.from_text(bus.body_text(message.body))
        except (ManifestError, UnicodeDecodeError) as e:
            log.error("dropping a malformed agent announcement: %s", e)
        else:
            headers = message.headers or {}
            known = {a.name for a in self.registry.live_agents()}
            try:
                heartbeat: float | None = float(headers.get(names.HEADER_HEARTBEAT, ""))
            except ValueError:
                heartbeat = None
            info = self.registry.announce(request, heartbeat=heartbeat)
            running = [x for x in str(headers.get(names.HEADER_RUNNING_SESSIONS, "")).split(",") if x]
            if running:
                # The agent is alive and building these: their leases last while it announces.
                self.store.renew(running, request.agent, info.last_seen + info.expiry)
            if request.agent not in known:
                log.info("agent %s is up with %d machine(s)", request.agent, len(request.machines))
                self.wake()
        message.ack()

    def _notify(self, build_id: int) -> None:
        """Mail about a finished build, on the mailer thread: a slow SMTP server must not hold
        up taking results in."""
        self._mail_queue.put(build_id)

    def _mail_loop(self) -> None:
        done = False
        while not done:
            # Everything queued by now, read from the store at once.
            ids = [self._mail_queue.get()]
            while True:
                try:
                    ids.append(self._mail_queue.get_nowait())
                except queue.Empty:
                    break
            done = None in ids
            try:
                email = self.config.email
                wanted = [b for b, kind, status, author, submitter in
                          self.store.mail_facts([i for i in ids if i is not None])
                          if rules.may_mail(kind=kind, status=status, build_email=email.build_email,
                                            author_email=author, submitter_email=submitter)]
                for build in self.store.get_builds(wanted):
                    try:
                        notify_built(self.store, build, self.notifier, base_url=self.base_url,
                                     sender=self.config.email.sender,
                                     build_email=self.config.email.build_email)
                    except Exception:
                        log.exception("notification for build %d failed", build.id)
            except Exception:
                log.exception("notifications for builds %s failed", ids)
            finally:
                for _ in ids:
                    self._mail_queue.task_done()
                self._changed_notify()

    # -- waiting (for `bbot up --once`, tests and benchmarks) ---------------------------------------

    def _changed_notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_for_sets(self, set_ids: Iterable[int], timeout: float) -> bool:
        """Wait until every build of these sets is built; False on timeout."""
        ids = list(set_ids)
        deadline = time.monotonic() + timeout
        with self._changed:
            # Done means built and mailed.
            while self.store.unfinished_count(ids) > 0 or self._mail_queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 1.0))
        return True


class _ControllerConsumer(bus.ConsumerLoop):
    """The results queue, the announcements and the dead letters.

    kombu's ConsumerMixin reconnects by itself. Results are taken in batches:
    ``on_result`` parses and collects, ``on_iteration`` (between reads) commits a
    batch when it is big or old enough, so one transaction serves many results.
    """

    SAFETY_INTERVAL = 0.02
    BATCH_SIZE = 500
    BATCH_AGE = 0.02  # seconds a result may wait for others to share its commit

    def __init__(self, controller: Controller) -> None:
        super().__init__(controller.config.broker_url)
        self.controller = controller
        self.pending: list[tuple[Any, ResultRequest]] = []
        self._since = 0.0

    def get_consumers(self, consumer_cls: type[Consumer], channel: Any) -> list[Any]:
        c = self.controller
        declare = c.config.broker_declare
        # Deliveries of a lost connection are redelivered by the broker: forget them here.
        self.pending = []
        # One prefetch for all: RabbitMQ applies a channel's last basic.qos to every
        # consumer that starts after it, and these start together.
        prefetch = 2 * self.BATCH_SIZE
        return [
            consumer_cls(queues=[bus.results_queue(c.cc.name, declare=declare)], on_message=c.on_result,
                         prefetch_count=prefetch),
            consumer_cls(queues=[bus.announce_queue(c.cc.name, declare=declare)],
                         on_message=c.on_announcement, prefetch_count=prefetch),
            consumer_cls(queues=[bus.dead_letter_queue(declare=declare)], on_message=c.on_dead_letter,
                         prefetch_count=prefetch),
        ]

    def on_iteration(self) -> None:
        if not self.pending:
            self._since = 0.0
            return
        now = time.monotonic()
        if not self._since:
            self._since = now
        if len(self.pending) >= self.BATCH_SIZE or now - self._since >= self.BATCH_AGE:
            batch, self.pending = self.pending, []
            self._since = 0.0
            self.controller.take_results(batch)
