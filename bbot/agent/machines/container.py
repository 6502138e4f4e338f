"""``container`` machines: the worker in fresh Linux namespaces on an overlay of an image's rootfs.

Per boot: an overlayfs whose lower layer is the image's root file system (never written),
seen through an idmapped mount so that the container's root owns it, and whose upper and
work directories lie in the boot's work directory; new user, mount, pid, network, UTS and
IPC namespaces, the container's root mapped onto an unprivileged host uid range (100000
and up: never host root); its network from slirp4netns (the host's loopback at 10.0.2.2, nothing else
unless ``internet``); its limits from cgroups (v2, or v1 controllers where a hybrid host
has them there; rlimits when neither). The worker code (bbot and the packages it imports)
is bound read-only at /opt/bbot, so images never need rebuilding when bbot changes.

Everything on the host is named after the boot's ``resource_name`` (the agent's tag and the
boot id): the overlay's mount source, the cgroups, and the ``BBOT_MACHINE`` environment
variable of every process of the boot (supervisor, slirp4netns, the container's processes).
``reconcile`` finds leftovers by these names and nothing else. The processes themselves are
started by ``container_init.py`` (see there for who is whose parent and who dies with whom).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bbot.agent.machines.base import (
    GUEST_HOST_ADDRESS,
    BootSpec,
    Exit,
    MachineBackend,
    Problem,
    file_tail,
    mounts,
    signal_name,
)
from bbot.agent.machines.container_init import MNT_DETACH, MS_NODEV, idmapped_bind, mount, umount

log = logging.getLogger(__name__)

CONSOLE_LOG = "console.log"
STATE_FILE = "state.json"
# Every process of a boot carries this in its environment, with the boot's resource name.
MACHINE_ENV = "BBOT_MACHINE"
OPTION_KEYS = ("image", "rootfs", "memory", "cpus", "pids", "internet")
PATH_OPTIONS = ("image", "rootfs")  # relative to the configuration file's folder
MACHINE_KEYS = ("id", "name", "summary", "type")
DEFAULT_MEMORY_MIB = 2048
DEFAULT_CPUS = 1
DEFAULT_PIDS = 4096
# The container's uid and gid 0..65535 are the host's 100000..165535 (Debian's first
# subordinate range): container root is no one on the host.
UID_BASE = 100000
UID_COUNT = 65536
# Where the worker code is bound inside, and the packages bound there: what
# `python3 -m bbot.worker` imports (the worker alone, as every machine image runs it).
WORKER_ROOT = "/opt/bbot"
WORKER_PACKAGES = ("bbot", "tftpy")
BUILD_DIR = "/build"
HOSTNAME = "bbot-machine"  # the image's /etc/hosts names it
CPU_PERIOD_US = 100_000
SLIRP4NETNS_PACKAGE = "slirp4netns"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::1", "::")
CGROUP_CONTROLLERS = ("memory", "pids", "cpu")
SUPERVISOR = Path(__file__).with_name("container_init.py")
KILL_WAIT_SECONDS = 10.0


# -- options -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ContainerSettings:
    rootfs: Path
    memory_mib: int = DEFAULT_MEMORY_MIB
    cpus: float = DEFAULT_CPUS
    pids: int = DEFAULT_PIDS
    internet: bool = False


def _rootfs_of_image(image: Path, where: str, problem: Problem) -> Path | None:
    machine_yaml = image / "machine.yaml"
    if not image.is_dir():
        problem(f"{where}.image", f"{image} is not a directory; build one with ops/images/build")
        return None
    try:
        described = yaml.safe_load(machine_yaml.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        problem(f"{where}.image", f"cannot read {machine_yaml} ({e}); build the image with ops/images/build")
        return None
    rootfs = described.get("rootfs") if isinstance(described, dict) else None
    if not isinstance(rootfs, str) or not rootfs:
        problem(f"{where}.image", f"{machine_yaml} names no rootfs (key 'rootfs:'); the image is not for "
                                  f"containers: rebuild it with ops/images/build")
        return None
    path = image / rootfs
    if not path.is_dir():
        problem(f"{where}.image", f"{machine_yaml} names rootfs {path}, which is not a directory; "
                                  f"rebuild the image with ops/images/build")
        return None
    return path


def _number(options: Mapping[str, Any], key: str, default: float, where: str, problem: Problem,
            integer: bool, minimum: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or value < minimum:
        kind = "a whole number" if integer else "a number"
        problem(f"{where}.{key}", f"expected {kind} of at least {minimum:g}; got {value!r}")
        return default
    return value


def settings_of(where: str, options: Mapping[str, Any], problem: Problem,
                base: Path) -> ContainerSettings | None:
    """The options checked (every problem reported, with its fix); None when there was one."""
    problems: list[tuple[str, str]] = []

    def note(at: str, text: str) -> None:
        problems.append((at, text))
        problem(at, text)

    for key in options:
        if key not in OPTION_KEYS:
            note(f"{where}.{key}", f"unknown key; allowed: {', '.join(MACHINE_KEYS + OPTION_KEYS)}")
    rootfs: Path | None = None
    if ("image" in options) == ("rootfs" in options):
        note(where, "a container machine needs exactly one of 'image' (a directory made by ops/images/build) "
                    "or 'rootfs' (a root file system directory)")
    elif "image" in options:
        image = options["image"]
        if not isinstance(image, str) or not image:
            note(f"{where}.image",
                 f"expected the path of an image directory (from ops/images/build); got {image!r}")
        else:
            rootfs = _rootfs_of_image(base / image, where, note)
    else:
        given = options["rootfs"]
        if not isinstance(given, str) or not given:
            note(f"{where}.rootfs", f"expected the path of a root file system directory; got {given!r}")
        elif not (base / given).is_dir():
            note(f"{where}.rootfs", f"{base / given} is not a directory; build one with ops/images/build")
        else:
            rootfs = base / given
    if rootfs is not None and any(c in str(rootfs.absolute()) for c in ",:\\"):
        note(f"{where}.{'image' if 'image' in options else 'rootfs'}",
             f"{rootfs.absolute()} has a ',', ':' or '\\' that overlayfs options cannot take; move it")
    memory = _number(options, "memory", DEFAULT_MEMORY_MIB, where, note, True, 16)
    cpus = _number(options, "cpus", DEFAULT_CPUS, where, note, False, 0.01)
    pids = _number(options, "pids", DEFAULT_PIDS, where, note, True, 8)
    internet = options.get("internet", False)
    if not isinstance(internet, bool):
        note(f"{where}.internet", f"expected true or false; got {internet!r}")
    if problems or rootfs is None:
        return None
    return ContainerSettings(rootfs.absolute(), int(memory), float(cpus), int(pids), bool(internet))


def check_options(where: str, options: Mapping[str, Any], problem: Problem, base: Path) -> None:
    settings_of(where, options, problem, base)


# -- cgroups -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CgroupLayout:
    """Where this host lets us make a boot's cgroups, and which limits each one carries."""

    v2_parent: Path | None = None  # the unified hierarchy: process tracking, cgroup.kill
    v2_controllers: frozenset[str] = frozenset()  # those of CGROUP_CONTROLLERS enabled there
    v1_parents: dict[str, Path] = field(default_factory=dict)  # a v1 controller -> its parent
    roots: tuple[Path, ...] = ()  # the mount points of these hierarchies (reconcile looks in all)

    def dirs(self, name: str) -> list[Path]:
        parents = ([self.v2_parent] if self.v2_parent else []) + list(dict.fromkeys(self.v1_parents.values()))
        return [parent / name for parent in parents]

    def limited(self) -> set[str]:
        return set(self.v2_controllers) | set(self.v1_parents)

    def describe(self) -> str:
        parts = [f"{c} by cgroup {'v2' if c in self.v2_controllers else 'v1'}" for c in CGROUP_CONTROLLERS
                 if c in self.limited()]
        parts += [f"{c} by rlimit" for c in ("memory", "pids") if c not in self.limited()]
        parts += ["cpu unlimited"] if "cpu" not in self.limited() else []
        if self.v2_parent is not None:
            parts.append("processes tracked and killed by cgroup v2")
        return ", ".join(parts)


