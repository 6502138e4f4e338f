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
import re
import shlex
import threading
import time
from collections.abc import Iterable
from typing import Any

from kombu import Consumer

from bbot import bus
from bbot.bus import names
from bbot.config import BuildConfiguration, Config
from bbot.controller.lease import BuildState
from bbot.controller.notify import Notifier, notify_build
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
from bbot.controller.store import BuildRow, NewBuild, NewBuildSet, ResultOutcome, Store
from bbot.manifest import ManifestError, ResultRequest, Task, TaskRequest
from bbot.manifest.status import Status
from bbot.wire import DEFAULT_PACKAGE_CONFIG, new_session

log = logging.getLogger(__name__)

# Git URLs a submission may name; anything else (ext::, fd::, options) is refused.
_SUBMIT_URL_RE = re.compile(r"^(https?|git|ssh|file)://[^\s]+$|^/[^\s]*$")


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
        self._threads: list[threading.Thread] = []
        self._publisher: bus.Publisher | None = None
        self._consumer: _ControllerConsumer | None = None
        self._pollers: list[GitPoller] = []

    def _make_notifier(self) -> Notifier:
        smtp = self.config.email.smtp
        if smtp is not None:
            return SmtpNotifier(smtp.host, smtp.port, self.config.email.sender, username=smtp.username,
                                password=smtp.password, starttls=smtp.starttls)
        return MaildirNotifier(self.config.data_dir / "outbox")

    # -- start and stop -------------------------------------------------------------------------

    def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        if self.config.broker_url.startswith("memory://"):
            # The in-memory broker died with the last process, and every task out with it:
            # issue them again now rather than when their leases run out.
            for build in self.store.expired_leases(float("inf")):
                assert build.session is not None
                self.store.expire(build.id, build.session, "the in-memory broker did not survive a restart")
        self._publisher = bus.Publisher(self.config.broker_url)
        self._consumer = _ControllerConsumer(self)
        for target, name in ((self._consumer.run, "controller-consumer"),
                             (self._schedule_loop, "controller-scheduler")):
            t = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(t)
            t.start()
        for source in self.config.sources:
            poller = GitPoller(source.name, self._mirror(source.url), source.branches, source.interval,
                               self._on_commit, self.config.data_dir / "sources" / f"{source.name}.heads")
            self._pollers.append(poller)
            poller.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        for poller in self._pollers:
            poller.stop()
        if self._consumer is not None:
            self._consumer.should_stop = True
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
        for build in self.store.expired_leases(now):
            self._end_lease(build, f"no result within the lease of {self.cc.lease_timeout:g} s")
        # Keep only a little more out than the live machines can take: a task that waits
        # long in a broker queue would outlive its lease and be built twice.
        machines = sum(len(a.machines) for a in self.registry.live_agents())
        room = OUTSTANDING_PER_MACHINE * machines - self.store.count_builds(state=BuildState.LEASED)
        issued = 0
        for build in self.store.queued_builds(limit=1000):
            machine = self.registry.machine_for(build.machine_pattern)
            if machine is None:
                reason = f"waiting: no agent offers a machine matching '{build.machine_pattern}'"
                if build.reason != reason:
                    self.store.set_reason(build.id, reason)
                continue
            if issued >= room:
                break
            self._issue(build, machine.name, now)
            issued += 1
        return issued

    def _end_lease(self, build: BuildRow, why: str) -> None:
        assert build.session is not None
        if build.attempt >= self.cc.max_attempts:
            self.store.give_up(build.id, f"{why}; gave up after {build.attempt} attempt(s)")
            self._notify(build.id)
            self._changed_notify()
        else:
            self.store.expire(build.id, build.session, why)

    def _issue(self, build: BuildRow, machine_name: str, now: float) -> None:
        assert self._publisher is not None
        task = Task(
            name=build.package_name, version=build.package_version,
            repository_url=f"{build.repository_url}#{build.commit}", machine=machine_name,
            target=build.target, target_config=build.config_args or None,
            warning_regex=list(build.warning_regex),
        )
        previous_ns = int(build.session.rsplit("/", 1)[1]) if build.session else 0
        session = str(new_session(build.key, previous_ns))
        text = task.to_text()
        self.store.issue(build.id, session, now + self.cc.lease_timeout, text)
        self.store.set_reason(build.id, None)
        self._publisher.publish(
            text, exchange=bus.tasks_exchange(), routing_key=names.machine_key(machine_name),
            declare=[bus.task_queue(machine_name)], reply_to=self.results_queue_name,
            correlation_id=session,
        )

    # -- results --------------------------------------------------------------------------------

    def on_result(self, message: Any) -> None:
        """A result message: commit it (once per session), then acknowledge, then mail."""
        headers = message.headers or {}
        try:
            request = ResultRequest.from_text(bus.body_text(message.body))
        except (ManifestError, UnicodeDecodeError) as e:
            log.error("dropping a malformed result (correlation id %r): %s",
                      message.properties.get("correlation_id"), e)
            self.store.bump("results_malformed")
            message.ack()
            return
        build_id = self._take_result(request, headers)
        message.ack()
        if build_id is not None:
            self._notify(build_id)
            self._changed_notify()
        self.wake()

    def _take_result(self, request: ResultRequest, headers: dict[str, Any]) -> int | None:
        """Store the result; the build's id when it was accepted and finished the build."""
        if request.result.status is Status.INTERRUPT:
            # The agent gave the task back without building: issue it again.
            build = self.store.build_by_session(request.session)
            if build is not None and build.session == request.session and build.state is BuildState.LEASED:
                self._end_lease(build, f"interrupted by agent {headers.get(names.HEADER_AGENT, '?')}")
            return None
        metrics = {k[len(names.HEADER_METRICS_PREFIX):]: float(v) for k, v in headers.items()
                   if k.startswith(names.HEADER_METRICS_PREFIX)}
        outcome = self.store.record_result(
            request.session, request.result, agent=headers.get(names.HEADER_AGENT),
            machine_name=headers.get(names.HEADER_MACHINE_NAME),
            machine_summary=headers.get(names.HEADER_MACHINE_SUMMARY), metrics=metrics,
        )
        if outcome is not ResultOutcome.ACCEPTED:
            log.warning("dropped result for session %s: %s", request.session, outcome.name.lower())
            return None
        build = self.store.build_by_session(request.session)
        return build.id if build is not None else None

    def on_announcement(self, message: Any) -> None:
        try:
            request = TaskRequest.from_text(bus.body_text(message.body))
        except (ManifestError, UnicodeDecodeError) as e:
            log.error("dropping a malformed agent announcement: %s", e)
        else:
            known = {a.name for a in self.registry.live_agents()}
            self.registry.announce(request)
            if request.agent not in known:
                log.info("agent %s is up with %d machine(s)", request.agent, len(request.machines))
                self.wake()
        message.ack()

    def _notify(self, build_id: int) -> None:
        try:
            notify_build(self.store, build_id, self.notifier, base_url=self.base_url,
                         sender=self.config.email.sender, build_email=self.config.email.build_email)
        except Exception:
            log.exception("notification for build %d failed", build_id)

    # -- waiting (for `bbot up --once`, tests and benchmarks) ---------------------------------------

    def _changed_notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def wait_for_sets(self, set_ids: Iterable[int], timeout: float) -> bool:
        """Wait until every build of these sets is built; False on timeout."""
        ids = list(set_ids)
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.store.unfinished_count(ids) > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 1.0))
        return True


class _ControllerConsumer(bus.ConsumerLoop):
    """The results queue and the announcements; kombu's ConsumerMixin reconnects by itself."""

    def __init__(self, controller: Controller) -> None:
        super().__init__(controller.config.broker_url)
        self.controller = controller

    def get_consumers(self, consumer_cls: type[Consumer], channel: Any) -> list[Any]:
        c = self.controller
        return [
            consumer_cls(queues=[bus.results_queue(c.cc.name)], on_message=c.on_result, prefetch_count=100),
            consumer_cls(queues=[bus.announce_queue(c.cc.name)], on_message=c.on_announcement),
        ]

