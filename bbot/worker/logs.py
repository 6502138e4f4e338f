"""Operation logs: bounded tails, warning detection, transcript lines (no I/O)."""

from __future__ import annotations

import re
import shlex
from collections import deque
from collections.abc import Iterable, Sequence

#: Used when a task names no warning regex of its own (compilers print "warning:").
DEFAULT_WARNING_REGEXES: tuple[str, ...] = ("warning:",)

#: Most bytes of log text kept per operation: four operations stay well under the 15 MiB a
#: whole result may take (the agent's TFTP server accepts 16 MiB).
MAX_LOG_BYTES = 3 * 1024 * 1024


def compile_warning_regexes(patterns: Iterable[str]) -> tuple[list[re.Pattern[str]], list[str]]:
    """Compile the task's warning regexes (the default set when there are none).

    Returns the compiled ones and a message for each pattern that does not compile, so the
    log can say which were ignored rather than failing the build.
    """
    patterns = list(patterns) or list(DEFAULT_WARNING_REGEXES)
    compiled: list[re.Pattern[str]] = []
    problems: list[str] = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as error:
            problems.append(f"warning-regex {pattern!r} is invalid and was ignored: {error}")
    return compiled, problems


def matches_warning(line: str, regexes: Sequence[re.Pattern[str]]) -> bool:
    return any(regex.search(line) for regex in regexes)


def command_line(argv: Sequence[str]) -> str:
    """The transcript line echoing a command, as a shell would show it."""
    return f"$ {shlex.join(argv)}\n"


def note_line(text: str) -> str:
    """A line of the worker's own in a log (shell comment style, so it reads as a transcript)."""
    return "".join(f"# {line}\n" for line in text.splitlines() or [""])


class LogTail:
    """Keeps the last ``max_bytes`` (UTF-8) of a log fed line by line.

    Older lines are dropped whole; a single line longer than the limit keeps its end. The
    text says how much was dropped, at the top.
    """

    def __init__(self, max_bytes: int = MAX_LOG_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self._lines: deque[tuple[str, int]] = deque()
        self._kept = 0
        self.dropped_bytes = 0

    def add(self, text: str) -> None:
        """Append text (one or more lines; a missing final newline is kept as is)."""
        for line in text.splitlines(keepends=True):
            self._add_line(line)

    def _add_line(self, line: str) -> None:
        size = len(line.encode("utf-8", "replace"))
        if size > self.max_bytes:
            encoded = line.encode("utf-8", "replace")
            tail = encoded[-self.max_bytes :].decode("utf-8", "ignore")
            self.dropped_bytes += size - len(tail.encode("utf-8"))
            line, size = tail, len(tail.encode("utf-8"))
        self._lines.append((line, size))
        self._kept += size
        while self._kept > self.max_bytes:
            _, dropped = self._lines.popleft()
            self._kept -= dropped
            self.dropped_bytes += dropped

    def text(self) -> str:
        """The kept log, ending with a newline; with a truncation notice when it was cut."""
        body = "".join(line for line, _ in self._lines)
        if body and not body.endswith("\n"):
            body += "\n"
        if self.dropped_bytes:
            notice = note_line(
                f"log truncated: the first {self.dropped_bytes} bytes were dropped, "
                f"the last {self._kept} bytes follow"
            )
            return notice + body
        return body
