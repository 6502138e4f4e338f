"""Runs the commands of one operation as subprocesses and collects its log and status."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from bbot.manifest import sanitize_value
from bbot.manifest.status import Status
from bbot.worker.logs import MAX_LOG_BYTES, LogTail, command_line, matches_warning, note_line
from bbot.worker.operations import (
    Command,
    Outcome,
    command_succeeded,
    describe_exit,
    operation_status,
)

# Output is read back in pieces of at most this size, so a log without newlines cannot
# fill the memory.
_READ_CHUNK = 64 * 1024


class OperationRunner:
    """One operation: its commands run in turn, their output merged into one log.

    The whole output is kept in ``log_path``; :meth:`log` gives the bounded tail for the
    result manifest.
    """

    def __init__(
        self,
        name: str,
        log_path: Path,
        env: Mapping[str, str],
        warning_regexes: Sequence[re.Pattern[str]],
        max_log_bytes: int = MAX_LOG_BYTES,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._env = dict(env)
        self._regexes = warning_regexes
        self._tail = LogTail(max_log_bytes)
        self._outcomes: list[tuple[Command, Outcome]] = []
        self._forced_status: Status | None = None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_bytes(b"")

    @property
    def failed(self) -> bool:
        """Whether the operations after this one must not run."""
        return self.status() >= Status.ERROR

    def note(self, text: str) -> None:
        """A line of the worker's own in the log."""
        self._write(note_line(text))

    def fail(self, text: str, status: Status = Status.ERROR) -> None:
        """Record that the operation could not run (or broke), with the reason."""
        self._forced_status = status if self._forced_status is None else max(
            self._forced_status, status
        )
        self.note(text)

    def run(self, command: Command) -> Outcome:
        self._write(command_line(command.argv))
        env = {**self._env, **command.env}
        start = self.log_path.stat().st_size
        try:
            with self.log_path.open("ab") as log:
                completed = subprocess.run(
                    command.argv,
                    cwd=command.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            exit_code: int | None = completed.returncode
        except OSError as error:
            exit_code = None
            self._write(note_line(f"cannot run {command.argv[0]}: {error.strerror or error}"))
        warned = self._collect(start, scan=command.scan_warnings)
        outcome = Outcome(exit_code, warned)
        self._outcomes.append((command, outcome))
        if exit_code is not None and exit_code != 0 and command_succeeded(command, outcome):
            self._write(note_line(f"exit code {exit_code}: no tests were found"))
        elif (description := describe_exit(exit_code)) is not None:
            self._write(note_line(description))
        return outcome

    def status(self) -> Status:
        status = operation_status(self._outcomes)
        if self._forced_status is not None:
            return max(status, self._forced_status)
        return status

    def log(self) -> str:
        return self._tail.text()

    def _write(self, text: str) -> None:
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(text)
        self._tail.add(sanitize_value(text))

    def _collect(self, start: int, *, scan: bool) -> bool:
        """Feed the output written since ``start`` to the tail; whether a line warned."""
        warned = False
        with self.log_path.open("rb") as log:
            log.seek(start)
            # A line longer than a chunk is matched in pieces.
            while chunk := log.readline(_READ_CHUNK):
                line = chunk.decode("utf-8", "replace")
                # Made writable before it is measured: a replacement character takes more
                # bytes than the control character it replaces.
                self._tail.add(sanitize_value(line))
                if scan and not warned:
                    warned = matches_warning(line.rstrip("\n"), self._regexes)
        return warned


def base_environment(assignments: Mapping[str, str]) -> dict[str, str]:
    """The environment of every command: the worker's own, the C locale, the target config.

    The C locale keeps tool messages in English, which the warning regexes are written
    for; a target config may still set LC_ALL itself.
    """
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env.update(assignments)
    return env
