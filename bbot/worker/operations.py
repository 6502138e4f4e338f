"""What the worker runs and how it judges it: operations, commands, statuses (no I/O)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bbot.manifest.status import Status

CONFIGURE = "configure"
UPDATE = "update"
TEST = "test"
INSTALL = "install"
#: The operations in the order they run; a failing one stops the ones after it.
OPERATIONS: tuple[str, ...] = (CONFIGURE, UPDATE, TEST, INSTALL)

#: A target config argument NAME=VALUE whose NAME is an environment variable name.
_ENV_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)

#: Target config variable choosing the build system when a project has several.
BUILD_SYSTEM_VARIABLE = "BBOT_BUILD_SYSTEM"


@dataclass(frozen=True)
class Command:
    """One process of an operation."""

    argv: tuple[str, ...]
    cwd: Path
    #: Environment variables on top of the operation's environment.
    env: Mapping[str, str] = field(default_factory=dict)
    #: Exit codes meaning "ran fine, found no tests" (pytest's 5).
    no_tests_exit_codes: frozenset[int] = frozenset()
    #: Whether the task's warning regexes apply to the output (not to the worker's git).
    scan_warnings: bool = True


@dataclass(frozen=True)
class Plan:
    """What an operation does: commands to run, or a note when there is nothing to run."""

    commands: tuple[Command, ...] = ()
    note: str | None = None


class PlanError(Exception):
    """An operation cannot be run; the message goes into its log and it fails."""


@dataclass(frozen=True)
class Outcome:
    """How one command ended: ``exit_code`` None when it could not be started."""

    exit_code: int | None
    warned: bool = False


def split_config_args(args: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Split target config arguments into environment assignments and the rest.

    ``CFLAGS=-O2`` goes into the environment of every step; anything else (``-DFOO=ON``,
    ``--enable-x``, ``config.cc.coptions=-O3``) goes to the configure step.
    """
    env: dict[str, str] = {}
    rest: list[str] = []
    for arg in args:
        match = _ENV_ASSIGNMENT.fullmatch(arg)
        if match:
            env[match.group(1)] = match.group(2)
        else:
            rest.append(arg)
    return env, rest


def command_succeeded(command: Command, outcome: Outcome) -> bool:
    return outcome.exit_code == 0 or (
        outcome.exit_code is not None and outcome.exit_code in command.no_tests_exit_codes
    )


def operation_status(outcomes: Sequence[tuple[Command, Outcome]]) -> Status:
    """Error when a command failed, warning when one printed a warning, success otherwise."""
    if any(not command_succeeded(command, outcome) for command, outcome in outcomes):
        return Status.ERROR
    if any(outcome.warned for _, outcome in outcomes):
        return Status.WARNING
    return Status.SUCCESS


def describe_exit(exit_code: int | None) -> str | None:
    """A note for the log when a command did not exit with 0."""
    if exit_code is None or exit_code == 0:
        return None
    if exit_code < 0:
        return f"terminated by signal {-exit_code}"
    return f"exit code {exit_code}"
