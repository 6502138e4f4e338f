"""The agent: owns build machines, takes tasks for them, boots, waits, reports.

Per task (see ``lifecycle``): make the boot directory holding
``task.manifest`` on the TFTP server, create the snapshot, boot, wait for the
worker's ``result.manifest`` (or its death, or the build timeout), shut the
machine down, discard the snapshot, publish the result to the controller's
results queue. A task message is acknowledged as soon as a free machine takes
it: no delivery stays unacknowledged for a build's length; if the agent dies,
the controller's lease brings the task back.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import secrets
import shutil
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu import Consumer

from bbot import bus
from bbot.agent.lifecycle import BootLife, MachineEvent, MachineState
from bbot.agent.machines import backend_for
from bbot.agent.machines.base import BootSpec, MachineBackend, agent_tag, mounts
from bbot.bus import names
from bbot.config import AgentConfig, MachineConfig
from bbot.manifest import (
    MachineHeader,
    ManifestError,
    OperationResult,
    Result,
    ResultRequest,
    Task,
    TaskRequest,
)
from bbot.manifest.status import Status
from bbot.tftp import RESULT_MANIFEST, TASK_MANIFEST, TftpService

log = logging.getLogger(__name__)

# How long to wait for the result upload to land after the worker exited.
RESULT_SETTLE_SECONDS = 2.0
TIMEOUT_PREFIX = "build timed out"
MAX_CONSOLE_TAIL = 8192
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def make_backends(types: Iterable[str] = ("process", "null")) -> dict[str, MachineBackend]:
    """One backend per machine type (see bbot/agent/machines/)."""
    backends: dict[str, MachineBackend] = {}
    for machine_type in types:
        backend: MachineBackend = backend_for(machine_type)
        backends[machine_type] = backend
    return backends


@dataclass(frozen=True)
class HttpDestination:
    """Where the result of a task taken over HTTP goes: brep's result URL, with the task's
    challenge (signed when the result is posted)."""

    result_url: str
    challenge: str | None = None


# A result goes to a results queue (by name: the task's reply_to) or to a result URL.
Destination = str | HttpDestination


@dataclass
class Slot:
    """One build machine of this agent and what it is doing."""

    machine: MachineConfig
    boot: BootLife | None = None
    session: str | None = None  # the task's session while a boot runs

    @property
    def free(self) -> bool:
        return self.boot is None

    def header(self) -> MachineHeader:
        return MachineHeader(id=self.machine.id, name=self.machine.name, summary=self.machine.summary)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        broker_url: str,
        data_dir: Path,
        broker_declare: bool = True,
        toolchain_name: str = "bbot",
        toolchain_version: str = "0",
        backends: dict[str, MachineBackend] | None = None,
        on_boot_done: Callable[[BootLife], None] | None = None,
    ) -> None:
        self.config = config
        self.broker_url = broker_url
        self.broker_declare = broker_declare
        self.toolchain_name = toolchain_name
        self.toolchain_version = toolchain_version
        self.backends = backends or make_backends(sorted({m.type for m in config.machines}))
        self.slots = [Slot(m) for m in config.machines]
        self._free = Counter(s.machine.name for s in self.slots)  # free machines by name, under _lock
        if not self.slots:
            raise ValueError("the agent has no machines: add agent.machines to the configuration")
        for slot in self.slots:
            if slot.machine.type not in self.backends:
                raise ValueError(f"machine '{slot.machine.id}': no backend for type '{slot.machine.type}'")
            names.machine_key(slot.machine.name)  # refuses names that cannot be routing keys
        self.work_root = data_dir / "agent" / config.name
        self.tftp_root = self.work_root / "tftp"
        self.boots_root = self.work_root / "boots"
        self._lock = threading.Lock()
        self._pending: dict[str, threading.Event] = {}  # boot id -> its result upload arrived
        self._fetched: dict[str, threading.Event] = {}  # boot id -> its worker fetched the task
        self.tag = agent_tag(config.name)  # names everything this agent makes on the host
        # Held while reconciling, and by a boot before it makes anything: a boot claimed after
        # reconcile listed the live boots waits, so its machine is never taken for a leftover.
        self._reconcile_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._on_boot_done = on_boot_done
        self.tftp: TftpService | None = None
        self._consumer: _TaskConsumer | None = None
        self._publisher: bus.Publisher | None = None
        self._outbox: _Outbox | None = None
        self._spool: Any = None  # poller.ResultSpool, when polling over HTTP
        self._poller: Any = None  # poller.HttpPoller
        self._freed = threading.Event()  # set when a machine becomes free (the poller waits on it)
        self._results_exchange = bus.results_exchange()  # made once: kombu entities are costly

    # -- start and stop -------------------------------------------------------------------------

    def start(self) -> None:
        # Leftovers of an earlier run of this agent (domains, containers, overlays) are ours
        # alone: clear them, then the folders they were in.
        for backend in self._used_backends():
            backend.attach([s.machine for s in self.slots if self.backends[s.machine.type] is backend])
        self.reconcile()
        for leftover in (self.tftp_root, self.boots_root):
            shutil.rmtree(leftover, ignore_errors=True)
            leftover.mkdir(parents=True)
        log.info("agent %s: what it makes on this host is named %s-*", self.config.name, self.tag)
        for backend in self._used_backends():
            log.info("agent %s: %s", self.config.name, backend.describe())
        self.tftp = TftpService(
            self.tftp_root, host=self.config.tftp_host, port=self.config.tftp_port,
            on_upload=self._on_upload, on_download=self._on_download,
        )
        self.tftp.start()
        log.info("agent %s: TFTP on %s:%d, %d machine(s)", self.config.name, self.config.tftp_host,
                 self.tftp.port, len(self.slots))
        if self.config.controllers:
            self._start_polling()
        else:
            self._start_consuming()
        self._spawn(self._reconcile_periodically, "agent-reconcile")

    def _used_backends(self) -> list[MachineBackend]:
        return [self.backends[t] for t in sorted({s.machine.type for s in self.slots})]

    def live_boot_ids(self) -> set[str]:
        with self._lock:
            return {s.boot.boot_id for s in self.slots if s.boot is not None}

    def reconcile(self) -> list[str]:
        """Remove what this agent made for boots that are not running (domains, containers,
        overlays, boot folders): leftovers of a crash. Touches only what carries our tag."""
        with self._reconcile_lock:
            return self._reconcile()

    def _reconcile(self) -> list[str]:
        removed: list[str] = []
        live = self.live_boot_ids()
        for backend in self._used_backends():
            try:
                removed += backend.reconcile(self.tag, live)
            except Exception:
                log.exception("agent %s: reconciling %s machines failed", self.config.name, backend.type_name)
        for root in (self.boots_root, self.tftp_root):
            if not root.is_dir():
                continue
            mount_points = [Path(m.mount_point) for m in mounts()]
            for entry in root.iterdir():
                # A boot's folders exist a moment before it is live (claimed first, then made).
                if entry.name in live or entry.name in self._pending:
                    continue
                busy = [m for m in mount_points if m == entry or entry in m.parents]
                if busy:
                    # Never delete through a mount (a machine's root, a bind of something else):
                    # its backend unmounts it first, at the next reconcile if not now.
                    log.error("agent %s: leftover %s still has mounts (%s); left for the next reconcile",
                              self.config.name, entry, ", ".join(map(str, busy)))
                    continue
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(f"folder {entry}")
        for what in removed:
            log.warning("agent %s: removed a leftover: %s", self.config.name, what)
        return removed

    def _reconcile_periodically(self) -> None:
        while not self._stopping.wait(self.config.reconcile_interval):
            self.reconcile()

    def _start_polling(self) -> None:
        """Take tasks by polling controllers over HTTP (brep's interface); no broker at all."""
        from bbot.agent.poller import HttpPoller, ResultSpool

        key, fingerprint = None, None
        if self.config.key is not None:
            from bbot.brep.keys import fingerprint as fingerprint_of
            from bbot.brep.keys import load_private_key

            key = load_private_key(self.config.key)  # signs challenges (spool); named in polls
            fingerprint = fingerprint_of(key)
        self._spool = ResultSpool(self.work_root / "http-results", self.config, key)
        self._spool.start()
        self._poller = HttpPoller(self, self.config, fingerprint)
        self._spawn(self._poller.run, "agent-poller")

    def _start_consuming(self) -> None:
        """Take tasks from the broker's task queues; announce the machines on it."""
        self._publisher = bus.Publisher(self.broker_url, declare=self.broker_declare)
        if not self.broker_declare:
            self._leave_out_unprovisioned()
        self._outbox = _Outbox(bus.Publisher(self.broker_url, declare=self.broker_declare), self.config.name)
        self._outbox.start()
        self._consumer = _TaskConsumer(self)
        self._spawn(self._consumer.run, "agent-consumer")
        self._spawn(self._heartbeat, "agent-heartbeat")

    def _leave_out_unprovisioned(self) -> None:
        """On a provisioned broker, machines whose task queue is missing are left out (not
        consumed, not announced) instead of stopping the agent's other machines."""
        assert self._publisher is not None
        missing = [name for name in self.machine_names()
                   if self._publisher.ready_count(bus.task_queue(name, declare=False)) is None]
        for name in missing:
            log.error("agent %s: the broker has no queue %s, so machine name '%s' is left out; "
                      "provision it (bbot broker apply --machine %s) and restart the agent",
                      self.config.name, names.task_queue(name), name, name)
        self.slots = [s for s in self.slots if s.machine.name not in missing]
        if not self.slots:
            raise RuntimeError(f"agent {self.config.name}: no machine has a task queue on the broker; "
                               "provision them with `bbot broker apply`")

    def stop(self) -> None:
        """Stop taking tasks, interrupt running boots (their tasks go back), release everything."""
        self._stopping.set()
        if self._consumer is not None:
            self._consumer.should_stop = True
        for arrived in list(self._pending.values()):
            arrived.set()
        for t in self._threads:
            t.join(timeout=60)
        self._threads.clear()
        if self.tftp is not None:
            self.tftp.stop()
        if self._outbox is not None:
            self._outbox.stop()  # sends what is still in it first
        if self._spool is not None:
            self._spool.stop()  # what it could not post stays on disk, for the next start
        if self._publisher is not None:
            self._publisher.close()

    def _spawn(self, target: Callable[..., Any], name: str, *args: Any) -> None:
        t = threading.Thread(target=target, name=name, args=args, daemon=True)
        # One thread per boot: forget finished ones, or a long-running agent keeps them all.
        self._threads = [old for old in self._threads if old.is_alive()]
        self._threads.append(t)
        t.start()

    # -- announcements --------------------------------------------------------------------------

    def announcement(self) -> TaskRequest:
        return TaskRequest(
            agent=self.config.name,
            toolchain_name=self.toolchain_name,
            toolchain_version=self.toolchain_version,
            machines=[s.header() for s in self.slots],
        )

    def _heartbeat(self) -> None:
        assert self._publisher is not None
        while not self._stopping.is_set():
            try:
                with self._lock:
                    running = [s.session for s in self.slots if s.session]
                self._publisher.publish(
                    self.announcement().to_text(), exchange=bus.announce_exchange(), routing_key="",
                    persistent=False, headers={names.HEADER_RUNNING_SESSIONS: ",".join(running),
                             names.HEADER_HEARTBEAT: self.config.heartbeat},
                )
            except Exception:
                log.exception("agent %s: announcement failed; retrying at the next heartbeat",
                              self.config.name)
            self._stopping.wait(self.config.heartbeat)

    # -- taking tasks ---------------------------------------------------------------------------

    def machine_names(self) -> list[str]:
        return sorted({s.machine.name for s in self.slots})

    def free_count(self, machine_name: str) -> int:
        with self._lock:
            return self._free[machine_name]

    def _release(self, slot: Slot) -> None:
        with self._lock:
            slot.boot = slot.session = None
            self._free[slot.machine.name] += 1
        self._freed.set()

    def free_headers(self) -> list[MachineHeader]:
        """The machines free now, one header each (what a poll offers)."""
        with self._lock:
            return [s.header() for s in self.slots if s.free]

    def wait_freed(self, timeout: float) -> None:
        """Wait until a machine becomes free (or ``timeout``, or the agent stops)."""
        if self._freed.wait(timeout):
            self._freed.clear()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait_stopping(self, timeout: float) -> bool:
        """Sleep ``timeout`` seconds, or less when the agent stops; True when it stops."""
        return self._stopping.wait(timeout)

    def post_result(self, destination: HttpDestination, request: ResultRequest) -> None:
        """Send a result to a result URL (signed, spooled, retried)."""
        assert self._spool is not None
        self._spool.put(destination, request)

    def _claim(self, machine_name: str, session: str) -> Slot | None:
        """A free machine of this name, now busy with ``session``; None when none is free."""
        with self._lock:
            slot = next((s for s in self.slots if s.free and s.machine.name == machine_name), None)
            if slot is not None:
                slot.boot = BootLife(boot_id=f"{slot.machine.id}-{secrets.token_hex(6)}")
                slot.session = session
                self._free[machine_name] -= 1
        return slot

    def take(self, slot: Slot, task: Task, session: str, destination: Destination) -> None:
        """Run ``task`` on the claimed ``slot``; its result goes to ``destination``."""
        assert slot.boot is not None
        backend = self.backends[slot.machine.type]
        if backend.instant:
            self._run_instant(backend, slot, task, session, destination)
        else:
            self._spawn(self._run_boot, f"boot-{slot.boot.boot_id}", slot, task, session, destination)

    def take_http(self, task: Task, session: str, destination: HttpDestination) -> bool:
        """A task taken by polling: run it on a free machine of its name. False when none is
        free (a controller that handed out a machine the agent did not offer)."""
        slot = self._claim(task.machine, session)
        if slot is None:
            return False
        self.take(slot, task, session, destination)
        return True

    def on_task(self, machine_name: str, message: Any) -> None:
        """A task message for ``machine_name``: take it onto a free machine, or give it back."""
        if self._stopping.is_set():
            message.requeue()
            return
        session = message.properties.get("correlation_id") or ""
        reply_to = message.properties.get("reply_to") or ""
        try:
            task = Task.from_text(bus.body_text(message.body))
        except (ManifestError, UnicodeDecodeError) as e:
            # A task we cannot read would fail on every agent: drop it loudly, the lease ends it.
            log.error("agent %s: dropping unreadable task (session %r): %s", self.config.name, session, e)
            message.ack()
            return
        if not session or not reply_to:
            log.error("agent %s: dropping task %s/%s without session or reply_to", self.config.name,
                      task.name, task.version)
            message.ack()
            return
        avoid = str((message.headers or {}).get(names.HEADER_AVOID_AGENTS, "")).split(",")
        if self.config.name in avoid and not message.delivery_info.get("redelivered"):
            # An earlier attempt failed here for infrastructure reasons: give another agent
            # the first chance. If it comes back to us (redelivered), nobody else took it.
            message.requeue()
            return
        slot = self._claim(machine_name, session)
        if slot is None:
            message.requeue()
            return
        assert self._consumer is not None
        self._consumer.handed_on(message)  # acked now, or with the others of this read
        self.take(slot, task, session, reply_to)

    def _run_instant(self, backend: MachineBackend, slot: Slot, task: Task, session: str,
                     reply_to: Destination) -> None:
        """A machine that needs no boot: the whole lifecycle at once, on the consumer's thread."""
        life = slot.boot
        assert life is not None
        started = time.monotonic()
        for event in (MachineEvent.BOOT, MachineEvent.STARTED, MachineEvent.RESULT, MachineEvent.SHUTDOWN,
                      MachineEvent.DISCARD):
            life.move(event)
        result = backend.instant_result(task)
        self._release(slot)
        self._publish_result(ResultRequest(session=session, result=result), reply_to, slot,
                             {"agent-seconds": time.monotonic() - started})

    # -- one boot ---------------------------------------------------------------------------------

    def _on_download(self, boot_dir: str) -> None:
        fetched = self._fetched.get(boot_dir)
        if fetched is not None:
            fetched.set()

    def _on_upload(self, boot_dir: str, path: Path) -> None:
        if path.name == RESULT_MANIFEST:
            arrived = self._pending.get(boot_dir)
            if arrived is not None:
                arrived.set()

    def _run_boot(self, slot: Slot, task: Task, session: str, reply_to: Destination) -> None:
        life = slot.boot
        assert life is not None and self.tftp is not None
        backend = self.backends[slot.machine.type]
        spec = BootSpec(life.boot_id, self.boots_root / life.boot_id, self.config.tftp_host, self.tftp.port,
                        machine=slot.machine, tag=self.tag, label=f"{task.name}/{task.version} {session}")
        boot_dir = self.tftp_root / life.boot_id
        arrived = self._pending[life.boot_id] = threading.Event()
        fetched = self._fetched[life.boot_id] = threading.Event()
        started = time.monotonic()
        result: Result | None = None
        with self._reconcile_lock:
            pass  # see _reconcile_lock
        try:
            boot_dir.mkdir()
            (boot_dir / TASK_MANIFEST).write_text(self._task_for(backend, task).to_text(), encoding="utf-8")
            self.tftp.allow(life.boot_id)
            spec.work_dir.mkdir(parents=True)
            backend.create_snapshot(spec)
            life.move(MachineEvent.BOOT)
            backend.boot(spec)
            if self._wait_for_worker(backend, spec, life, fetched):
                life.move(MachineEvent.STARTED)
                result = self._wait_for_result(backend, spec, life, arrived, task)
        except Exception as e:
            log.exception("agent %s: boot %s failed", self.config.name, life.boot_id)
            if life.state in (MachineState.SNAPSHOT, MachineState.BOOTING, MachineState.RUNNING):
                life.move(MachineEvent.FAILED, f"machine failed to boot: {e}")
        finally:
            try:
                backend.shutdown(spec, self.config.shutdown_grace)
            except Exception:
                # Reconciling removes what is left of it (it carries our tag).
                log.exception("agent %s: shutting boot %s down failed", self.config.name, life.boot_id)
            if life.state is MachineState.RESULT:
                life.move(MachineEvent.SHUTDOWN)
            if result is None:
                result = self._abnormal(task, life, backend.console_tail(spec, MAX_CONSOLE_TAIL))
            try:
                backend.discard(spec)
            except Exception:
                log.exception("agent %s: discarding boot %s failed", self.config.name, life.boot_id)
            self.tftp.forbid(life.boot_id)
            shutil.rmtree(boot_dir, ignore_errors=True)
            self._pending.pop(life.boot_id, None)
            self._fetched.pop(life.boot_id, None)
            life.move(MachineEvent.DISCARD)
            self._release(slot)
        infrastructure: str | None = None
        if self._stopping.is_set() and life.failure is not None:
            result = Result(task.name, task.version, Status.INTERRUPT)
        elif life.failure is not None and not life.failure.startswith(TIMEOUT_PREFIX):
            # The machine, the worker or TFTP failed, not the package: another agent may succeed.
            # (A build that times out may hang by itself: that is the package's result.)
            infrastructure = life.failure
        metrics = {
            "boot-seconds": life.seconds_in(MachineState.BOOTING),
            "worker-seconds": life.seconds_in(MachineState.RUNNING),
            "agent-seconds": time.monotonic() - started,
        }
        self._publish_result(ResultRequest(session=session, result=result), reply_to, slot, metrics,
                             infrastructure=infrastructure)
        if self._on_boot_done is not None:
            self._on_boot_done(life)

    @staticmethod
    def _task_for(backend: MachineBackend, task: Task) -> Task:
        """The task as the machine sees it: a repository on the agent host's loopback is
        reached from a machine with a network of its own at the host's guest address."""
        address = backend.guest_host_address
        if address is None:
            return task
        parts = urllib.parse.urlsplit(task.repository_url)
        if parts.hostname not in LOOPBACK_NAMES:
            return task
        netloc = address + (f":{parts.port}" if parts.port else "")
        if parts.username:
            netloc = parts.username + (f":{parts.password}" if parts.password else "") + "@" + netloc
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        return dataclasses.replace(task, repository_url=url)

    def _wait_for_worker(self, backend: MachineBackend, spec: BootSpec, life: BootLife,
                         fetched: threading.Event) -> bool:
        """Booting: until the worker fetches its task manifest (True), or the machine stops,
        or ``boot_timeout`` passes, or the agent stops (False, the boot failed)."""
        deadline = time.monotonic() + self.config.boot_timeout
        while not fetched.wait(timeout=0.05):
            if self._stopping.is_set():
                life.move(MachineEvent.FAILED, "agent stopping")
                return False
            exited = backend.poll(spec)
            if exited is not None and not fetched.is_set():
                life.move(MachineEvent.FAILED,
                          f"machine stopped before its worker started: {exited.description}")
                return False
            if time.monotonic() > deadline:
                life.move(MachineEvent.FAILED,
                          f"machine did not start its worker within boot_timeout "
                          f"({self.config.boot_timeout:g} s); machine shut down")
                return False
        return True

    def _wait_for_result(self, backend: MachineBackend, spec: BootSpec, life: BootLife,
                         arrived: threading.Event, task: Task) -> Result | None:
        deadline = time.monotonic() + self.config.build_timeout
        result_path = self.tftp_root / spec.boot_id / RESULT_MANIFEST
        exit_seen_at: float | None = None
        while True:
            if arrived.wait(timeout=0.05) and result_path.exists():
                try:
                    result = Result.from_text(result_path.read_bytes())
                except (ManifestError, UnicodeDecodeError) as e:
                    life.move(MachineEvent.FAILED, f"the worker's result manifest is malformed: {e}")
                    return None
                if (result.name, result.version) != (task.name, task.version):
                    life.move(MachineEvent.FAILED,
                              f"the worker reported {result.name}/{result.version} for task "
                              f"{task.name}/{task.version}")
                    return None
                life.move(MachineEvent.RESULT)
                return result
            if self._stopping.is_set():
                life.move(MachineEvent.FAILED, "agent stopping")
                return None
            now = time.monotonic()
            if now > deadline:
                life.move(MachineEvent.FAILED,
                          f"{TIMEOUT_PREFIX} after {self.config.build_timeout:g} s; machine shut down")
                return None
            exited = backend.poll(spec)
            if exited is not None:
                # The upload may still be landing: give it a moment before calling it lost.
                exit_seen_at = exit_seen_at or now
                if now - exit_seen_at > RESULT_SETTLE_SECONDS:
                    life.move(MachineEvent.FAILED, f"{exited.description} without a result")
                    return None

    @staticmethod
    def _abnormal(task: Task, life: BootLife, console: str) -> Result:
        text = f"bbot agent: {life.failure or 'machine failed'}\n"
        if console:
            text += f"\nlast machine console output:\n{console}"
            if not text.endswith("\n"):
                text += "\n"
        return Result(task.name, task.version, Status.ABNORMAL,
                      [OperationResult("machine", Status.ABNORMAL, text)])

    def _publish_result(self, request: ResultRequest, reply_to: Destination, slot: Slot,
                        metrics: dict[str, float], infrastructure: str | None = None) -> None:
        if isinstance(reply_to, HttpDestination):
            # brep's result request has no place for metrics or the failure's kind: the
            # result's status and logs say it all (abnormal, with the machine's log).
            self.post_result(reply_to, request)
            return
        assert self._outbox is not None
        headers: dict[str, Any] = {
            names.HEADER_AGENT: self.config.name,
            names.HEADER_MACHINE_NAME: slot.machine.name,
            names.HEADER_MACHINE_SUMMARY: slot.machine.summary,
        }
        if infrastructure is not None:
            headers[names.HEADER_INFRA_FAILURE] = infrastructure
        headers.update({names.HEADER_METRICS_PREFIX + k: round(v, 6) for k, v in metrics.items()})
        self._outbox.put(bus.Outgoing(request.to_text(), self._results_exchange, reply_to,
                                      correlation_id=request.session, headers=headers))


class _Outbox:
    """Results on their way to the controllers, published in confirmed batches by one thread.

    A result that cannot be published (the broker stayed away through every retry)
    is dropped with an error: the controller's lease issues the task again.
    """

    BATCH = 500

    def __init__(self, publisher: bus.Publisher, agent_name: str) -> None:
        self._publisher = publisher
        self._agent_name = agent_name
        self._queue: queue.Queue[bus.Outgoing | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="agent-outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, message: bus.Outgoing) -> None:
        self._queue.put(message)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=120)
        self._publisher.close()

    def _run(self) -> None:
        done = False
        while not done:
            batch: list[bus.Outgoing] = []
            item = self._queue.get()
            while True:
                if item is None:
                    done = True
                else:
                    batch.append(item)
                if done or len(batch) >= self.BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            try:
                self._publisher.publish_many(batch)
            except Exception:
                log.exception("agent %s: could not publish %d result(s); their leases bring the tasks back",
                              self._agent_name, len(batch))


class _TaskConsumer(bus.ConsumerLoop):
    """Consumes the task queue of each machine name the agent has, as many at once as are free.

    kombu's ConsumerMixin reconnects (with failover) by itself. ``on_iteration``
    keeps each queue's prefetch equal to the free machines of that name and
    pauses the queue when none is free, so tasks stay on the broker for other
    agents instead of waiting here.
    """

    SAFETY_INTERVAL = 0.05  # also the longest a handed-on task waits for its ack when idle
    ACK_BATCH = 100
    ACK_DELAY = 0.01  # seconds

    def __init__(self, agent: Agent) -> None:
        super().__init__(agent.broker_url)
        self.agent = agent
        self._consumers: dict[str, Any] = {}
        self._prefetch: dict[str, int] = {}
        # Tasks handed to machines since the last read, acked together with one `multiple` ack:
        # one settle command in the quorum queue instead of one per task. (kombu's in-memory
        # transport acks a single delivery whatever `multiple` says: ack each there.)
        self._batch_acks = not agent.broker_url.startswith("memory://")
        self._unacked: list[Any] = []
        self._unacked_since = 0.0

    def handed_on(self, message: Any) -> None:
        if not self._batch_acks:
            message.ack()
            return
        if not self._unacked:
            self._unacked_since = time.monotonic()
        self._unacked.append(message)
        # Unacked deliveries count against the prefetch: never let them take half of it, or
        # an agent with few machines would wait for its own acks.
        if len(self._unacked) >= max(1, sum(self._prefetch.values()) // 2):
            self._ack_all()

    def _ack_handed_on(self) -> None:
        if self._unacked and (len(self._unacked) >= self.ACK_BATCH
                              or time.monotonic() - self._unacked_since >= self.ACK_DELAY):
            self._ack_all()

    def _ack_all(self) -> None:
        # Every earlier delivery on this channel was handed on too, or handed back (requeued):
        # deliveries are handled in order, on this thread.
        last, self._unacked = self._unacked[-1], []
        last.ack(multiple=True)

    def get_consumers(self, consumer_cls: type[Consumer], channel: Any) -> list[Any]:
        self._unacked = []  # deliveries of a lost channel are the broker's again
        # Created without a prefetch and without consuming: on_consume_ready starts each
        # one with its own (RabbitMQ applies basic.qos to consumers started after it).
        self._consumers = {}
        for name in self.agent.machine_names():
            self._consumers[name] = consumer_cls(
                queues=[bus.task_queue(name, declare=self.agent.broker_declare)],
                on_message=lambda message, n=name: self.agent.on_task(n, message),
                auto_declare=self.agent.broker_declare,
            )
            self._prefetch[name] = 0
        return list(self._consumers.values())

    def on_consume_ready(self, connection: Any, channel: Any, consumers: list[Any], **kwargs: Any) -> None:
        for consumer in consumers:
            consumer.cancel()
        self.on_iteration()

    def on_iteration(self) -> None:
        self._ack_handed_on()
        for name, consumer in self._consumers.items():
            free = self.agent.free_count(name)
            if free == self._prefetch[name]:
                continue
            # A new prefetch takes effect for a consumer started after it: restart this one.
            # (Deliveries already here stay ours until on_task acks or hands them back.)
            if self._prefetch[name]:
                consumer.cancel()
            if free:
                consumer.qos(prefetch_count=free)
                consumer.consume()
            self._prefetch[name] = free
