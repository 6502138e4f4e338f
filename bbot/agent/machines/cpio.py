"""newc cpio archives for bbot machines: an image's initramfs and the worker code appended to it.

Linux unpacks every cpio archive concatenated in an initramfs, so an agent boots a machine with
``initrd.img`` of the image followed by a small archive that puts bbot's Python code under
``/bbot-worker``; the image's ``/init`` copies that to ``/opt/bbot`` of the root disk before it
starts the worker. The image's code then never has to be rebuilt when bbot changes.

Archives are reproducible: sorted entries, owner root, a fixed mtime, inode numbers counted from 1.
Stdlib only, and imports nothing of bbot: ``ops/images/build`` loads this file by its path on a
bare Debian machine, where bbot's dependencies need not be installed.
"""

from __future__ import annotations

import contextlib
import io
import os
import py_compile
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "WORKER_DIR",
    "CpioWriter",
    "boot_initrd",
    "write_boot_initrd",
    "write_worker_cpio",
]

# The initramfs' /init looks for this directory (ops/images/initramfs-init says so too).
WORKER_DIR = "bbot-worker"
# The Python of the image (Debian 12): compiled bytecode is added only when the Python running
# this code has the same bytecode format, otherwise the guest would just ignore it.
GUEST_PYTHON = (3, 11)
_ALIGN = 4
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


class CpioWriter:
    """Writes one newc ("070701") archive; call :meth:`close` to write the trailer."""

    def __init__(self, out: BinaryIO, mtime: int = 0) -> None:
        self._out = out
        self._mtime = mtime
        self._next_ino = 1
        self._written = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._next_ino, mode, 0, 0, nlink, self._mtime, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        self._next_ino += 1
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        self._write(header + encoded)
        self._pad()
        if data:
            self._write(data)
            self._pad()

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def _pad(self) -> None:
        self._write(b"\0" * (-self._written % _ALIGN))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def tree(self, source: Path, name: str, bytecode: bool = False) -> None:
        """``source`` (a directory) as ``name``, without caches; optionally with compiled .pyc files."""
        self.directory(name)
        if bytecode and any(child.suffix == ".py" for child in source.iterdir()):
            self.directory(f"{name}/__pycache__")
        for path in _walk(source):
            relative = f"{name}/{path.relative_to(source).as_posix()}"
            if path.is_symlink():
                self.symlink(relative, os.readlink(path))
            elif path.is_dir():
                self.directory(relative)
                if bytecode and any(child.suffix == ".py" for child in path.iterdir()):
                    self.directory(f"{relative}/__pycache__")
            else:
                perm = 0o755 if os.access(path, os.X_OK) else 0o644
                self.file(relative, path.read_bytes(), perm)
                if bytecode and path.suffix == ".py":
                    pyc_name = f"{path.stem}.{sys.implementation.cache_tag}.pyc"
                    self.file(f"{relative.rsplit('/', 1)[0]}/__pycache__/{pyc_name}", _compile(path))

    def close(self) -> None:
        self._entry("TRAILER!!!", 0)
        # Conventional: whole 512-byte blocks, so that further archives may simply be appended.
        self._write(b"\0" * (-self._written % 512))


def _walk(root: Path) -> Iterator[Path]:
    """Every path under ``root``, a directory before its contents, in name order."""
    for child in sorted(root.iterdir(), key=lambda p: p.name):
        if child.name in _SKIP_DIRS or child.name.endswith(_SKIP_SUFFIXES):
            continue
        yield child
        if child.is_dir() and not child.is_symlink():
            yield from _walk(child)


def _compile(source: Path) -> bytes:
    """Bytecode that the guest uses without comparing it with the source (it ships with it)."""
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "module.pyc"
        py_compile.compile(str(source), cfile=str(target), dfile=str(source.name), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        return target.read_bytes()


def write_worker_cpio(out: BinaryIO, package_dirs: Iterable[Path], mtime: int = 0) -> None:
    """An uncompressed newc archive with ``bbot-worker/<package>/...`` for each package directory.

    With the same inputs the bytes are the same. Bytecode is included when this Python writes the
    guest's bytecode format (3.11), which saves the guest compiling bbot at every boot.
    """
    dirs = list(package_dirs)
    bytecode = sys.version_info[:2] == GUEST_PYTHON
    writer = CpioWriter(out, mtime)
    writer.directory(WORKER_DIR)
    for package in sorted(dirs, key=lambda p: p.name):
        if not (package / "__init__.py").is_file():
            raise ValueError(f"{package} is not a Python package directory (no __init__.py)")
        writer.tree(package, f"{WORKER_DIR}/{package.name}", bytecode=bytecode)
    writer.close()


def boot_initrd(image_initrd: Path, package_dirs: Iterable[Path]) -> bytes:
    """The image's initrd.img followed by the worker archive: what one boot's -initrd is."""
    worker = io.BytesIO()
    write_worker_cpio(worker, package_dirs)
    base = image_initrd.read_bytes()
    # The kernel looks for the next archive's header on a 4-byte boundary and skips zeros.
    return base + b"\0" * (-len(base) % _ALIGN) + worker.getvalue()


def write_boot_initrd(image_initrd: Path, out: Path, package_dirs: Iterable[Path]) -> None:
    """``boot_initrd`` into ``out``, written to a temporary name beside it and renamed, so a
    reader never sees half of it."""
    data = boot_initrd(image_initrd, package_dirs)
    fd, temporary = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
