"""What every machine type provides to the agent; one backend per file beside this one."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

from bbot.manifest import Result, Task


@dataclass(frozen=True)
class BootSpec:
    """Everything a backend needs to boot one throw-away machine for one task."""

    boot_id: str  # unique per boot; also the name of the boot's TFTP directory
    work_dir: Path  # the agent's scratch space for this boot (snapshot, console log)
    tftp_host: str
    tftp_port: int


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

    def instant_result(self, task: Task) -> Result:
        raise NotImplementedError(f"machine type '{self.type_name}' must be booted")

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
