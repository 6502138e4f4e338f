"""The ``null`` machine: nothing boots; its "worker" reports success at once.

It measures the farm's own overhead (controller, broker, agent, result queue
and store) without any build in the way: ``ops/bench/throughput.py`` and the
delivery fault tests run thousands of builds on it. The agent still moves each
boot through the whole lifecycle state machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bbot.agent.machines.base import BootSpec, Exit, MachineBackend, Problem, check_no_options
from bbot.manifest import OperationResult, Result, Task
from bbot.manifest.status import Status


class NullMachine(MachineBackend):
    type_name = "null"
    instant = True

    def instant_result(self, task: Task) -> Result:
        return Result(task.name, task.version, Status.SUCCESS,
                      [OperationResult("update", Status.SUCCESS, "null machine: nothing to build\n")])

    def create_snapshot(self, spec: BootSpec) -> None:
        pass

    def boot(self, spec: BootSpec) -> None:
        pass

    def poll(self, spec: BootSpec) -> Exit | None:
        return Exit(0, "exited")

    def console_tail(self, spec: BootSpec, max_bytes: int = 8192) -> str:
        return ""

    def shutdown(self, spec: BootSpec, grace: float) -> None:
        pass

    def discard(self, spec: BootSpec) -> None:
        pass


def check_options(where: str, options: Mapping[str, Any], problem: Problem, base: Path) -> None:
    check_no_options(where, options, problem)