def discover_cgroups() -> CgroupLayout:
    """The cgroups this agent can make: under its own cgroup of each hierarchy (so its own
    limits contain its machines), falling back to the hierarchy's root on cgroup v2 when the
    own cgroup cannot hand its controllers to children (it holds processes itself)."""
    own: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup", encoding="utf-8") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                own[controller] = path
    v2_parent: Path | None = None
    v2_controllers: set[str] = set()
    v1_parents: dict[str, Path] = {}
    roots: list[Path] = []
    for entry in mounts():
        point = Path(entry.mount_point)
        if entry.fstype == "cgroup2" and v2_parent is None and "" in own and os.access(point, os.W_OK):
            v2_parent = point / own[""].lstrip("/")
            v2_controllers = _enable_controllers(v2_parent)
            if v2_parent != point and v2_controllers != _available_controllers(point):
                at_root = _enable_controllers(point)
                if len(at_root) > len(v2_controllers):
                    v2_parent, v2_controllers = point, at_root
            roots.append(point)
        elif entry.fstype == "cgroup":
            for controller in entry.super_options.split(","):
                if controller in CGROUP_CONTROLLERS and controller in own and os.access(point, os.W_OK):
                    parent = point / own[controller].lstrip("/")
                    v1_parents.setdefault(controller, parent)
                    roots.append(point)
    v1_parents = {c: p for c, p in v1_parents.items() if c not in v2_controllers and p.is_dir()}
    if v2_parent is not None and not v2_parent.is_dir():
        v2_parent, v2_controllers = None, set()
    return CgroupLayout(v2_parent, frozenset(v2_controllers), v1_parents, tuple(dict.fromkeys(roots)))


