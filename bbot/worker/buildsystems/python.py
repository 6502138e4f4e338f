"""Python projects (pyproject.toml): a wheel, pytest, pip install into the staging prefix."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from bbot.worker.buildsystems import BuildContext
from bbot.worker.operations import CONFIGURE, INSTALL, TEST, UPDATE, Command, Plan, PlanError

#: pytest's exit code for "no tests were collected".
PYTEST_NO_TESTS = 5

_SKIPPED_DIRS = {".git", ".hg", ".venv", "venv", "build", "dist", "node_modules", "__pycache__"}


def has_python_tests(relative_paths: Iterable[str]) -> bool:
    """Whether a tree holds pytest-style tests (test_*.py or *_test.py files)."""
    for path in relative_paths:
        name = PurePosixPath(path).name
        if name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py")):
            return True
    return False


def _tree_files(root: Path) -> Iterable[str]:
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _SKIPPED_DIRS and not d.endswith(".egg-info")]
        for name in files:
            yield os.path.relpath(os.path.join(directory, name), root)


class Python:
    name = "python"

    def plan(self, operation: str, context: BuildContext) -> Plan:
        src, python = context.src, context.python
        # pip's version check would reach for the network and print to the log.
        quiet_pip = {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        if operation == CONFIGURE:
            note = "a Python project has nothing to configure"
            if context.configure_args:
                note += "; the configure arguments go to the wheel build"
            return Plan(note=note)
        if operation == UPDATE:
            # No build isolation: a build machine has its build backend installed and may
            # have no network to fetch one.
            argv = (
                python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                "--wheel-dir", str(context.dist), *context.configure_args, str(src),
            )  # fmt: skip
            return Plan((Command(argv, cwd=src, env=quiet_pip),))
        if operation == TEST:
            if not has_python_tests(_tree_files(src)):
                return Plan(note="no tests were found (no test_*.py or *_test.py files)")
            if importlib.util.find_spec("pytest") is None:
                return Plan(note=f"tests were found but pytest is not installed for {python}")
            path = os.pathsep.join(str(p) for p in (src / "src", src) if p.is_dir())
            argv = (python, "-m", "pytest", "-q", "-p", "no:cacheprovider")
            env = {"PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
            command = Command(
                argv, cwd=src, env=env, no_tests_exit_codes=frozenset({PYTEST_NO_TESTS})
            )
            return Plan((command,))
        if operation == INSTALL:
            wheels = sorted(context.dist.glob("*.whl"))
            if len(wheels) != 1:
                raise PlanError(f"expected one wheel in {context.dist}, found {len(wheels)}")
            argv = (
                python, "-m", "pip", "install", "--no-deps", "--no-index",
                "--no-warn-script-location", "--prefix", str(context.install), str(wheels[0]),
            )  # fmt: skip
            return Plan((Command(argv, cwd=src, env=quiet_pip),))
        raise PlanError(f"unknown operation {operation!r}")
