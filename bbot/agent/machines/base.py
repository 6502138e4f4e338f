"""What every machine type provides to the agent; one backend per file beside this one.

The agent drives every boot through the same lifecycle (``bbot.agent.lifecycle``):
create the snapshot, boot, wait for the worker's result (or the machine's death,
or a timeout), shut down, discard. A backend only knows how to do each step for
its kind of machine; timeouts, results and retries are the agent's.

Everything a backend creates on the host (domains, overlays, directories,
cgroups, processes) carries the agent's tag in its name, so ``reconcile`` can
find and remove what an earlier run of the same agent left behind, and never
touches anything else.
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bbot.config import MachineConfig
from bbot.manifest import Result, Task

# -- what a machine is told at boot (the image's init reads these; see ops/images/) --------------
# The worker learns its TFTP server and boot directory from the kernel command line of a VM
# (or SMBIOS OEM strings, for firmware boot), as ``bbot.tftp=HOST:PORT bbot.dir=BOOTDIR``.
CMDLINE_TFTP = "bbot.tftp"
CMDLINE_DIR = "bbot.dir"
# Inside a machine on user-mode networking (QEMU's, or slirp4netns for containers) the host's
# loopback is reached at this address: services the agent host serves on 127.0.0.1 (its
# TFTP server, a local git server) are reached there.
GUEST_HOST_ADDRESS = "10.0.2.2"

# Reports a configuration problem: (where, what is wrong and how to fix it).
Problem = Callable[[str, str], None]


def agent_tag(agent_name: str) -> str:
    """The prefix of every name this agent gives to what it creates on the host.

    Of fixed length, so that one agent's prefix is never the start of another's names
    (agent "a" must not take agent "a-b"'s machines for its own); the agent's name itself
    is in each thing's metadata where the thing has some (a domain's description)."""
    return "bbot-" + hashlib.sha256(agent_name.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class BootSpec:
    """Everything a backend needs to boot one throw-away machine for one task."""

    boot_id: str  # unique per boot; also the name of the boot's TFTP directory
    work_dir: Path  # the agent's scratch space for this boot (snapshot, console log)
    tftp_host: str  # where the agent's TFTP server listens, as the host sees it
    tftp_port: int
    machine: MachineConfig | None = None  # the configured machine (its type's options)
    tag: str = "bbot"  # the agent's tag: agent_tag(agent name)
    label: str = ""  # what the boot is for, e.g. "libhello/1.0.0 attempt 2" (metadata, logs)

    @property
    def resource_name(self) -> str:
        """The name of this boot's domain, container, cgroup: the tag and the boot id."""
        return f"{self.tag}-{self.boot_id}"

    def option(self, key: str, default: Any = None) -> Any:
        if self.machine is None:
            return default
        return self.machine.options.get(key, default)


@dataclass(frozen=True)
class Exit:
    """How a machine stopped on its own (None from ``poll`` while it runs)."""

    code: int | None
    description: str


class MachineBackend(abc.ABC):
    """One machine type. Methods are called in lifecycle order by the agent, one boot at a time."""

    type_name: str
    # True for a machine whose worker needs no boot (the null machine): the agent asks
    # ``instant_result`` instead of booting and waiting.
    instant: bool = False
    # How the machine reaches the agent host's loopback: None when it shares the host's
    # network (process machines), else the address the agent puts in place of 127.0.0.1
    # (its TFTP server, and loopback repository URLs in the task).
    guest_host_address: str | None = None

    def instant_result(self, task: Task) -> Result:
        raise NotImplementedError(f"machine type '{self.type_name}' must be booted")

    def attach(self, machines: list[MachineConfig]) -> None:  # noqa: B027 (optional step)
        """Called once at agent start with the machines of this type (open connections,
        choose accelerators). Raises when they cannot work at all."""

    def describe(self) -> str:
        """One line for the agent's start-up log (e.g. which accelerator VMs run on)."""
        return self.type_name

    def reconcile(self, tag: str, live_boot_ids: set[str]) -> list[str]:
        """Remove what this backend made under ``tag`` for boots not in ``live_boot_ids``
        (left by a crashed or killed agent); return a description of each thing removed.
        Must never touch anything without the tag."""
        return []

    @abc.abstractmethod
    def create_snapshot(self, spec: BootSpec) -> None:
        """Make the throw-away copy the boot runs on."""

    @abc.abstractmethod
    def boot(self, spec: BootSpec) -> None:
        """Start the machine; its worker fetches the task from the TFTP server on its own."""

    @abc.abstractmethod
    def poll(self, spec: BootSpec) -> Exit | None:
        """None while the machine runs; how it stopped otherwise."""

    @abc.abstractmethod
    def console_tail(self, spec: BootSpec, max_bytes: int = 8192) -> str:
        """The last output of the machine's console, for abnormal results."""

    @abc.abstractmethod
    def shutdown(self, spec: BootSpec, grace: float) -> None:
        """Stop the machine: politely, then by force after ``grace`` seconds. Idempotent."""

    @abc.abstractmethod
    def discard(self, spec: BootSpec) -> None:
        """Throw the snapshot away. Idempotent; must not fail when parts are already gone."""


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    fstype: str
    source: str
    super_options: str


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def mounts() -> list[MountEntry]:
    """The mounts of our mount namespace (/proc/self/mountinfo): containers' roots, and what
    the agent must never delete through."""
    entries = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fields, rest = head.split(), tail.split()
            if len(fields) >= 5 and len(rest) >= 3:
                entries.append(MountEntry(_unescape(fields[4]), rest[0], _unescape(rest[1]), rest[2]))
    return entries


def signal_name(number: int) -> str:
    """SIGKILL for 9: how a process's death is told in results."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def file_tail(path: Path, max_bytes: int) -> str:
    """The last ``max_bytes`` of a file (a console log), as text; "" when there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def check_no_options(where: str, options: Mapping[str, Any], problem: Problem) -> None:
    """For machine types that take no options of their own."""
    for key in options:
        problem(f"{where}.{key}", "unknown key; allowed: id, name, summary, type")
