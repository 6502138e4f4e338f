"""Which agents are alive and which machines they offer, from their announcements."""

from __future__ import annotations

import fnmatch
import threading
import time
from dataclasses import dataclass

from bbot.manifest import MachineHeader, TaskRequest

# An agent that missed this many heartbeats is taken for dead.
MISSED_HEARTBEATS = 3


@dataclass(frozen=True)
class AgentInfo:
    name: str
    toolchain: str
    machines: tuple[MachineHeader, ...]
    last_seen: float
    expiry: float  # taken for dead this long after its last announcement


def machine_matches(pattern: str, machine_name: str) -> bool:
    """A configuration's machine pattern against a machine name (shell-style wildcards)."""
    return fnmatch.fnmatchcase(machine_name, pattern)


class Registry:
    def __init__(self, heartbeat: float = 5.0) -> None:
        self.expiry = heartbeat * MISSED_HEARTBEATS
        self._agents: dict[str, AgentInfo] = {}
        self._lock = threading.Lock()

    def announce(self, request: TaskRequest, now: float | None = None,
                 heartbeat: float | None = None) -> AgentInfo:
        """Record an announcement; ``heartbeat`` is the agent's own interval, when it said."""
        info = AgentInfo(
            name=request.agent,
            toolchain=f"{request.toolchain_name}-{request.toolchain_version}",
            machines=tuple(request.machines),
            last_seen=time.time() if now is None else now,
            expiry=heartbeat * MISSED_HEARTBEATS if heartbeat else self.expiry,
        )
        with self._lock:
            self._agents[request.agent] = info
        return info

    def live_agents(self, now: float | None = None) -> list[AgentInfo]:
        now = time.time() if now is None else now
        with self._lock:
            return [a for a in self._agents.values() if now - a.last_seen <= a.expiry]

    def machine_for(self, pattern: str, now: float | None = None) -> MachineHeader | None:
        """The first live machine matching ``pattern``, in announcement order (as brep picks)."""
        for agent in self.live_agents(now):
            for machine in agent.machines:
                if (machine.role in (None, "build")) and machine_matches(pattern, machine.name):
                    return machine
        return None
