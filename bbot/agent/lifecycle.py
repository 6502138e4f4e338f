"""The life of one boot of a build machine, shared by every machine type.

Each task runs in a machine booted for it alone from a throw-away snapshot::

    snapshot ─boot─▶ booting ─started─▶ running ─result─▶ result ─shutdown─▶ shutdown ─discard─▶ discarded
                        │                  │                                 ▲
                        └─failed───────────┴─failed (timeout, crash, none)───┘

Whatever happens, a boot ends ``discarded``: the agent always shuts the
machine down and throws the snapshot away. The allowed moves are all in
``TRANSITIONS``; ``BootLife`` refuses any other and keeps a timed history.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class MachineState(str, enum.Enum):
    SNAPSHOT = "snapshot"  # the throw-away copy exists, nothing runs yet
    BOOTING = "booting"  # the machine is starting; the worker is not up yet
    RUNNING = "running"  # the worker runs the task
    RESULT = "result"  # the result manifest arrived
    SHUTDOWN = "shutdown"  # the machine is stopped (cleanly or not)
    DISCARDED = "discarded"  # the snapshot and the boot directory are gone: final


class MachineEvent(str, enum.Enum):
    BOOT = "boot"
    STARTED = "started"
    RESULT = "result"
    FAILED = "failed"  # boot failure, timeout, crash, exit without a result
    SHUTDOWN = "shutdown"
    DISCARD = "discard"


TRANSITIONS: dict[tuple[MachineState, MachineEvent], MachineState] = {
    (MachineState.SNAPSHOT, MachineEvent.BOOT): MachineState.BOOTING,
    (MachineState.SNAPSHOT, MachineEvent.FAILED): MachineState.SHUTDOWN,
    (MachineState.BOOTING, MachineEvent.STARTED): MachineState.RUNNING,
    (MachineState.BOOTING, MachineEvent.FAILED): MachineState.SHUTDOWN,
    (MachineState.RUNNING, MachineEvent.RESULT): MachineState.RESULT,
    (MachineState.RUNNING, MachineEvent.FAILED): MachineState.SHUTDOWN,
    (MachineState.RESULT, MachineEvent.SHUTDOWN): MachineState.SHUTDOWN,
    (MachineState.SHUTDOWN, MachineEvent.DISCARD): MachineState.DISCARDED,
}


class IllegalMachineTransition(RuntimeError):
    pass


@dataclass
class BootLife:
    """The state of one boot, with the time of every move (for pages and benchmarks)."""

    boot_id: str
    state: MachineState = MachineState.SNAPSHOT
    history: list[tuple[MachineState, float]] = field(default_factory=list)
    failure: str | None = None  # why the boot failed, when it did

    def __post_init__(self) -> None:
        self.history.append((self.state, time.monotonic()))

    def move(self, event: MachineEvent, failure: str | None = None) -> MachineState:
        try:
            new = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise IllegalMachineTransition(
                f"boot {self.boot_id}: state '{self.state.value}' cannot take event '{event.value}'"
            ) from None
        if event is MachineEvent.FAILED:
            self.failure = failure or "machine failed"
        self.state = new
        self.history.append((new, time.monotonic()))
        return new

    def seconds_in(self, state: MachineState) -> float:
        """Time spent in ``state`` (0 when never entered)."""
        for (s, start), (_, end) in zip(self.history, self.history[1:], strict=False):
            if s is state:
                return end - start
        return 0.0
