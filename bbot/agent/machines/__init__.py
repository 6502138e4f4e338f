"""Build machine backends, one per file: process, null, kvm (libvirt), container.

Each backend module has the backend class and ``check_options(where, options,
problem, base)``, which reports every problem with the options of a machine of
its type (config.py calls it while it collects the configuration's problems).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bbot.config import MACHINE_TYPES

Problem = Any  # Callable[[str, str], None]; see base.Problem (kept light: config imports this)


def backend_for(machine_type: str) -> Any:
    """A new backend of this machine type: the MachineBackend subclass in its module."""
    from bbot.agent.machines.base import MachineBackend

    assert machine_type in MACHINE_TYPES
    module = importlib.import_module(f"bbot.agent.machines.{machine_type}")
    for value in vars(module).values():
        if (isinstance(value, type) and issubclass(value, MachineBackend)
                and getattr(value, "type_name", None) == machine_type):
            return value()
    raise LookupError(f"bbot.agent.machines.{machine_type} has no backend class")


def check_options(machine_type: str, where: str, options: Mapping[str, Any], problem: Problem,
                  base: Path) -> dict[str, Any]:
    """Check a machine's type-specific options (``base``: the config file's folder); returns
    them with their paths (the options a module names in PATH_OPTIONS) made absolute."""
    assert machine_type in MACHINE_TYPES
    module = importlib.import_module(f"bbot.agent.machines.{machine_type}")
    module.check_options(where, options, problem, base)
    resolved = dict(options)
    for key in getattr(module, "PATH_OPTIONS", ()):
        if isinstance(resolved.get(key), str):
            resolved[key] = str((base / resolved[key]).absolute())
    return resolved