def _available_controllers(parent: Path) -> set[str]:
    try:
        return set((parent / "cgroup.controllers").read_text().split()) & set(CGROUP_CONTROLLERS)
    except OSError:
        return set()


def _enable_controllers(parent: Path) -> set[str]:
    try:
        available = set((parent / "cgroup.controllers").read_text().split())
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()
    for controller in CGROUP_CONTROLLERS:
        if controller in available and controller not in enabled:
            try:
                (parent / "cgroup.subtree_control").write_text(f"+{controller}")
                enabled.add(controller)
            except OSError:
                pass  # the cgroup holds processes of its own (no internal processes rule)
    return enabled & set(CGROUP_CONTROLLERS)


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def make_cgroups(layout: CgroupLayout, name: str, settings: ContainerSettings) -> list[Path]:
    memory = settings.memory_mib * 1024 * 1024
    quota = max(1000, int(settings.cpus * CPU_PERIOD_US))
    made = []
    for directory in layout.dirs(name):
        directory.mkdir()
        made.append(directory)
    if layout.v2_parent is not None:
        v2 = layout.v2_parent / name
        if "memory" in layout.v2_controllers:
            _write(v2 / "memory.max", str(memory))
            with contextlib.suppress(OSError):
                _write(v2 / "memory.swap.max", "0")
        if "pids" in layout.v2_controllers:
            _write(v2 / "pids.max", str(settings.pids))
        if "cpu" in layout.v2_controllers:
            _write(v2 / "cpu.max", f"{quota} {CPU_PERIOD_US}")
    for controller, parent in layout.v1_parents.items():
        v1 = parent / name
        if controller == "memory":
            _write(v1 / "memory.limit_in_bytes", str(memory))
            with contextlib.suppress(OSError):  # no swap accounting: nothing to swap to either
                _write(v1 / "memory.memsw.limit_in_bytes", str(memory))
        elif controller == "pids":
            _write(v1 / "pids.max", str(settings.pids))
        elif controller == "cpu":
            _write(v1 / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(v1 / "cpu.cfs_quota_us", str(quota))
    return made


def _cgroup_pids(directory: Path) -> list[int]:
    try:
        return [int(p) for p in (directory / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def remove_cgroups(directories: list[Path], deadline_seconds: float = KILL_WAIT_SECONDS) -> None:
    """Kill every process in these cgroups and remove them; quiet about ones already gone."""
    existing = [d for d in directories if d.is_dir()]
    for directory in existing:
        with contextlib.suppress(OSError):
            _write(directory / "cgroup.kill", "1")
    deadline = time.monotonic() + deadline_seconds
    for directory in existing:
        while True:
            pids = _cgroup_pids(directory)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                directory.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise OSError(e.errno, f"cannot remove cgroup {directory}: {e.strerror}") from e
                time.sleep(0.01)


# -- processes -----------------------------------------------------------------------------------

def machine_processes(prefix: str, exact: bool = False) -> Iterator[tuple[int, str]]:
    """(pid, resource name) of every live process whose BBOT_MACHINE starts with ``prefix``
    (or is ``prefix``, when ``exact``)."""
    marker = f"{MACHINE_ENV}={prefix}".encode()
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        for variable in environ.split(b"\0"):
            if variable == marker if exact else variable.startswith(marker):
                yield int(entry.name), variable.split(b"=", 1)[1].decode(errors="replace")
                break


def _alive(pid: int) -> bool:
    """Running (a zombie awaiting its reaper runs no more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pids: list[int], seconds: float = KILL_WAIT_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


def _unmount(point: Path) -> bool:
    """Detach every mount at ``point`` (stacked ones too); True when there was one."""
    unmounted = False
    while True:
        try:
            umount(str(point), MNT_DETACH)
            unmounted = True
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
                return unmounted
            raise


def mapping_user_namespace() -> int:
    """An fd of a user namespace mapping 0..UID_COUNT-1 onto the host's UID_BASE..: what
    idmaps the rootfs for every boot (the same mapping as the containers')."""
    holder = subprocess.Popen(
        [sys.executable, "-I", "-c",
         "import ctypes, sys\n"
         "if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:\n    sys.exit(1)\n"
         "print('ready', flush=True)\nsys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        if holder.stdout.readline().strip() != "ready":
            raise OSError(errno.EPERM, "cannot make a user namespace")
        for kind in ("uid", "gid"):
            Path(f"/proc/{holder.pid}/{kind}_map").write_text(f"0 {UID_BASE} {UID_COUNT}\n")
        return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        holder.stdin.close()
        holder.stdout.close()
        holder.wait()


# -- the backend ---------------------------------------------------------------------------------

class ContainerMachine(MachineBackend):
    type_name = "container"
    guest_host_address = GUEST_HOST_ADDRESS

    def __init__(self, command: list[str] | None = None, use_cgroups: bool = True,
                 idmap_rootfs: bool = True) -> None:
        # The worker command run inside (tests replace it); None: bbot's worker. It sees
        # BBOT_TFTP, BBOT_DIR and BBOT_WORK in its environment either way.
        self._command = command
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        # Boots of this backend between create_snapshot and discard: reconcile leaves them
        # alone even when the agent's list of live boots was taken just before they began.
        self._active: set[str] = set()
        # Without cgroups (a host without them, or a test of that case) rlimits limit memory
        # and processes, and the death of the container's init ends everything in it.
        self._layout: CgroupLayout | None = None if use_cgroups else CgroupLayout()
        # The rootfs is seen through an idmapped mount, so that the container's root owns it as
        # host root does outside, where the kernel and the rootfs' file system allow; else the
        # container sees it owned by nobody (readable; /build, /root and /tmp stay writable).
        self._userns_fd: int | None = None
        self._idmap_failed: dict[Path, str] = {}  # rootfs -> why it cannot be idmapped
        self._idmap_rootfs = idmap_rootfs  # False: as on a kernel without idmapped mounts
        self._lock = threading.Lock()

    @property
    def layout(self) -> CgroupLayout:
        if self._layout is None:
            self._layout = discover_cgroups()
        return self._layout

    def describe(self) -> str:
        missing = [tool for tool in (SLIRP4NETNS_PACKAGE, "nsenter", "ip") if shutil.which(tool) is None]
        text = ("container machines: user+pid+net+mount+uts+ipc namespaces, overlayfs on an idmapped rootfs, "
                f"slirp4netns, limits: {self.layout.describe()}")
        for rootfs, why in self._idmap_failed.items():
            text += f"; {rootfs} not idmapped ({why}): its files are nobody's inside"
        if missing:
            text += f"; MISSING on this host: {', '.join(missing)} (apt-get install {_packages_of(missing)})"
        return text

    # -- one boot --------------------------------------------------------------------------------

    @staticmethod
    def _settings(spec: BootSpec) -> ContainerSettings:
        problems: list[str] = []
        options = spec.machine.options if spec.machine is not None else {}
        settings = settings_of("machine", options, lambda at, text: problems.append(f"{at}: {text}"),
                               Path.cwd())
        if settings is None:
            raise ValueError("; ".join(problems))
        return settings

    @staticmethod
    def _dir(spec: BootSpec) -> Path:
        return spec.work_dir / spec.resource_name

    def create_snapshot(self, spec: BootSpec) -> None:
        self._active.add(spec.boot_id)
        settings = self._settings(spec)
        _tools()  # fail before anything is made when the host lacks them
        directory = self._dir(spec)
        for name in ("upper", "work", "root", "lower"):
            (directory / name).mkdir(parents=True)
        lower = self._idmapped(settings.rootfs, directory / "lower")
        try:
            mount(spec.resource_name, str(directory / "root"), "overlay", MS_NODEV,
                  f"lowerdir={lower},upperdir={directory / 'upper'},workdir={directory / 'work'}")
        finally:
            # The overlay holds its layers itself: the idmapped bind need not stay in the tree.
            if lower != settings.rootfs:
                _unmount(lower)

    def _idmapped(self, rootfs: Path, target: Path) -> Path:
        """``rootfs`` idmapped at ``target`` (returned), or ``rootfs`` itself where it cannot be."""
        with self._lock:
            if rootfs in self._idmap_failed or not self._idmap_rootfs:
                return rootfs
            try:
                if self._userns_fd is None:
                    self._userns_fd = mapping_user_namespace()
                idmapped_bind(str(rootfs), str(target), self._userns_fd)
                return target
            except OSError as e:
                self._idmap_failed[rootfs] = str(e)
                log.warning("container machines: %s cannot be idmapped (%s); the containers see it owned "
                            "by nobody", rootfs, e)
                return rootfs

    def boot(self, spec: BootSpec) -> None:
        settings = self._settings(spec)
        tools = _tools()
        directory = self._dir(spec)
        made = make_cgroups(self.layout, spec.resource_name, settings)
        rlimits = {}
        if "memory" not in self.layout.limited():
            rlimits["RLIMIT_AS"] = settings.memory_mib * 1024 * 1024
        if "pids" not in self.layout.limited():
            rlimits["RLIMIT_NPROC"] = settings.pids
        tftp_host = GUEST_HOST_ADDRESS if spec.tftp_host in LOOPBACK_HOSTS else spec.tftp_host
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PYTHONPATH": WORKER_ROOT,
            "PYTHONDONTWRITEBYTECODE": "1",  # /opt/bbot is read-only
            "BBOT_TFTP": f"{tftp_host}:{spec.tftp_port}",
            "BBOT_DIR": spec.boot_id,
            "BBOT_WORK": BUILD_DIR,
            MACHINE_ENV: spec.resource_name,
        }
        command = self._command or ["python3", "-m", "bbot.worker", "--tftp", env["BBOT_TFTP"],
                                    "--dir", spec.boot_id, "--work", BUILD_DIR]
        config = {
            "root": str(directory / "root"),
            "state_file": str(directory / STATE_FILE),
            "slirp4netns_log": str(directory / "slirp4netns.log"),
            "uid_base": UID_BASE,
            "uid_count": UID_COUNT,
            "cgroup_procs": [str(d / "cgroup.procs") for d in made],
            "binds": [[str(path), f"{WORKER_ROOT}/{name}"] for name, path in worker_packages().items()],
            "owned_dirs": [BUILD_DIR, "/root"],
            "hostname": HOSTNAME,
            "internet": settings.internet,
            "rlimits": rlimits,
            "command": command,
            "cwd": BUILD_DIR,
            "env": env,
            **tools,
        }
        config_file = directory / "config.json"
        config_file.write_text(json.dumps(config))
        with open(spec.work_dir / CONSOLE_LOG, "ab") as console:
            self._procs[spec.boot_id] = subprocess.Popen(
                [sys.executable, "-I", str(SUPERVISOR), spec.resource_name, str(config_file)],
                env={MACHINE_ENV: spec.resource_name, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: slirp4netns and the container's setup
            )

    def _state(self, spec: BootSpec) -> dict[str, Any]:
        try:
            state = json.loads((self._dir(spec) / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def poll(self, spec: BootSpec) -> Exit | None:
        proc = self._procs.get(spec.boot_id)
        if proc is None:
            return Exit(None, "never started")
        code = proc.poll()
        if code is None:
            return None
        ended = self._state(spec).get("exit")
        if isinstance(ended, dict):
            return Exit(ended.get("code"), str(ended.get("description")))
        if code < 0:
            return Exit(code, f"container supervisor killed by {signal_name(-code)}")
        return Exit(code, f"container supervisor exited with code {code}")

    def console_tail(self, spec: BootSpec, max_bytes: int = 8192) -> str:
        return file_tail(spec.work_dir / CONSOLE_LOG, max_bytes)

    def shutdown(self, spec: BootSpec, grace: float) -> None:
        proc = self._procs.pop(spec.boot_id, None)
        if proc is not None:
            init = self._state(spec).get("init")
            if proc.poll() is None and isinstance(init, int):
                # The container's init passes it on to every process of the container.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signal.SIGTERM)
                deadline = time.monotonic() + grace
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.02)
            # The supervisor's group: itself, slirp4netns, the container's init (whose death
            # ends every process of the container). Sent before reaping: the group id cannot
            # have been reused while its leader is unreaped.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Anything that left the group (the worker makes a session of its own) is in the cgroup.
        for directory in self.layout.dirs(spec.resource_name):
            with contextlib.suppress(OSError):
                _write(directory / "cgroup.kill", "1")
            for pid in _cgroup_pids(directory):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _wait_gone([pid for pid, _ in machine_processes(spec.resource_name, exact=True)])

    def discard(self, spec: BootSpec) -> None:
        self._active.discard(spec.boot_id)
        _unmount(self._dir(spec) / "root")
        remove_cgroups(self.layout.dirs(spec.resource_name))
        shutil.rmtree(spec.work_dir, ignore_errors=True)

    # -- leftovers -------------------------------------------------------------------------------

    def reconcile(self, tag: str, live_boot_ids: set[str]) -> list[str]:
        prefix = tag + "-"
        keep = live_boot_ids | self._active

        def leftover(name: str) -> bool:
            return name.startswith(prefix) and name[len(prefix):] not in keep

        removed: list[str] = []
        # Listed before any is killed: killing one ends others (its children, its slirp4netns).
        found = [(pid, name, _command_name(pid)) for pid, name in machine_processes(prefix) if leftover(name)]
        killed = []
        for pid, name, command in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            removed.append(f"process {pid} ({command}) of {name}")
        _wait_gone(killed)
        for directory in self._cgroups_named(prefix):
            if leftover(directory.name):
                remove_cgroups([directory])
                removed.append(f"cgroup {directory}")
        for entry in mounts():
            point = Path(entry.mount_point)
            if entry.fstype == "overlay" and leftover(entry.source) and _unmount(point):
                removed.append(f"overlay {entry.source} at {point}")
            elif point.name == "lower" and leftover(point.parent.name) and _unmount(point):
                # An idmapped rootfs bind the agent died before unmounting (made and
                # unmounted within create_snapshot).
                removed.append(f"idmapped rootfs at {point}")
        return removed

    def _cgroups_named(self, prefix: str) -> list[Path]:
        found = []
        for root in self.layout.roots:
            for parent, dirs, _ in os.walk(root):
                for name in list(dirs):
                    if name.startswith(prefix):
                        found.append(Path(parent, name))
                        dirs.remove(name)
        return found


def worker_packages() -> dict[str, Path]:
    """The directory of each package the worker imports, as this Python finds them."""
    found = {}
    for name in WORKER_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"the worker needs the Python package '{name}', which the agent cannot import")
        found[name] = Path(spec.origin).parent
    return found


def _tools() -> dict[str, str]:
    found = {tool: shutil.which(tool) for tool in (SLIRP4NETNS_PACKAGE, "nsenter", "ip")}
    missing = [tool for tool, path in found.items() if path is None]
    if missing:
        raise RuntimeError(f"container machines need {', '.join(missing)} on the agent's host: "
                           f"apt-get install {_packages_of(missing)}")
    return {tool: str(path) for tool, path in found.items()}


def _packages_of(tools: list[str]) -> str:
    packages = {"slirp4netns": "slirp4netns", "nsenter": "util-linux", "ip": "iproute2"}
    return " ".join(dict.fromkeys(packages[t] for t in tools))


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
