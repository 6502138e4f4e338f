"""Controllers in layers: this controller is an agent of upper controllers (brep or bbot).

With ``controller.upstream`` configured, two threads run beside the scheduler:

- the poller offers the build machines this controller's own agents announced
  (one task from above per live machine at most) to each upper controller in
  turn, over brep's ``?build-task``; a task it gets becomes a local build
  (build set kind ``upstream``) whose task manifest goes down to the agents
  exactly as it came, on this controller's own exchange;
- the reporter posts the result of each such build, once it is built here, to
  the upper controller's ``result-url`` with the challenge signed by
  ``controller.key``; until the upper controller took it (or refused it for
  good), it stays marked unposted in the store, so a restart posts it then.

Mail about these builds is the upper controller's business: it is not sent here.
"""

from __future__ import annotations

import glob
import logging
import threading
from typing import TYPE_CHECKING, Any

from bbot.brep import client
from bbot.brep.client import Backoff, ControllerError
from bbot.controller.store import NewBuild, NewBuildSet, UpstreamResult, UpstreamTask
from bbot.manifest import MachineHeader, OperationResult, Result, ResultRequest, TaskRequest, TaskResponse
from bbot.wire import DEFAULT_PACKAGE_CONFIG, SessionError, parse_session

if TYPE_CHECKING:
    from bbot.controller.service import Controller

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0  # longest wait between tries while an upper controller fails


class UpstreamLink:
    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        cc = controller.config.controller
        self.urls = list(cc.upstream)
        self.interval = cc.upstream_interval
        self._key: Any = None
        self.fingerprint: str | None = None
        if cc.key is not None:
            from bbot.brep.keys import fingerprint, load_private_key

            self._key = load_private_key(cc.key)
            self.fingerprint = fingerprint(self._key)
        self._backoff = {url: Backoff(self.interval, MAX_BACKOFF) for url in self.urls}
        self._post_backoff = Backoff(min(1.0, self.interval), MAX_BACKOFF)
        self._stopping = threading.Event()
        self._results_ready = threading.Event()
        self._threads = [threading.Thread(target=self._poll_loop, name="upstream-poller", daemon=True),
                         threading.Thread(target=self._report_loop, name="upstream-reporter", daemon=True)]
        self.taken = 0  # tasks taken from above (for tests and diagnostics)
        self.posted = 0  # results that went up

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._results_ready.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def results_ready(self) -> None:
        """Builds ended here: some may be for upper controllers."""
        self._results_ready.set()

    # -- taking tasks from above --------------------------------------------------------------------

    def offer(self) -> TaskRequest | None:
        """The task request offering this controller's live build machines, or None when every
        one of them already has a task from above (or none is live)."""
        cc = self.controller.config.controller
        machines: list[MachineHeader] = []
        seen: set[str] = set()
        for agent in self.controller.registry.live_agents():
            for machine in agent.machines:
                if machine.effective_role == "build" and machine.id not in seen:
                    seen.add(machine.id)
                    machines.append(MachineHeader(id=machine.id, name=machine.name, summary=machine.summary))
        if len(machines) <= self.controller.store.upstream_open_count():
            return None
        return TaskRequest(agent=cc.name, toolchain_name=cc.toolchain_name,
                           toolchain_version=cc.toolchain_version, machines=machines,
                           fingerprint=self.fingerprint)

    def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            took = False
            try:
                request = self.offer()
                if request is not None:
                    took = self.poll_once(request)
            except Exception:
                log.exception("polling the upper controllers failed; retrying")
            if not took:
                self._stopping.wait(min(b.delay for b in self._backoff.values()))

    def poll_once(self, request: TaskRequest) -> bool:
        for url in self.urls:
            backoff = self._backoff[url]
            try:
                response = client.request_task(url, request)
            except ControllerError as error:
                backoff.failed()
                log.warning("upper controller %s: %s; next poll in about %.0f s", url, error, backoff.delay)
                continue
            backoff.succeeded()
            if response.has_task:
                self._take(url, response)
                return True
        return False

    def _take(self, url: str, response: TaskResponse) -> None:
        task = response.task
        assert task is not None and response.result_url is not None
        try:
            key = parse_session(response.session).key
            configuration, package_config = key.target_config, key.package_config
            toolchain = (key.toolchain_name, key.toolchain_version)
            tenant = key.tenant
        except SessionError:
            # brep's sessions all parse; another controller's may not: the task says enough.
            cc = self.controller.config.controller
            configuration, package_config = task.machine, DEFAULT_PACKAGE_CONFIG
            toolchain, tenant = (cc.toolchain_name, cc.toolchain_version), ""
        repository, _, commit = task.repository_url.partition("#")
        build_id, created = self.controller.store.add_upstream_build(
            UpstreamTask(url=url, session=response.session, result_url=response.result_url,
                         task_text=task.to_text(), challenge=response.challenge,
                         agent_checksum=response.agent_checksum),
            NewBuildSet(kind="upstream", source=url, repository_url=repository, ref=None,
                        commit=commit or None, package_name=task.name, package_version=task.version),
            NewBuild(configuration=configuration, machine_pattern=glob.escape(task.machine),
                     target=task.target, config_args=task.target_config or "",
                     warning_regex=list(task.warning_regex), package_config=package_config,
                     toolchain_name=toolchain[0], toolchain_version=toolchain[1], tenant=tenant),
        )
        if created:
            self.taken += 1
            log.info("took %s/%s for machine %s from %s (session %s) as build %d", task.name, task.version,
                     task.machine, url, response.session, build_id)
        self.controller.wake()

    # -- sending results up -------------------------------------------------------------------------

    def _report_loop(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            failed = False
            try:
                failed = not self.report_once()
            except Exception:
                log.exception("reporting results to the upper controllers failed; retrying")
                failed = True
            if stopping:
                return
            if failed:
                self._stopping.wait(self._post_backoff.delay)
            else:
                self._results_ready.wait(self.interval)
                self._results_ready.clear()

    def report_once(self) -> bool:
        """Post every result waiting to go up; False when one must be tried again later."""
        store = self.controller.store
        for done in store.upstream_results():
            request = self.result_request(done)
            try:
                client.post_result(done.task.result_url, request)
            except ControllerError as error:
                if error.retry:
                    self._post_backoff.failed()
                    log.warning("posting the result of build %d to %s failed: %s; retrying", done.build_id,
                                done.task.result_url, error)
                    return False
                log.error("%s refused the result of build %d for good: %s", done.task.result_url,
                          done.build_id, error)
                store.mark_upstream_posted(done.build_id, f"refused: {error}")
                continue
            self._post_backoff.succeeded()
            store.mark_upstream_posted(done.build_id, "posted")
            self.posted += 1
        return True

    def result_request(self, done: UpstreamResult) -> ResultRequest:
        from bbot.manifest import Task

        task = Task.from_text(done.task.task_text)
        challenge = None
        if done.task.challenge is not None:
            if self._key is None:
                log.error("%s sent a challenge but this controller has no key (controller.key): it will "
                          "drop the result of build %d", done.task.url, done.build_id)
            else:
                from bbot.brep.keys import sign_challenge

                challenge = sign_challenge(self._key, done.task.challenge)
        result = Result(task.name, task.version, done.status,
                        [OperationResult(op.name, op.status, op.log) for op in done.operations],
                        worker_checksum=done.worker_checksum, dependency_checksum=done.dependency_checksum)
        return ResultRequest(session=done.task.session, result=result, challenge=challenge,
                             agent_checksum=done.task.agent_checksum)
