"""The supervisor of one container machine: run by the agent as
``python3 container_init.py RESOURCE-NAME CONFIG.json`` (the name only shows who it is in ps).

Standard library only: it runs with the agent's Python and, after ``pivot_root``, without
any file of the host. Three processes, each the parent of the next::

    supervisor (host root, host namespaces; the agent's child, its own process group)
     ├─ slirp4netns (attached to the container's network namespace)
     └─ outer (host root in a private mount namespace, then container root in a new user,
        │      mount, pid, network, UTS and IPC namespace)
        └─ init (PID 1 of the container: its root is the overlay)
            └─ the worker

The supervisor maps the container's ids onto an unprivileged host range (never host root),
puts ``outer`` into the boot's cgroups, starts slirp4netns, configures the container's
network and reports how the worker ended in the state file. Whatever dies first takes the
rest along: ``outer`` and ``init`` die with their parent (PR_SET_PDEATHSIG), slirp4netns when
the supervisor's end of its exit pipe closes, every process of the container with its init.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
# The new mount API (Linux 5.12+ for idmapped mounts; the same numbers on every architecture).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
MOUNT_ATTR_IDMAP = 0x00100000
MOVE_MOUNT_F_EMPTY_PATH = 4
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

# The devices a build may use; bound from the host onto a fresh tmpfs at /dev.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Where the container's tap device sits in slirp4netns' default network 10.0.2.0/24.
TAP_NAME = "tap0"
TAP_ADDRESS = "10.0.2.100/24"
SLIRP_GATEWAY = "10.0.2.2"
SLIRP_MTU = 65520
# Where the container's root waits for pivot_root in the setup's own mount namespace: a
# directory container root can reach (the agent's data directory may be closed to others).
STAGE = "/tmp"

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                       ctypes.c_ulong(flags), data and data.encode()), f"mount {target}")


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def idmapped_bind(source: str, target: str, userns_fd: int) -> None:
    """Bind ``source`` at ``target`` with its owners shifted by the user namespace's mapping
    (host root's files show as owned by that namespace's root)."""
    tree = _libc.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD), source.encode(),
                         ctypes.c_uint(OPEN_TREE_CLONE | os.O_CLOEXEC))
    _check(tree, f"open_tree {source}")
    try:
        attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        _check(_libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(tree), b"",
                             ctypes.c_uint(AT_EMPTY_PATH), ctypes.byref(attr),
                             ctypes.c_size_t(ctypes.sizeof(attr))), f"idmapping {source}")
        _check(_libc.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(tree), b"", ctypes.c_int(AT_FDCWD),
                             target.encode(), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount {target}")
    finally:
        os.close(tree)


def pivot_root(new_root: str, put_old: str) -> None:
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"pivot_root: unknown system call number on {platform.machine()}")
    _check(_libc.syscall(ctypes.c_long(number), new_root.encode(), put_old.encode()), "pivot_root")


def die_with_parent(parent: int) -> None:
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    # The parent died before the death signal was armed? (A parent outside our pid
    # namespace shows as 0, as does whoever adopted us then: init cannot tell.)
    if os.getppid() not in (parent, 0):
        os._exit(1)


def say(text: str) -> None:
    """A line on the machine's console (the agent shows its tail for abnormal results)."""
    os.write(2, f"bbot container: {text}\n".encode())


