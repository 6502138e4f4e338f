"""Container machines for real: namespaces, overlayfs, slirp4netns, cgroups, on the Debian image.

Needs root, slirp4netns and the image of ops/images/build (tests/images/image.py builds it
once). Nothing here skips: a host that cannot run containers fails these tests.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bbot.agent.machines.base import GUEST_HOST_ADDRESS, BootSpec, Exit, agent_tag, mounts
from bbot.agent.machines.container import (
    MACHINE_ENV,
    UID_BASE,
    ContainerMachine,
    discover_cgroups,
    machine_processes,
)
from bbot.agent.machines.container_init import mount, umount
from bbot.agent.service import Agent
from bbot.config import AgentConfig, ConfigError, MachineConfig, parse_config
from bbot.devfarm import git_daemon
from bbot.manifest import Task
from bbot.manifest.status import Status
from tests.conftest import SAMPLE, git_repo
from tests.images.image import ensure_image
from tests.machines.harness import result, submit, wait_for

ROOT = Path(__file__).resolve().parents[2]
MACHINE_NAME = "linux_debian_12-gcc_12"

# A worker that does what the agent waits for and no more: fetch the task, upload a result.
TRIVIAL_WORKER = """
import os, random, time
from bbot.tftp import download, upload
from bbot.manifest import OperationResult, Result, Task
from bbot.manifest.status import Status
host, port = os.environ['BBOT_TFTP'].split(':')
boot = os.environ['BBOT_DIR']
task = Task.from_text(download(host, int(port), boot + '/task.manifest'))
print('building', task.name, flush=True)
time.sleep(random.random() * float(os.environ.get('SLEEP', '1')))
result = Result(task.name, task.version, Status.SUCCESS, [OperationResult('update', Status.SUCCESS, 'ok\\n')])
upload(host, int(port), boot + '/result.manifest', result.to_text().encode())
"""


@pytest.fixture(autouse=True)
def sweep(unique: str) -> Iterator[None]:
    """A failing test leaves nothing behind either (tests check for leftovers themselves first)."""
    yield
    for tag in (f"bbot-ct{unique}", agent_tag(f"leak{unique}")):
        ContainerMachine().reconcile(tag, set())


@pytest.fixture(scope="module")
def image() -> Path:
    return ensure_image()


@pytest.fixture(scope="module")
def rootfs(image: Path) -> Path:
    return image / "rootfs"


def make_spec(tmp_path: Path, tag: str, options: dict[str, object], boot_id: str = "m1-000000000001",
              tftp_port: int = 69) -> BootSpec:
    work = tmp_path / "boots" / boot_id
    work.mkdir(parents=True)
    return BootSpec(boot_id, work, "127.0.0.1", tftp_port, machine=MachineConfig("m1", "m", "test", "container",
                                                                               options), tag=tag)


def wait_exit(machine: ContainerMachine, spec: BootSpec, timeout: float = 30.0) -> Exit:
    deadline = time.monotonic() + timeout
    while (ended := machine.poll(spec)) is None:
        assert time.monotonic() < deadline, f"the container did not end in {timeout} s:\n" + machine.console_tail(spec)
        time.sleep(0.02)
    return ended


def run_command(machine: ContainerMachine, spec: BootSpec, timeout: float = 30.0) -> tuple[Exit, str]:
    machine.create_snapshot(spec)
    machine.boot(spec)
    try:
        ended = wait_exit(machine, spec, timeout)
        return ended, machine.console_tail(spec, 1 << 20)
    finally:
        machine.shutdown(spec, 1.0)
        machine.discard(spec)


def cgroups_named(prefix: str) -> list[Path]:
    """Every cgroup (any hierarchy) whose name starts with ``prefix``: found independently of
    the backend's own search."""
    found = []
    for parent, dirs, _ in os.walk("/sys/fs/cgroup"):
        for name in dirs:
            if name.startswith(prefix):
                found.append(Path(parent, name))
    return found


