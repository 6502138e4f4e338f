"""The worker's code as a machine gets it: the agent's own ``bbot`` and ``tftpy`` packages.

Machines carry no bbot of their own, so every build runs the worker of the
agent that booted it: upgrading the agent upgrades every machine, and an
image never goes stale. VMs get the code as an extra initramfs archive
(Linux unpacks archives appended to an initrd one after the other; the
image's initramfs copies ``bbot-worker/`` to ``/opt/bbot`` on the root disk),
containers as read-only bind mounts (see container.py).
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import tftpy

import bbot
from bbot.agent.machines.cpio import boot_initrd, write_worker_cpio


def package_dirs() -> list[Path]:
    """The packages the worker needs: this agent's bbot and tftpy."""
    return [Path(bbot.__file__).parent, Path(tftpy.__file__).parent]


def worker_archive() -> bytes:
    """The worker's archive alone (newc cpio, with bytecode for the image's Python)."""
    out = io.BytesIO()
    write_worker_cpio(out, package_dirs())
    return out.getvalue()


@functools.lru_cache(maxsize=8)
def _initrd_with_worker(base_initrd: Path, base_mtime_ns: int) -> bytes:
    return boot_initrd(base_initrd, package_dirs())


def initrd_with_worker(base_initrd: Path) -> bytes:
    """The image's initrd with the worker's archive appended; made once per initrd version
    (and agent), then served from memory: a boot only writes it to its own folder."""
    return _initrd_with_worker(base_initrd, base_initrd.stat().st_mtime_ns)
