"""Test-owned RabbitMQ nodes on this machine, for fault tests (kill a broker, fail over a cluster).

Each node is named ``bbottest{index}@localhost`` and listens on 127.0.0.1 only: AMQP on 5672+index,
Erlang distribution on 25672+index. The system node ``rabbit@localhost`` (5672/25672) is never touched:
nothing here signals a process unless its environment names a ``bbottest*`` node.

Erlang cookie: the system node runs as the ``rabbitmq`` user with the cookie in
``/var/lib/rabbitmq/.erlang.cookie``; root has none in ``/root``. Both ``rabbitmq-server`` and
``rabbitmqctl`` read ``$HOME/.erlang.cookie``, so the test nodes and every ``rabbitmqctl`` run against
them get ``HOME`` set to a test-owned folder under ``base_dir`` holding a fresh random cookie (mode 400).
Nodes made with the same ``base_dir`` share it, which is what clustering needs; neither system cookie
is read or written.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
RABBITMQ_SERVER = RABBITMQ_BIN / "rabbitmq-server"
RABBITMQCTL = RABBITMQ_BIN / "rabbitmqctl"
RABBITMQ_QUEUES = RABBITMQ_BIN / "rabbitmq-queues"
HOST = "127.0.0.1"
AMQP_BASE_PORT = 5672
DIST_BASE_PORT = 25672
NODE_PREFIX = "bbottest"
POLL = 0.1
LOOPBACK_DIST = "-kernel inet_dist_use_interface {127,0,0,1}"


class RabbitMQMissing(RuntimeError):
    """RabbitMQ's server scripts are not installed where Debian puts them."""


class RabbitCtlError(subprocess.CalledProcessError):
    """A ``rabbitmqctl`` (or ``rabbitmq-queues``) run failed; the message carries its output."""

    def __str__(self) -> str:
        out = (self.stderr or "").strip() or (self.stdout or "").strip()
        return f"{' '.join(map(str, self.cmd))} failed with exit {self.returncode}: {out}"


def require_rabbitmq() -> None:
    """Raise RabbitMQMissing, saying how to fix it, when the server scripts are not installed."""
    for path in (RABBITMQ_SERVER, RABBITMQCTL):
        if not os.access(path, os.X_OK):
            raise RabbitMQMissing(
                f"{path} is missing: the fault tests start their own RabbitMQ nodes; "
                "install Debian's server with `apt-get install rabbitmq-server`")


def port_open(port: int, host: str = HOST) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; returns the seconds it took, raises TimeoutError naming ``what``."""
    start = time.monotonic()
    deadline = start + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(POLL)
    return time.monotonic() - start


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as gone (PID 1 here reaps orphans late)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The state follows the parenthesised command name, which may itself hold spaces.
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _node_of(pid: int) -> str | None:
    """The RABBITMQ_NODENAME a RabbitMQ server beam was started with, or None for anything else."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "beam.smp":
            return None
        # rabbitmqctl runs a beam with the same environment: only the server boots the rabbit module.
        if b"\0-s\0rabbit\0boot\0" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return None
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for entry in environ:
        if entry.startswith(b"RABBITMQ_NODENAME="):
            return entry.split(b"=", 1)[1].decode(errors="replace")
    return None


def _beams_of(name: str) -> list[int]:
    """PIDs of live beam processes running node ``name`` (found by environment, not by pid file)."""
    if not name.startswith(NODE_PREFIX):
        raise ValueError(f"refusing to look for node {name!r}: only {NODE_PREFIX}* nodes belong to tests")
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _node_of(int(entry.name)) == name and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _in_parallel(actions: Iterable[Callable[[], object]]) -> None:
    """Run actions in threads; re-raise the first failure after all have finished."""
    errors: list[BaseException] = []

    def run(action: Callable[[], object]) -> None:
        try:
            action()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(a,), daemon=True) for a in actions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