def leftovers(prefix: str) -> list[str]:
    """Mounts, cgroups, processes (by their BBOT_MACHINE) named with ``prefix``."""
    left = [f"mount {m.source} at {m.mount_point}" for m in mounts() if m.source.startswith(prefix)]
    with open("/proc/mounts") as f:
        left += [f"/proc/mounts: {line.strip()}" for line in f if line.startswith(prefix)]
    left += [f"cgroup {p}" for p in cgroups_named(prefix)]
    left += [f"process {pid} of {name}" for pid, name in machine_processes(prefix)
             if "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()]
    return left


def limits_of(name: str) -> dict[str, float]:
    """The limits the host's cgroups (v2 or v1) hold for the boot ``name``."""
    layout = discover_cgroups()
    found: dict[str, float] = {}
    if layout.v2_parent is not None:
        v2 = layout.v2_parent / name
        if "memory" in layout.v2_controllers:
            found["memory"] = int((v2 / "memory.max").read_text())
        if "pids" in layout.v2_controllers:
            found["pids"] = int((v2 / "pids.max").read_text())
        if "cpu" in layout.v2_controllers:
            quota, period = (v2 / "cpu.max").read_text().split()
            found["cpu"] = int(quota) / int(period)
    for controller, parent in layout.v1_parents.items():
        v1 = parent / name
        if controller == "memory":
            found["memory"] = int((v1 / "memory.limit_in_bytes").read_text())
        elif controller == "pids":
            found["pids"] = int((v1 / "pids.max").read_text())
        elif controller == "cpu":
            found["cpu"] = int((v1 / "cpu.cfs_quota_us").read_text()) / int((v1 / "cpu.cfs_period_us").read_text())
    return found


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


# -- options -------------------------------------------------------------------------------------

def test_every_option_problem_is_reported_with_its_fix(tmp_path: Path, image: Path) -> None:
    not_an_image = tmp_path / "empty"
    not_an_image.mkdir()
    with pytest.raises(ConfigError) as caught:
        parse_config({"agent": {"machines": [
            {"id": "a", "name": "n", "type": "container", "rootfs": "/nonexistent/rootfs", "memory": "lots",
             "cpus": 0, "pids": 2.5, "colour": "blue"},
            {"id": "b", "name": "n", "type": "container"},
            {"id": "c", "name": "n", "type": "container", "image": str(image), "rootfs": str(image / "rootfs")},
            {"id": "d", "name": "n", "type": "container", "image": "empty", "internet": "yes"},
        ]}}, data_dir=tmp_path, base=tmp_path)
    problems = caught.value.problems
    assert "agent.machines[0].rootfs: /nonexistent/rootfs is not a directory; build one with ops/images/build" \
        in problems
    assert "agent.machines[0].memory: expected a whole number of at least 16; got 'lots'" in problems
    assert "agent.machines[0].cpus: expected a number of at least 0.01; got 0" in problems
    assert "agent.machines[0].pids: expected a whole number of at least 8; got 2.5" in problems
    assert ("agent.machines[0].colour: unknown key; allowed: id, name, summary, type, image, rootfs, memory, "
            "cpus, pids, internet") in problems
    exactly_one = ("a container machine needs exactly one of 'image' (a directory made by ops/images/build) "
                   "or 'rootfs' (a root file system directory)")
    assert f"agent.machines[1]: {exactly_one}" in problems
    assert f"agent.machines[2]: {exactly_one}" in problems
    assert any(p.startswith(f"agent.machines[3].image: cannot read {not_an_image}/machine.yaml")
               and p.endswith("build the image with ops/images/build") for p in problems)
    assert "agent.machines[3].internet: expected true or false; got 'yes'" in problems
    assert len(problems) == 9, problems


def test_good_options_parse_relative_to_the_configuration(tmp_path: Path, image: Path) -> None:
    (tmp_path / "images").symlink_to(image)
    config = parse_config({"agent": {"machines": [
        {"id": "a", "name": "n", "type": "container", "image": "images", "memory": 512, "cpus": 1.5, "pids": 100},
        {"id": "b", "name": "n", "type": "container", "rootfs": str(image / "rootfs")},
    ]}}, data_dir=tmp_path, base=tmp_path)
    assert [m.type for m in config.agent.machines] == ["container", "container"]
    # Paths are made absolute against the configuration's folder, whatever the agent's cwd.
    assert config.agent.machines[0].options == {"image": str(tmp_path / "images"), "memory": 512, "cpus": 1.5,
                                                "pids": 100}


# -- one machine's lifecycle ---------------------------------------------------------------------

def test_normal_run_inside_its_own_namespaces(tmp_path: Path, rootfs: Path, unique: str) -> None:
    tag = f"bbot-ct{unique}"
    lower_before = sorted(os.listdir(rootfs / "tmp")), (rootfs / "etc/hostname").read_text()
    machine = ContainerMachine(sh(
        "echo uid=$(id -u) gid=$(id -g); cat /proc/self/uid_map; echo host=$(hostname); "
        "echo pid=$$; echo work=$(pwd) tftp=$BBOT_TFTP dir=$BBOT_DIR; "
        "echo built > /build/out && echo tmp > /tmp/out && touch /root/.history && echo wrote; "
        "echo owner=$(stat -c %u:%g /etc/hostname /usr/bin/python3); "
        "echo changed > /etc/hostname && echo etc-writable; "
        "python3 -c 'import bbot, tftpy; print(\"worker code at\", bbot.__file__)'; "
        "echo mounts; cut -d' ' -f2 /proc/mounts; echo links; tail -n +3 /proc/net/dev | cut -d: -f1; "
        "echo processes $(ls -d /proc/[0-9]* | wc -l); "
        "echo routes; tail -n +2 /proc/net/route | cut -f1,2; exit 7"))
    spec = make_spec(tmp_path, tag, {"rootfs": str(rootfs)}, tftp_port=4242)
    start = time.monotonic()
    ended, console = run_command(machine, spec)
    assert ended == Exit(7, "worker exited with code 7"), console
    assert time.monotonic() - start < 10
    lines = console.splitlines()
    assert "uid=0 gid=0" in lines
    assert f"0 {UID_BASE} 65536".split() == lines[lines.index("uid=0 gid=0") + 1].split()
    assert "host=bbot-machine" in lines
    assert "pid=2" in lines  # init is 1: a pid namespace of its own
    assert f"work=/build tftp={GUEST_HOST_ADDRESS}:4242 dir={spec.boot_id}" in lines
    assert "wrote" in lines
    # The rootfs is idmapped: host root's files are the container root's, writable (in the
    # overlay's upper layer) as on any machine.
    assert "owner=0:0 0:0" in lines
    assert "etc-writable" in lines
    assert "worker code at /opt/bbot/bbot/__init__.py" in lines
    seen = lines[lines.index("mounts") + 1:lines.index("links")]
    # Only the container's own tree: none of the host's mounts (/sys/fs/cgroup, /work, ...).
    assert sorted(seen) == sorted(["/", "/opt/bbot/bbot", "/opt/bbot/tftpy", "/dev",
                                   "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                                   "/dev/tty", "/proc", "/dev/shm", "/dev/pts"]), seen
    links = [name.strip() for name in lines[lines.index("links") + 1:lines.index("routes")]
             if not name.startswith("processes")]
    assert sorted(links) == ["lo", "tap0"]
    # 10.0.2.0/24 only (host loopback at 10.0.2.2): no default route off this host.
    assert [line.split() for line in lines[lines.index("routes") + 1:]] == [["tap0", "0002000A"]]
    processes = next(line for line in lines if line.startswith("processes "))
    assert int(processes.split()[1]) < 8, processes  # init, the shell, a few of its children
    # The lower layer is as it was; the boot's writes went with its upper layer.
    assert (sorted(os.listdir(rootfs / "tmp")), (rootfs / "etc/hostname").read_text()) == lower_before
    assert not spec.work_dir.exists()
    assert leftovers(tag) == []


def test_without_idmapping_the_rootfs_is_nobodys_but_build_dirs_are_writable(
        tmp_path: Path, rootfs: Path, unique: str) -> None:
    machine = ContainerMachine(sh("echo owner=$(stat -c %u /etc/hostname); "
                                  "echo x > /etc/hostname || echo etc-refused; "
                                  "echo x > /build/a && echo x > /tmp/a && echo x > /root/a && echo build-writable"),
                               idmap_rootfs=False)
    ended, console = run_command(machine, make_spec(tmp_path, f"bbot-ct{unique}", {"rootfs": str(rootfs)}))
    assert ended.code == 0, console
    assert "owner=65534" in console  # host root, unmapped in the container: the overflow uid
    assert "etc-refused" in console
    assert "build-writable" in console


def test_worker_runs_as_an_unprivileged_host_uid_and_reaches_only_host_loopback(
        tmp_path: Path, rootfs: Path, unique: str) -> None:
    tag = f"bbot-ct{unique}"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            received.append(conn.recv(100))
            conn.sendall(b"hello from the host")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    script = (
        "import socket, time\n"
        f"s = socket.create_connection(('{GUEST_HOST_ADDRESS}', {port}), timeout=5)\n"
        "s.sendall(b'hello from the container'); print(s.recv(100).decode(), flush=True)\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 80), timeout=2)\n"
        "except OSError as e:\n"
        "    print('outside:', e.strerror, flush=True)\n"
        "time.sleep(30)\n"
    )
    machine = ContainerMachine(["python3", "-c", script])
    spec = make_spec(tmp_path, tag, {"rootfs": str(rootfs), "memory": 300, "cpus": 0.5, "pids": 64})
    machine.create_snapshot(spec)
    machine.boot(spec)
    try:
        wait_for(lambda: "outside:" in machine.console_tail(spec), 20, "the container's network checks")
        console = machine.console_tail(spec)
        assert "hello from the host" in console
        assert "outside: Network is unreachable" in console  # no route off this host
        assert received == [b"hello from the container"]
        workers = [pid for pid, _ in machine_processes(spec.resource_name)
                   if Path(f"/proc/{pid}/comm").read_text().strip() == "python3"]
        assert workers, console
        status = Path(f"/proc/{workers[0]}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert uids == [str(UID_BASE)] * 4  # container root is uid 100000 on the host
        assert machine.poll(spec) is None
        assert limits_of(spec.resource_name) == {"memory": 300 * 2**20, "pids": 64, "cpu": 0.5}
        for group in discover_cgroups().dirs(spec.resource_name):
            assert str(workers[0]) in (group / "cgroup.procs").read_text().split(), group
    finally:
        machine.shutdown(spec, 0.5)
        machine.discard(spec)
        server.close()
    assert leftovers(tag) == []


def test_crashing_worker(tmp_path: Path, rootfs: Path, unique: str) -> None:
    machine = ContainerMachine(sh("echo about to crash; kill -9 $$"))
    ended, console = run_command(machine, make_spec(tmp_path, f"bbot-ct{unique}", {"rootfs": str(rootfs)}))
    assert ended == Exit(-9, "worker killed by SIGKILL")
    assert "about to crash" in console
    assert leftovers(f"bbot-ct{unique}") == []


def test_killed_init_ends_the_machine(tmp_path: Path, rootfs: Path, unique: str) -> None:
    machine = ContainerMachine(sh("sleep 600"))
    spec = make_spec(tmp_path, f"bbot-ct{unique}", {"rootfs": str(rootfs)})
    machine.create_snapshot(spec)
    machine.boot(spec)
    try:
        state = spec.work_dir / spec.resource_name / "state.json"
        init = wait_for(lambda: state.exists() and json.loads(state.read_text()).get("init"), 10, "init")
        assert isinstance(init, int)
        os.kill(init, signal.SIGKILL)
        assert wait_exit(machine, spec, 10) == Exit(-9, "container init killed by SIGKILL")
    finally:
        machine.shutdown(spec, 1.0)
        machine.discard(spec)
    assert leftovers(f"bbot-ct{unique}") == []


def test_hanging_worker_is_killed_after_the_grace(tmp_path: Path, rootfs: Path, unique: str) -> None:
    tag = f"bbot-ct{unique}"
    machine = ContainerMachine(sh("trap '' TERM; echo hanging; sleep 600 & sleep 600"))
    spec = make_spec(tmp_path, tag, {"rootfs": str(rootfs)})
    machine.create_snapshot(spec)
    machine.boot(spec)
    wait_for(lambda: "hanging" in machine.console_tail(spec), 10, "the worker to start")
    assert machine.poll(spec) is None
    start = time.monotonic()
    machine.shutdown(spec, 1.0)
    took = time.monotonic() - start
    assert 1.0 <= took < 4.0
    assert [p for p, _ in machine_processes(spec.resource_name)
            if "State:\tZ" not in Path(f"/proc/{p}/status").read_text()] == []
    machine.shutdown(spec, 1.0)  # idempotent
    machine.discard(spec)
    machine.discard(spec)  # idempotent
    assert leftovers(tag) == []


def test_polite_worker_stops_at_sigterm(tmp_path: Path, rootfs: Path, unique: str) -> None:
    machine = ContainerMachine(["python3", "-c",
                                "import signal, sys, time\n"
                                "def stop(*_):\n    print('got TERM', flush=True); sys.exit(0)\n"
                                "signal.signal(signal.SIGTERM, stop); print('ready', flush=True); time.sleep(600)"])
    spec = make_spec(tmp_path, f"bbot-ct{unique}", {"rootfs": str(rootfs)})
    machine.create_snapshot(spec)
    machine.boot(spec)
    wait_for(lambda: "ready" in machine.console_tail(spec), 10, "the worker to start")
    start = time.monotonic()
    machine.shutdown(spec, 10.0)
    assert time.monotonic() - start < 3.0
    assert "got TERM" in machine.console_tail(spec)
    machine.discard(spec)
    assert leftovers(f"bbot-ct{unique}") == []


def test_memory_limit(tmp_path: Path, rootfs: Path, unique: str) -> None:
    machine = ContainerMachine(["python3", "-c", "b = bytearray(40 * 2**20); print('40 MiB fit', flush=True); "
                                                 "b = bytearray(300 * 2**20); print('300 MiB fit')"])
    ended, console = run_command(machine, make_spec(tmp_path, f"bbot-ct{unique}",
                                                    {"rootfs": str(rootfs), "memory": 128}))
    assert "40 MiB fit" in console
    assert "300 MiB fit" not in console
    assert ended == Exit(-9, "worker killed by SIGKILL"), console  # the OOM killer, in the cgroup
    assert "memory" in discover_cgroups().limited()


def test_pids_limit(tmp_path: Path, rootfs: Path, unique: str) -> None:
    machine = ContainerMachine(["python3", "-c",
                                "import subprocess\nchildren = []\n"
                                "try:\n"
                                "    for _ in range(100):\n"
                                "        children.append(subprocess.Popen(['sleep', '30']))\n"
                                "except OSError as e:\n"
                                "    print('refused after', len(children), e.strerror, flush=True)\n"
                                "for c in children:\n    c.kill()\n"])
    ended, console = run_command(machine, make_spec(tmp_path, f"bbot-ct{unique}",
                                                    {"rootfs": str(rootfs), "pids": 20}))
    assert ended.code == 0, console
    refused = next(line for line in console.splitlines() if line.startswith("refused after"))
    # init and python itself count: fewer than 20 children.
    assert int(refused.split()[2]) < 20
    assert "Resource temporarily unavailable" in refused


def test_internet_option_adds_a_default_route(tmp_path: Path, rootfs: Path, unique: str) -> None:
    # Only the route is checked: test traffic stays on this host.
    machine = ContainerMachine(sh("tail -n +2 /proc/net/route | cut -f1,2,3"))
    ended, console = run_command(machine, make_spec(tmp_path, f"bbot-ct{unique}",
                                                    {"rootfs": str(rootfs), "internet": True}))
    assert ended.code == 0, console
    # Default via 10.0.2.2 (slirp4netns' gateway), as well as the local network.
    assert sorted(line.split() for line in console.splitlines()) == [["tap0", "00000000", "0202000A"],
                                                                     ["tap0", "0002000A", "00000000"]]


def test_without_cgroups_rlimits_limit_and_shutdown_still_ends_everything(
        tmp_path: Path, rootfs: Path, unique: str) -> None:
    machine = ContainerMachine(["python3", "-c",
                                "import os, subprocess, time\n"
                                "try:\n    bytearray(300 * 2**20)\nexcept MemoryError:\n"
                                "    print('300 MiB refused', flush=True)\n"
                                "children = []\n"
                                "try:\n"
                                "    for _ in range(100):\n"
                                "        children.append(subprocess.Popen(['setsid', 'sleep', '600']))\n"
                                "except OSError as e:\n"
                                "    print('refused after', len(children), flush=True)\n"
                                "time.sleep(600)\n"], use_cgroups=False)
    spec = make_spec(tmp_path, f"bbot-ct{unique}", {"rootfs": str(rootfs), "memory": 128, "pids": 20})
    machine.create_snapshot(spec)
    machine.boot(spec)
    wait_for(lambda: "refused after" in machine.console_tail(spec), 20, "the limits to bite")
    console = machine.console_tail(spec)
    assert "300 MiB refused" in console
    assert int(console.split("refused after")[1].split()[0]) < 20
    assert cgroups_named(spec.resource_name) == []
    assert len(list(machine_processes(spec.resource_name))) > 10
    machine.shutdown(spec, 0.2)
    machine.discard(spec)
    assert leftovers(f"bbot-ct{unique}") == []


def test_missing_slirp4netns_is_named_with_its_package(tmp_path: Path, rootfs: Path, unique: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for present in ("nsenter", "ip"):
        (tools / present).symlink_to(str(shutil.which(present)))
    monkeypatch.setenv("PATH", str(tools))  # a host where slirp4netns is not installed
    machine = ContainerMachine()
    assert "MISSING on this host: slirp4netns (apt-get install slirp4netns)" in machine.describe()
    spec = make_spec(tmp_path, f"bbot-ct{unique}", {"rootfs": str(rootfs)})
    with pytest.raises(RuntimeError, match="container machines need slirp4netns on the agent's host: "
                                           "apt-get install slirp4netns"):
        machine.create_snapshot(spec)
    machine.shutdown(spec, 1.0)
    machine.discard(spec)
    assert leftovers(f"bbot-ct{unique}") == []


def test_missing_rootfs_fails_the_snapshot_with_its_fix(tmp_path: Path, unique: str) -> None:
    machine = ContainerMachine()
    spec = make_spec(tmp_path, f"bbot-ct{unique}", {"rootfs": str(tmp_path / "gone")})
    with pytest.raises(ValueError, match="is not a directory; build one with ops/images/build"):
        machine.create_snapshot(spec)
    machine.shutdown(spec, 1.0)
    machine.discard(spec)


# -- leftovers -----------------------------------------------------------------------------------

@pytest.fixture
def decoys(tmp_path: Path, rootfs: Path, unique: str) -> Iterator[dict[str, object]]:
    """An overlay mount, cgroups and a process of someone else's, looking much like ours."""
    other = f"bbot-other{unique}-m1-000000000009"
    base = tmp_path / "decoy"
    for name in ("upper", "work", "root"):
        (base / name).mkdir(parents=True)
    mount(other, str(base / "root"), "overlay", 0,
          f"lowerdir={rootfs},upperdir={base / 'upper'},workdir={base / 'work'}")
    groups = [d / other for d in discover_cgroups().dirs("")]
    for group in groups:
        group.mkdir()
    process = subprocess.Popen(["sleep", "600"], env={MACHINE_ENV: other})
    try:
        yield {"name": other, "mount": base / "root", "cgroups": groups, "process": process}
    finally:
        process.kill()
        process.wait()
        umount(str(base / "root"))
        for group in groups:
            group.rmdir()


def test_reconcile_removes_what_a_crashed_agent_left_and_nothing_else(
        tmp_path: Path, rootfs: Path, unique: str, decoys: dict[str, object]) -> None:
    tag = f"bbot-ct{unique}"
    crashed = ContainerMachine(sh("echo running; sleep 600"))
    specs = [make_spec(tmp_path, tag, {"rootfs": str(rootfs), "memory": 256}, boot_id=f"m{i}-00000000000{i}")
             for i in range(3)]
    for spec in specs:
        crashed.create_snapshot(spec)
        crashed.boot(spec)
    for spec in specs:
        wait_for(lambda s=spec: "running" in crashed.console_tail(s), 15, "the containers to run")  # type: ignore[misc]
    assert len(leftovers(tag)) > 9
    # The backend that runs them never takes its own boots for leftovers, even when the
    # agent's list of live boots was taken before they began.
    assert crashed.reconcile(tag, set()) == []
    # A new agent, which knows only the boot it runs now (the last one).
    fresh = ContainerMachine()
    removed = fresh.reconcile(tag, {specs[2].boot_id})
    text = "\n".join(removed)
    for spec in specs[:2]:
        assert f"overlay {spec.resource_name} at {spec.work_dir / spec.resource_name / 'root'}" in removed
        assert f"cgroup {discover_cgroups().dirs(spec.resource_name)[0]}" in removed
        assert "slirp4netns) of " + spec.resource_name in text
        assert "(sleep) of " + spec.resource_name in text
    assert leftovers(specs[0].resource_name) == leftovers(specs[1].resource_name) == []
    assert leftovers(specs[2].resource_name) != []  # live: untouched
    assert crashed.poll(specs[2]) is None
    # Someone else's: untouched.
    assert any(m.source == decoys["name"] and m.mount_point == str(decoys["mount"]) for m in mounts())
    assert all(Path(str(g)).is_dir() for g in decoys["cgroups"])  # type: ignore[attr-defined]
    assert decoys["process"].poll() is None  # type: ignore[attr-defined]
    # The crashed agent's machines end as crashed ones do: with everything gone.
    assert fresh.reconcile(tag, set()) != []
    assert leftovers(tag) == []
    assert crashed.poll(specs[0]) is not None
    for spec in specs:
        crashed.shutdown(spec, 0.1)
        crashed.discard(spec)
    assert fresh.reconcile(tag, set()) == []


# -- with the real agent -------------------------------------------------------------------------

@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[int]:
    """``git daemon`` on host loopback serving libhello.git; yields its port."""
    served = tmp_path / "git"
    served.mkdir()
    git_repo(tmp_path / "src", SAMPLE)
    subprocess.run(["git", "clone", "-q", "--bare", str(tmp_path / "src"), str(served / "libhello.git")], check=True)
    with git_daemon(served) as url:
        yield int(url.rsplit(":", 1)[1])


def container_agent_config(name: str, image: Path, count: int = 1, **timeouts: float) -> AgentConfig:
    return AgentConfig(name=name, heartbeat=0.5, shutdown_grace=timeouts.pop("shutdown_grace", 2.0),
                       machines=tuple(MachineConfig(f"c{i}", MACHINE_NAME, "Debian 12 container", "container",
                                                    {"image": str(image), "memory": 1024})
                                      for i in range(count)), **timeouts)  # type: ignore[arg-type]


@pytest.mark.slow
def test_agent_builds_libhello_in_a_container(tmp_path: Path, image: Path, git_server: int, unique: str) -> None:
    config = container_agent_config(f"ct{unique}", image, build_timeout=300, boot_timeout=60)
    machine = ContainerMachine()
    agent = Agent(config, broker_url="memory://", data_dir=tmp_path, backends={"container": machine})
    agent.start()
    try:
        reply = submit(Task(name="libhello", version="1.0.0", repository_url=f"git://127.0.0.1:{git_server}/libhello.git#main",
                            machine=MACHINE_NAME, target="x86_64-linux-gnu"), unique)
        request, _ = result(reply, timeout=300)
    finally:
        agent.stop()
    outcome = request.result
    logs = "\n".join(f"--- {r.operation} {r.status}\n{r.log}" for r in outcome.results)
    assert outcome.status is Status.SUCCESS, logs
    operations = [r.operation for r in outcome.results]
    assert "update" in operations and "test" in operations, operations
    assert f"{GUEST_HOST_ADDRESS}:{git_server}" in logs  # cloned through slirp4netns
    assert leftovers(agent.tag) == []
    assert list((tmp_path / "agent" / config.name / "boots").iterdir()) == []


def drive(data_dir: str, name: str, image: str, tasks: str, seed: str) -> None:
    """An agent in a process of its own (killed by the leak test): two container machines with
    the trivial worker, ``tasks`` tasks from its in-process broker. Prints one line per boot
    started and ended and per result, and what reconciling removed at its start."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    random.seed(int(seed))

    class Announcing(ContainerMachine):
        # "snapshot" before anything is made: a boot whose start is killed midway (the test
        # kills inits it finds) still counts. "boot" once it runs: agent kills wait for it,
        # so that they leave running machines (overlay, slirp4netns) to reconcile.
        def create_snapshot(self, spec: BootSpec) -> None:
            print("snapshot", spec.boot_id, flush=True)
            super().create_snapshot(spec)

        def boot(self, spec: BootSpec) -> None:
            super().boot(spec)
            print("boot", spec.boot_id, flush=True)

    config = container_agent_config(name, Path(image), count=2, build_timeout=20, boot_timeout=20,
                                    shutdown_grace=0.5)
    backend = Announcing(["python3", "-c", TRIVIAL_WORKER])
    agent = Agent(config, broker_url="memory://", data_dir=Path(data_dir), backends={"container": backend},
                  on_boot_done=lambda life: print("done", life.boot_id, flush=True))
    removed = agent.reconcile()
    print("reconciled", json.dumps(removed), flush=True)
    agent.start()
    try:
        for i in range(int(tasks)):
            submit(Task(name="libx", version=f"1.{i}", repository_url="git://127.0.0.1/nothing.git",
                        machine=MACHINE_NAME, target="x86_64-linux-gnu"), f"{name}-{i}", session=f"/s/{i}")
        for i in range(int(tasks)):
            request, _ = result(f"{name}-{i}", timeout=60)
            print("result", request.result.status.value, flush=True)
    finally:
        agent.stop()
    print("stopped", flush=True)


@pytest.mark.slow
def test_no_leak_over_50_boots_with_random_kills(tmp_path: Path, image: Path, unique: str) -> None:
    name = f"leak{unique}"
    tag = agent_tag(name)
    rng = random.Random(int(unique, 16))
    boots: set[str] = set()
    done: set[str] = set()
    statuses: list[str] = []
    reconciled: list[str] = []
    kills = {"worker": 0, "init": 0, "agent": 0}
    agent_kills_at = sorted(rng.sample(range(8, 45), 3))
    start = time.monotonic()
    while len(boots) < 50:
        assert time.monotonic() - start < 240, f"too slow: {len(boots)} boots"
        driver = subprocess.Popen(
            [sys.executable, "-c", "import sys; from tests.machines.test_container import drive; drive(*sys.argv[1:])",
             str(tmp_path), name, str(image), str(50 - len(boots)), str(rng.randrange(1 << 30))],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert driver.stdout is not None
        stopped = False
        try:
            while True:
                ready, _, _ = select.select([driver.stdout], [], [], rng.uniform(0.1, 0.6))
                if ready:
                    line = driver.stdout.readline()
                    if not line:
                        break
                    word, _, rest = line.strip().partition(" ")
                    if word == "snapshot":
                        boots.add(rest)
                    elif word == "done":
                        done.add(rest)
                    elif word == "result":
                        statuses.append(rest)
                    elif word == "reconciled":
                        reconciled += json.loads(rest)
                    elif word == "stopped":
                        stopped = True
                    if word == "boot" and agent_kills_at and len(boots) >= agent_kills_at[0]:
                        agent_kills_at.pop(0)
                        driver.kill()  # the agent dies with its machines running
                        kills["agent"] += 1
                        break
                    continue
                # Now and then, kill a worker or a container's init mid-build.
                states = list((tmp_path / "agent" / name / "boots").glob(f"*/{tag}-*/state.json"))
                if not states or rng.random() < 0.4:
                    continue
                try:
                    init = json.loads(rng.choice(states).read_text()).get("init")
                    victims = ({"init": [init]} if rng.random() < 0.5 else
                               {"worker": [int(p) for p in Path(f"/proc/{init}/task/{init}/children")
                                           .read_text().split()]})
                except (OSError, ValueError):
                    continue
                for kind, pids in victims.items():
                    for pid in pids:
                        if isinstance(pid, int):
                            try:
                                os.kill(pid, signal.SIGKILL)
                                kills[kind] += 1
                            except ProcessLookupError:
                                pass
        finally:
            if driver.poll() is None and not stopped:
                driver.wait(timeout=60)
            driver.kill()
            driver.wait()
            driver.stdout.close()
        if stopped:
            break
    # A last agent start finds nothing left; what is left of ours anywhere: nothing.
    final = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.machines.test_container import drive; drive(*sys.argv[1:])",
         str(tmp_path), name, str(image), "0", "1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "reconciled []" in final.stdout, final.stdout + final.stderr
    took = time.monotonic() - start
    print(f"{len(boots)} boots, {len(statuses)} results ({statuses.count('success')} success), kills {kills}, "
          f"{len(reconciled)} leftovers reconciled, {took:.1f} s")
    assert len(boots) >= 50
    assert kills["agent"] == 3 and kills["worker"] + kills["init"] > 0
    assert any("slirp4netns" in r for r in reconciled) and any(r.startswith("overlay ") for r in reconciled)
    assert leftovers(tag) == []
    assert list((tmp_path / "agent" / name / "boots").iterdir()) == []
    assert list((tmp_path / "agent" / name / "tftp").iterdir()) == []
    assert shutil.which("slirp4netns")
