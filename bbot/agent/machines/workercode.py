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
import gzip
import io
from pathlib import Path

import tftpy

import bbot

# Where the image's initramfs looks for the worker's code (ops/images/ reads the same name).
INITRAMFS_WORKER_DIR = "bbot-worker"


def package_dirs() -> dict[str, Path]:
    """The packages the worker needs, by their import name."""
    return {"bbot": Path(bbot.__file__).parent, "tftpy": Path(tftpy.__file__).parent}


def _source_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")
                  if "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo") and p.is_file())


def _newc_entry(out: io.BytesIO, name: str, mode: int, data: bytes, ino: int) -> None:
    """One entry of a cpio archive in the "newc" format the kernel reads (no mtimes, no owners:
    the same code gives the same bytes)."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
    out.write(encoded)
    out.write(b"\0" * (-(110 + len(encoded)) % 4))
    out.write(data)
    out.write(b"\0" * (-len(data) % 4))


def worker_cpio() -> bytes:
    """A gzip-compressed cpio archive holding ``bbot-worker/{bbot,tftpy}/…``."""
    out = io.BytesIO()
    ino = 1
    _newc_entry(out, INITRAMFS_WORKER_DIR, 0o40755, b"", ino)
    for package, root in package_dirs().items():
        directories = {Path(package)}
        ino += 1
        _newc_entry(out, f"{INITRAMFS_WORKER_DIR}/{package}", 0o40755, b"", ino)
        for path in _source_files(root):
            relative = Path(package) / path.relative_to(root)
            for parent in reversed(relative.parents[:-1]):
                if parent not in directories:
                    directories.add(parent)
                    ino += 1
                    _newc_entry(out, f"{INITRAMFS_WORKER_DIR}/{parent}", 0o40755, b"", ino)
            ino += 1
            _newc_entry(out, f"{INITRAMFS_WORKER_DIR}/{relative}", 0o100644, path.read_bytes(), ino)
    _newc_entry(out, "TRAILER!!!", 0, b"", 0)
    return gzip.compress(out.getvalue(), compresslevel=6, mtime=0)


@functools.lru_cache(maxsize=8)
def initrd_with_worker(base_initrd: Path, base_mtime_ns: int) -> bytes:
    """The image's initrd with the worker's archive appended (cached per initrd version)."""
    base = base_initrd.read_bytes()
    # The kernel skips zero padding between archives; archives start 4-byte aligned.
    return base + b"\0" * (-len(base) % 4) + worker_cpio()
