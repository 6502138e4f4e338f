"""``process`` machines: the worker as a child process in a fresh directory.

No isolation: for the embedded default, development and tests. The "snapshot"
is an empty directory made for the boot and removed after; the worker runs in
its own process group, so shutting the machine down also ends everything the
build started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bbot.agent.machines.base import (
    BootSpec,
    Exit,
    MachineBackend,
    Problem,
    check_no_options,
    file_tail,
    signal_name,
)

CONSOLE_LOG = "console.log"


class ProcessMachine(MachineBackend):
    type_name = "process"

    def __init__(self, command: list[str] | None = None) -> None:
        # The worker command; tests replace it to simulate workers that hang or crash.
        self._command = command or [sys.executable, "-m", "bbot.worker"]  # the worker alone, as in images
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def _root(self, spec: BootSpec) -> Path:
        return spec.work_dir / "machine"

    def create_snapshot(self, spec: BootSpec) -> None:
        self._root(spec).mkdir(parents=True, exist_ok=False)

    def boot(self, spec: BootSpec) -> None:
        root = self._root(spec)
        env = dict(os.environ)
        env.update(
            BBOT_TFTP=f"{spec.tftp_host}:{spec.tftp_port}",
            BBOT_DIR=spec.boot_id,
            BBOT_WORK=str(root),
        )
        with open(spec.work_dir / CONSOLE_LOG, "wb") as console:
            self._procs[spec.boot_id] = subprocess.Popen(
                self._command,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: shutdown reaches every child
            )

    def poll(self, spec: BootSpec) -> Exit | None:
        proc = self._procs.get(spec.boot_id)
        if proc is None:
            return Exit(None, "never started")
        code = proc.poll()
        if code is None:
            return None
        if code < 0:
            return Exit(code, f"worker killed by {signal_name(-code)}")
        return Exit(code, f"worker exited with code {code}")

    def console_tail(self, spec: BootSpec, max_bytes: int = 8192) -> str:
        return file_tail(spec.work_dir / CONSOLE_LOG, max_bytes)

    def shutdown(self, spec: BootSpec, grace: float) -> None:
        proc = self._procs.pop(spec.boot_id, None)
        if proc is None:
            return
        self._signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # Children of the worker may outlive it: always sweep the whole group.
        self._signal_group(proc, signal.SIGKILL)
        proc.wait()

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def discard(self, spec: BootSpec) -> None:
        shutil.rmtree(spec.work_dir, ignore_errors=True)


def check_options(where: str, options: Mapping[str, Any], problem: Problem, base: Path) -> None:
    check_no_options(where, options, problem)