class RabbitNode:
    """One test-owned RabbitMQ node ``bbottest{index}@localhost`` with its files under ``base_dir``."""

    def __init__(self, index: int, base_dir: Path) -> None:
        if not 1 <= index <= 99:
            raise ValueError(f"RabbitNode index {index} is out of range: use 1-99 (0 is the system node's port)")
        self.index = index
        self.name = f"{NODE_PREFIX}{index}@localhost"
        self.port = AMQP_BASE_PORT + index
        self.dist_port = DIST_BASE_PORT + index
        self.base_dir = Path(base_dir)
        self.dir = self.base_dir / f"{NODE_PREFIX}{index}"
        self.home = self.base_dir / "erlang-home"
        self.mnesia_base = self.dir / "mnesia"
        self.log_base = self.dir / "log"
        self.pid_file = self.mnesia_base / f"{self.name}.pid"
        self._started_before = False

    def __repr__(self) -> str:
        return f"RabbitNode({self.name}, port {self.port})"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}//"

    @property
    def pid(self) -> int:
        """The beam's PID from the node's pid file."""
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError) as e:
            raise RuntimeError(f"{self.name} has no readable pid file at {self.pid_file}: is it started?") from e

    @property
    def running(self) -> bool:
        """True while a beam process for this node exists (ready or not)."""
        return bool(_beams_of(self.name))

    def env(self) -> dict[str, str]:
        """The environment the server and the CLI tools run with for this node."""
        # Inherited RABBITMQ_*/ERL_* settings (e.g. ERL_FLAGS of the system node) must not leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.home),
            "PATH": env.get("PATH", "") + ":/usr/bin:/bin",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.mnesia_base),
            "RABBITMQ_LOG_BASE": str(self.log_base),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            # Our own (empty) env file: /etc/rabbitmq/rabbitmq-env.conf names the system node.
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": HOST,
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": LOOPBACK_DIST,
            "RABBITMQ_CTL_ERL_ARGS": LOOPBACK_DIST,
        })
        return env

    def _write_files(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20).upper())
            cookie.chmod(0o400)
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = {HOST}:{self.port}\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("# test node: settings come from the environment\n")

    def _kill_beams(self, timeout: float = 20) -> None:
        """SIGKILL every beam running this node and wait until its ports are closed."""
        for pid in _beams_of(self.name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _beams_of(self.name), timeout, f"{self.name} beam to exit after SIGKILL")
        wait_until(lambda: not port_open(self.port) and not port_open(self.dist_port), timeout,
                   f"{self.name} ports {self.port}/{self.dist_port} to close")

    def start(self) -> None:
        """Launch the node detached; call wait_ready() next. The first start of this object wipes its data,
        after killing a leftover node of the same name (e.g. from a crashed test run)."""
        require_rabbitmq()
        if self.running:
            if self._started_before:
                raise RuntimeError(f"{self.name} is already running: stop() or kill() it before start()")
            self._kill_beams()  # a node by this name left over from an earlier run
        if not self._started_before:
            # Stale data would make a fresh node try to rejoin an old cluster.
            shutil.rmtree(self.mnesia_base, ignore_errors=True)
            shutil.rmtree(self.log_base, ignore_errors=True)
        for port in (self.port, self.dist_port):
            if port_open(port):
                raise RuntimeError(f"port {HOST}:{port} for {self.name} is taken by another process: "
                                   f"find it with `ss -ltnp 'sport = :{port}'` and stop it")
        self._write_files()
        self.pid_file.unlink(missing_ok=True)
        self._started_before = True
        out = self.dir / "rabbitmq-server.out"
        with out.open("ab") as sink:
            result = subprocess.run([str(RABBITMQ_SERVER), "-detached"], env=self.env(), stdin=subprocess.DEVNULL,
                                    stdout=sink, stderr=sink, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{RABBITMQ_SERVER} -detached for {self.name} exited {result.returncode}: "
                               f"{out.read_text(errors='replace')[-2000:]}")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the node's log, for failure messages."""
        log = self.log_base / f"{self.name}.log"
        try:
            return log.read_text(errors="replace")[-chars:]
        except OSError:
            return f"(no log at {log})"

    def wait_ready(self, timeout: float = 60) -> float:
        """Wait until the node accepts AMQP and has finished booting; returns the seconds waited."""
        start = time.monotonic()
        deadline = start + timeout
        # The beam needs a moment after `-detached` returns before it shows up in /proc.
        grace = start + 5
        while True:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"{self.name} not ready within {timeout:g} s; log tail:\n{self.log_tail()}")
            if now > grace and not self.running:
                raise RuntimeError(f"{self.name} died while booting; log tail:\n{self.log_tail()}")
            # The listener opens late in boot; await_startup then confirms the remaining boot steps.
            if port_open(self.port):
                left = max(1, int(deadline - now))
                try:
                    self.ctl("await_startup", "--timeout", str(left), timeout=left + 10)
                    return time.monotonic() - start
                except RabbitCtlError:
                    pass  # not registered with epmd yet: poll again
            time.sleep(POLL)

    def kill(self) -> None:
        """SIGKILL the node (a crash, no clean shutdown) and wait until its ports are closed."""
        self._kill_beams()

    def stop(self, timeout: float = 30) -> None:
        """Stop the node gracefully; SIGKILL it when that fails. Does nothing when it is not running."""
        if not self.running:
            return
        try:
            self.ctl("stop", timeout=timeout)
            wait_until(lambda: not self.running and not port_open(self.port), timeout, f"{self.name} to exit")
        except (RabbitCtlError, TimeoutError, subprocess.TimeoutExpired):
            self._kill_beams()

    def restart(self, kill: bool = False, timeout: float = 60) -> float:
        """Stop (or SIGKILL) the node, start it again with its data and wait until ready; returns seconds."""
        start = time.monotonic()
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()
        self.wait_ready(timeout)
        return time.monotonic() - start

    def quorum_member_saved(self, queue: str, vhost: str = "/") -> bool:
        """True once this node's Ra directory file on disk names the node's member of quorum queue ``queue``.

        Ra 2.2.0 (RabbitMQ 3.10.8) writes that registration to ``names.dets`` up to 0.5 s after the
        queue is declared. A node SIGKILLed before then comes back with a new, empty member that never
        elects a leader (the queue is stuck: operations time out with INTERNAL_ERROR after 60 s), and the
        queue's messages on that node are unreachable. Tests that kill a node wait on this first unless
        that window is what they test."""
        names = self.mnesia_base / self.name / "quorum" / self.name / "names.dets"
        ra_name = f"{vhost.replace('/', '%2F')}_{queue}".encode()
        try:
            return ra_name in names.read_bytes()
        except OSError:
            return False

    def wait_quorum_member_saved(self, queue: str, vhost: str = "/", timeout: float = 10) -> float:
        """Wait until quorum_member_saved(); returns the seconds waited."""
        return wait_until(lambda: self.quorum_member_saved(queue, vhost), timeout,
                          f"{self.name} to save its Ra member of queue {queue!r} (vhost {vhost!r}) to disk")

    def _tool(self, tool: Path, args: Sequence[str], timeout: float) -> str:
        cmd = [str(tool), "-n", self.name, *args]
        r = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False)
        if r.returncode != 0:
            raise RabbitCtlError(r.returncode, cmd, r.stdout, r.stderr)
        return r.stdout

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run ``rabbitmqctl -n NODE ARGS`` against this node; returns stdout, raises RabbitCtlError."""
        return self._tool(RABBITMQCTL, args, timeout)

    def queues(self, *args: str, timeout: float = 60) -> str:
        """Run ``rabbitmq-queues -n NODE ARGS`` against this node; returns stdout, raises RabbitCtlError."""
        return self._tool(RABBITMQ_QUEUES, args, timeout)


class RabbitCluster:
    """Test-owned nodes (1, 2, 3 by default: AMQP ports 5673-5675) clustered with the first one."""

    def __init__(self, base_dir: Path, indices: Sequence[int] = (1, 2, 3)) -> None:
        if len(indices) < 2 or len(set(indices)) != len(indices):
            raise ValueError(f"RabbitCluster indices {tuple(indices)}: give two or more distinct node indices")
        self.nodes = [RabbitNode(i, base_dir) for i in indices]

    @property
    def first(self) -> RabbitNode:
        return self.nodes[0]

    @property
    def urls(self) -> list[str]:
        """AMQP URLs of all nodes, in node order."""
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """All nodes' URLs joined with ';': kombu's failover form."""
        return ";".join(self.urls)

    def node(self, index: int) -> RabbitNode:
        for n in self.nodes:
            if n.index == index:
                return n
        raise KeyError(f"no node {index} in this cluster: its nodes are {[n.index for n in self.nodes]}")

    def start(self, timeout: float = 120) -> float:
        """Start all nodes (booting in parallel), join the others to the first; returns seconds taken."""
        start = time.monotonic()
        for n in self.nodes:
            n.start()
        _in_parallel(partial(n.wait_ready, timeout) for n in self.nodes)
        rest = self.nodes[1:]
        _in_parallel(partial(n.ctl, "stop_app") for n in rest)
        # Joins one at a time: each rewrites the cluster's mnesia schema.
        for n in rest:
            n.ctl("join_cluster", self.first.name)
        _in_parallel(partial(n.ctl, "start_app") for n in rest)
        self.wait_running(timeout - (time.monotonic() - start))
        return time.monotonic() - start

    def running_nodes(self) -> list[str]:
        """Names of the running cluster members, as any live node reports them."""
        for n in self.nodes:
            if not n.running:
                continue
            with contextlib.suppress(RabbitCtlError, subprocess.TimeoutExpired, json.JSONDecodeError):
                status = json.loads(n.ctl("cluster_status", "--formatter", "json", timeout=30))
                return sorted(status.get("running_nodes", []))
        return []

    def wait_running(self, timeout: float = 60) -> float:
        """Wait until every node is a running member of the cluster."""
        want = sorted(n.name for n in self.nodes)
        return wait_until(lambda: self.running_nodes() == want, max(timeout, 1),
                          f"cluster members {want} all running")

    def ensure_running(self, timeout: float = 90) -> None:
        """Start nodes that were killed or stopped (they rejoin with their data) and wait for all of them."""
        down = [n for n in self.nodes if not n.running]
        for n in down:
            n.start()
        _in_parallel(partial(n.wait_ready, timeout) for n in down)
        self.wait_running(timeout)

    def leader_of(self, queue: str, vhost: str = "/") -> RabbitNode:
        """The node holding the leader of quorum queue ``queue``, as a live node reports it."""
        errors = []
        for n in self.nodes:
            if not n.running:
                continue
            try:
                rows = json.loads(n.ctl("list_queues", "-p", vhost, "name", "leader", "--formatter", "json",
                                        timeout=30))
            except (RabbitCtlError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
                errors.append(f"{n.name}: {e}")
                continue
            for row in rows:
                if row.get("name") == queue:
                    leader = row.get("leader")
                    for m in self.nodes:
                        if m.name == leader:
                            return m
                    raise LookupError(f"queue {queue!r} in vhost {vhost!r} has leader {leader!r}, "
                                      f"not one of {[m.name for m in self.nodes]}: is it a quorum queue?")
            raise LookupError(f"no queue {queue!r} in vhost {vhost!r} on {n.name}: declare it first")
        raise LookupError(f"no live node answered for queue {queue!r}: {errors or 'all nodes are down'}")

    def wait_new_leader(self, queue: str, old: RabbitNode, vhost: str = "/", timeout: float = 30) -> RabbitNode:
        """Wait until the leader of ``queue`` is on a live node other than ``old``; returns that node."""
        found: list[RabbitNode] = []

        def moved() -> bool:
            with contextlib.suppress(LookupError):
                leader = self.leader_of(queue, vhost)
                if leader is not old and leader.running:
                    found.append(leader)
                    return True
            return False

        wait_until(moved, timeout, f"a new leader for queue {queue!r} away from {old.name}")
        return found[-1]

    def stop(self) -> None:
        """Stop every node, also ones killed or half started; never raises for a node already gone."""
        _in_parallel(n.stop for n in self.nodes)
