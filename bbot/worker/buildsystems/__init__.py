"""Build systems the worker knows: each plans the commands of the four operations.

A build system module exposes one class with a ``name`` and ``plan(operation, context)``;
planning happens right before an operation runs, so it may look at what earlier ones made
(the Makefile a configure script wrote, the wheel the update step built).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bbot.worker.operations import Plan, PlanError


@dataclass(frozen=True)
class BuildContext:
    """Where things are and what was asked for."""

    src: Path
    #: Out-of-tree build directory (CMake); in-tree build systems ignore it.
    build: Path
    #: Where built packages go (Python wheels).
    dist: Path
    #: The staging prefix installs go to (DESTDIR for make, --prefix for CMake and pip).
    install: Path
    #: Target config arguments that are not environment assignments.
    configure_args: tuple[str, ...]
    jobs: int
    #: The Python interpreter for Python projects.
    python: str


class BuildSystem(Protocol):
    name: str

    def plan(self, operation: str, context: BuildContext) -> Plan:
        """The commands of ``operation``; raises PlanError when it cannot run."""
        ...


MAKEFILES = ("GNUmakefile", "makefile", "Makefile")


def choose_build_system(file_names: Collection[str], requested: str | None = None) -> str:
    """Pick the build system of a source tree from the names of its top-level files.

    CMake wins over make (a project shipping both usually keeps the Makefile for quick
    local builds), make over Python. ``requested`` (BBOT_BUILD_SYSTEM in the target
    config) overrides the choice when the project has what it needs.
    """
    present = {
        "cmake": "CMakeLists.txt" in file_names,
        "make": "configure" in file_names or any(name in file_names for name in MAKEFILES),
        "python": "pyproject.toml" in file_names,
    }
    if requested is not None:
        if requested not in present:
            raise PlanError(
                f"BBOT_BUILD_SYSTEM={requested} is not a known build system: "
                f"use one of {', '.join(present)}"
            )
        if not present[requested]:
            raise PlanError(
                f"BBOT_BUILD_SYSTEM={requested} but the project has no "
                f"{_WHAT_EACH_NEEDS[requested]} at its top"
            )
        return requested
    for name, found in present.items():
        if found:
            return name
    raise PlanError(
        "no build system found: expected CMakeLists.txt, a Makefile or configure script, "
        "or pyproject.toml at the top of the repository"
    )


_WHAT_EACH_NEEDS = {
    "cmake": "CMakeLists.txt",
    "make": "Makefile (or makefile, GNUmakefile, configure)",
    "python": "pyproject.toml",
}


def build_system(name: str) -> BuildSystem:
    from bbot.worker.buildsystems.cmake import CMake
    from bbot.worker.buildsystems.make import Make
    from bbot.worker.buildsystems.python import Python

    systems: dict[str, BuildSystem] = {"cmake": CMake(), "make": Make(), "python": Python()}
    return systems[name]


def detect(src: Path, requested: str | None = None) -> BuildSystem:
    """The build system for the source tree at ``src``; PlanError when there is none."""
    names = {entry.name for entry in src.iterdir()}
    return build_system(choose_build_system(names, requested))