class Channel:
    """One line at a time between two processes of this file (pipes close on exec)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self._buffer = b""

    def send(self, line: str) -> None:
        os.write(self.write_fd, line.encode() + b"\n")

    def receive(self) -> str | None:
        """The next line; None at end of file."""
        while b"\n" not in self._buffer:
            chunk = os.read(self.read_fd, 4096)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def expect(self, word: str) -> None:
        line = self.receive()
        if line != word:
            raise RuntimeError(f"expected '{word}' from the supervisor, got {line!r}")


def describe_status(status: int, who: str) -> tuple[int | None, str]:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return -number, f"{who} killed by {name}"
    code = os.waitstatus_to_exitcode(status)
    return code, f"{who} exited with code {code}"


# -- the supervisor ------------------------------------------------------------------------------

def supervise(config: dict[str, Any]) -> int:
    state_file = Path(config["state_file"])
    state: dict[str, Any] = {"supervisor": os.getpid()}

    def save() -> None:
        temporary = state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state))
        temporary.rename(state_file)

    down, up = Channel(), Channel()  # supervisor -> outer, outer (and init) -> supervisor
    outer = os.fork()
    if outer == 0:
        code = 1
        try:
            os.close(down.write_fd)
            os.close(up.read_fd)
            code = run_outer(config, down, up, supervisor=os.getppid())
        except BaseException as e:
            say(f"setting up the container failed: {e}")
        os._exit(code)
    os.close(down.read_fd)
    os.close(up.write_fd)
    state["outer"] = outer
    save()
    slirp: subprocess.Popen[bytes] | None = None
    worker_end: tuple[int | None, str] | None = None
    try:
        up_line = up.receive()
        if up_line == "userns":
            for path in config["cgroup_procs"]:  # before the container runs anything of its own
                Path(path).write_text(str(outer))
            base, count = config["uid_base"], config["uid_count"]
            Path(f"/proc/{outer}/uid_map").write_text(f"0 {base} {count}\n")
            Path(f"/proc/{outer}/gid_map").write_text(f"0 {base} {count}\n")
            down.send("mapped")
            up_line = up.receive()
        if up_line == "netns":
            slirp = start_network(config, outer)
            state["slirp4netns"] = slirp.pid
            save()
            down.send("go")
            up_line = up.receive()
        if up_line is not None and up_line.startswith("init "):
            state["init"] = int(up_line.split()[1])
            save()
            up_line = up.receive()
        if up_line is not None and up_line.startswith("worker "):
            _, number, text = up_line.split(" ", 2)
            worker_end = (None if number == "None" else int(number), text)
        elif up_line is not None and up_line.startswith("init-status "):
            worker_end = describe_status(int(up_line.split()[1]), "container init")
    except Exception as e:
        say(f"starting the container failed: {e}")
        os.kill(outer, signal.SIGKILL)
    _, status = os.waitpid(outer, 0)
    if worker_end is None:
        # The worker never ended on its own: its init (or the setup) ended first.
        ended, description = describe_status(status, "container init")
        if os.WIFEXITED(status) and state.get("init") is None:
            description = f"container setup failed (exit code {ended}); see the console"
        worker_end = (ended, description)
    state["exit"] = {"code": worker_end[0], "description": worker_end[1]}
    save()
    if slirp is not None:
        slirp.kill()
        slirp.wait()
    final = worker_end[0]
    return final if final is not None and final >= 0 else 1


def start_network(config: dict[str, Any], outer: int) -> subprocess.Popen[bytes]:
    """slirp4netns on the container's network namespace; the tap configured; loopback up.

    Without ``internet`` the container gets no default route: it reaches 10.0.2.0/24 only,
    that is the host's loopback at 10.0.2.2 (the agent's TFTP server, a local git server)."""
    ready_read, ready_write = os.pipe()
    exit_read, exit_write = os.pipe()  # slirp4netns ends when this closes: with the supervisor
    with open(config["slirp4netns_log"], "ab") as log:  # its chatter stays off the console
        slirp = subprocess.Popen(
            # Sandboxed: its own mount namespace, no capabilities left, a seccomp filter.
            [config["slirp4netns"], "--mtu", str(SLIRP_MTU), "--enable-sandbox", "--enable-seccomp",
             "--ready-fd", str(ready_write), "--exit-fd", str(exit_read), str(outer), TAP_NAME],
            pass_fds=(ready_write, exit_read), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
    os.close(ready_write)
    os.close(exit_read)
    os.set_inheritable(exit_write, False)
    ready = os.read(ready_read, 1)
    os.close(ready_read)
    if ready != b"1":
        raise RuntimeError(f"slirp4netns (pid {slirp.pid}) did not become ready")
    commands = [
        "link set lo up",
        f"link set {TAP_NAME} mtu {SLIRP_MTU} up",
        f"addr add {TAP_ADDRESS} dev {TAP_NAME}",
    ]
    if config["internet"]:
        commands.append(f"route add default via {SLIRP_GATEWAY}")
    done = subprocess.run([config["nsenter"], f"--net=/proc/{outer}/ns/net", config["ip"], "-batch", "-"],
                          input="\n".join(commands).encode() + b"\n", stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"configuring the container's network failed: {done.stderr.decode().strip()}")
    return slirp


# -- inside --------------------------------------------------------------------------------------

def run_outer(config: dict[str, Any], down: Channel, up: Channel, supervisor: int) -> int:
    die_with_parent(supervisor)
    root = config["root"]
    # As host root, in a mount namespace of our own: what the container's root holds besides
    # the overlay. Nothing of it shows on the host.
    unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    prepare_root(config, root)
    mount(root, STAGE, None, MS_BIND | MS_REC)
    unshare(CLONE_NEWUSER)
    up.send("userns")
    down.expect("mapped")
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC)
    up.send("netns")
    down.expect("go")
    me = os.getpid()
    init = os.fork()
    if init == 0:
        code = 1
        try:
            os.close(down.read_fd)
            code = run_init(config, up, parent=me)
        except BaseException as e:
            say(f"container init failed: {e}")
        os._exit(code)
    up.send(f"init {init}")
    _, status = os.waitpid(init, 0)
    up.send(f"init-status {status}")
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def prepare_root(config: dict[str, Any], root: str) -> None:
    uid = config["uid_base"]  # the container's root, as the host sees it
    for source, target in config["binds"]:
        path = Path(root, target.lstrip("/"))
        path.mkdir(parents=True, exist_ok=True)
        mount(source, str(path), None, MS_BIND | MS_REC)
        mount(None, str(path), None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    dev = Path(root, "dev")
    dev.mkdir(exist_ok=True)
    mount("tmpfs", str(dev), "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=1m")
    for name in DEVICES:
        (dev / name).touch()
        mount(f"/dev/{name}", str(dev / name), None, MS_BIND)
    for name in ("shm", "pts"):
        (dev / name).mkdir()
        os.chown(dev / name, uid, uid)
    (dev / "shm").chmod(0o1777)
    for link, target in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        (dev / link).symlink_to(target)
    Path(root, "proc").mkdir(exist_ok=True)
    # The rootfs belongs to host root, which the container sees as nobody: the directories
    # a build writes to belong to the container's root (copied up into the overlay's upper).
    for name in config["owned_dirs"]:
        path = Path(root, name.lstrip("/"))
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, uid, uid)
    tmp = Path(root, "tmp")
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)


def run_init(config: dict[str, Any], up: Channel, parent: int) -> int:
    die_with_parent(parent)
    root = STAGE
    _libc.sethostname(config["hostname"].encode(), len(config["hostname"]))
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # What this namespace inherited is locked (it belongs to a more privileged one) and a
    # locked mount cannot become the root: bind the root onto itself to have one of our own.
    mount(root, root, None, MS_BIND | MS_REC)
    # A proc for the new pid namespace, mounted while the host's proc is still visible (the
    # kernel refuses a new proc in a user namespace that could not already see a full one).
    mount("proc", f"{root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("tmpfs", f"{root}/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    # Pseudo-terminals of the container's own (some test suites need one).
    mount("devpts", f"{root}/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    os.chdir(root)
    pivot_root(".", ".")  # the old root now sits on top of the new one: detach it
    umount(".", MNT_DETACH)
    os.chdir("/")
    worker_end: list[tuple[int | None, str]] = []

    def forward(signum: int, _frame: object) -> None:
        os.kill(-1, signal.SIGTERM)  # every process of the container but init

    worker = os.fork()
    if worker == 0:
        try:
            os.setsid()
            for name, value in config["rlimits"].items():
                resource.setrlimit(getattr(resource, name), (value, value))
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.chdir(config["cwd"])
            os.execvpe(config["command"][0], config["command"], config["env"])
        except BaseException as e:
            say(f"cannot start the worker {config['command'][0]}: {e}")
        os._exit(127)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while not worker_end:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == worker:
            worker_end.append(describe_status(status, "worker"))
    code, description = worker_end[0] if worker_end else (None, "worker vanished")
    up.send(f"worker {code} {description}")
    # Leaving takes every remaining process of the container along (init of its pid namespace).
    return code if code is not None and code >= 0 else 128 - (code or 0)


def main() -> int:
    config = json.loads(Path(sys.argv[2]).read_text())
    return supervise(config)


if __name__ == "__main__":
    sys.exit(main())
