"""An agent that polls controllers over HTTP (brep's interface), as build2's bbot agent does.

``HttpPoller`` offers the agent's free machines to each configured controller
in turn (``POST ?build-task``), runs a task it gets like any other, and waits
``poll_interval`` when nobody has work, longer (doubling, up to
``poll_backoff_max``) while a controller fails. ``ResultSpool`` posts each
result to its ``result-url`` with the signed challenge; a result is written to
disk before it is posted, so one that could not be posted yet survives a
restart of the agent and is posted then.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bbot.brep import client
from bbot.brep.client import Backoff, ControllerError
from bbot.config import AgentConfig
from bbot.manifest import Result, ResultRequest, Status, TaskRequest

if TYPE_CHECKING:
    from bbot.agent.service import Agent, HttpDestination

log = logging.getLogger(__name__)


class HttpPoller:
    def __init__(self, agent: Agent, config: AgentConfig, fingerprint: str | None) -> None:
        self.agent = agent
        self.config = config
        self.backoff = {url: Backoff(config.poll_interval, config.poll_backoff_max)
                        for url in config.controllers}
        self.fingerprint = fingerprint  # of the agent's key; None without one

    def request(self) -> TaskRequest | None:
        """The task request offering the free machines; None when none is free."""
        free = self.agent.free_headers()
        if not free:
            return None
        return TaskRequest(agent=self.config.name, toolchain_name=self.agent.toolchain_name,
                           toolchain_version=self.agent.toolchain_version, machines=free,
                           fingerprint=self.fingerprint)

    def run(self) -> None:
        while not self.agent.stopping:
            request = self.request()
            if request is None:
                self.agent.wait_freed(self.config.poll_interval)
                continue
            if self.poll_once(request):
                continue  # maybe more work: ask again at once while machines are free
            # Nobody had work (or nobody answered): wait, but stop promptly when asked.
            self.agent.wait_stopping(min(b.delay for b in self.backoff.values()))

    def poll_once(self, request: TaskRequest) -> bool:
        """Ask each controller in turn for a task; True when one was taken."""
        from bbot.agent.service import HttpDestination

        for url in self.config.controllers:
            backoff = self.backoff[url]
            try:
                response = client.request_task(url, request)
            except ControllerError as error:
                backoff.failed()
                log.warning("agent %s: polling %s failed (%s); next poll in about %.0f s",
                            self.config.name, url, error, backoff.delay)
                continue
            backoff.succeeded()
            if not response.has_task:
                continue
            assert response.task is not None and response.result_url is not None
            destination = HttpDestination(response.result_url, response.challenge)
            if self.agent.take_http(response.task, response.session, destination):
                log.info("agent %s: took %s/%s for machine %s from %s", self.config.name,
                         response.task.name, response.task.version, response.task.machine, url)
                return True
            # A machine we did not offer (or no longer free): give the task back at once.
            log.error("agent %s: %s handed out a task for machine %s, which is not free here; "
                      "giving it back", self.config.name, url, response.task.machine)
            self.agent.post_result(destination, ResultRequest(
                session=response.session,
                result=Result(response.task.name, response.task.version, Status.INTERRUPT)))
        return False


class ResultSpool:
    """Results on their way to result URLs: on disk first, then posted, with back-off.

    A 4xx reply means the controller will never take this result (a malformed or
    foreign one): it is moved to ``rejected/`` and logged, not retried. Anything
    else (no connection, 5xx) is retried until it goes through.
    """

    def __init__(self, directory: Path, config: AgentConfig, private_key: Any) -> None:
        self.directory = directory
        self.rejected = directory / "rejected"
        self.rejected.mkdir(parents=True, exist_ok=True)
        self._key = private_key
        self._backoff = Backoff(min(1.0, config.poll_interval), config.poll_backoff_max)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._counter = 0
        self._thread = threading.Thread(target=self._run, name="agent-result-spool", daemon=True)
        self.posted = 0  # for tests and diagnostics

    def start(self) -> None:
        left = self.pending()
        if left:
            log.info("posting %d result(s) left from an earlier run", len(left))
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Post what can be posted now, then stop; what is left stays for the next start."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob("*.json"))

    def put(self, destination: HttpDestination, request: ResultRequest) -> None:
        if destination.challenge is not None:
            if self._key is None:
                log.error("the controller sent a challenge but this agent has no key (agent.key): "
                          "the result for %s will be dropped by the controller", request.session)
            else:
                from bbot.brep.keys import sign_challenge

                request.challenge = sign_challenge(self._key, destination.challenge)
        with self._lock:
            self._counter += 1
            name = f"{os.getpid()}-{threading.get_ident()}-{self._counter:08d}"
        record = {"url": destination.result_url, "session": request.session, "body": request.to_text()}
        # Written whole, then renamed: a crash never leaves half a result to post.
        temporary = self.directory / f".{name}.tmp"
        temporary.write_text(json.dumps(record), encoding="utf-8")
        temporary.replace(self.directory / f"{_sortable_time()}-{name}.json")
        self._wake.set()

    def _run(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            failed = False
            for path in self.pending():
                if not self._post(path):
                    failed = True
                    break
            if stopping:
                return
            if failed:
                self._stopping.wait(self._backoff.delay)
            else:
                self._wake.wait(1.0)
                self._wake.clear()

    def _post(self, path: Path) -> bool:
        """Post one spooled result; False when it should be tried again later."""
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            url, body = str(record["url"]), str(record["body"])
        except (OSError, ValueError, KeyError) as error:
            log.error("spooled result %s is unreadable (%s); moved to %s", path, error, self.rejected)
            path.replace(self.rejected / path.name)
            return True
        try:
            client.post(url, body.encode("utf-8"))
        except ControllerError as error:
            if error.retry:
                self._backoff.failed()
                log.warning("posting the result for %s failed (%s); retrying in about %.0f s",
                            record.get("session"), error, self._backoff.delay)
                return False
            log.error("the controller refused the result for %s (%s); kept in %s", record.get("session"),
                      error, self.rejected)
            path.replace(self.rejected / path.name)
            return True
        self._backoff.succeeded()
        path.unlink()
        self.posted += 1
        return True


def _sortable_time() -> str:
    return f"{time.time_ns():020d}"
