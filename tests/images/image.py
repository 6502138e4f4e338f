"""The Debian 12 machine image for tests: built (or found in the cache) once per test session.

Other tests import :func:`ensure_image`; it fails loudly, never skips, when the image cannot be
built. The image is cached in ``$BBOT_IMAGE_CACHE`` (default ``/var/cache/bbot/images``), so only
the first session on a machine pays for debootstrap (minutes); later calls take a second.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_COMMAND = REPO / "ops" / "images" / "build"
BUILD_TIMEOUT = 3600.0

_lock = threading.Lock()
_image: Path | None = None


class ImageBuildError(AssertionError):
    """``ops/images/build`` failed: an assertion failure, so that tests needing the image fail."""


def run_build(timeout: float = BUILD_TIMEOUT) -> tuple[Path, str]:
    """Run ``ops/images/build`` once: (the image directory it printed last, its standard error)."""
    completed = subprocess.run([str(BUILD_COMMAND)], capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL, check=False)
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise ImageBuildError(
            f"{BUILD_COMMAND} failed (exit {completed.returncode}); the end of its output:\n"
            f"{completed.stderr[-4000:]}"
        )
    image = Path(lines[-1])
    if not (image / "machine.yaml").is_file():
        raise ImageBuildError(f"{BUILD_COMMAND} printed {image}, which holds no machine.yaml")
    return image, completed.stderr


def ensure_image() -> Path:
    """The image directory (holding machine.yaml, disk.qcow2, vmlinuz, initrd.img, rootfs/)."""
    global _image
    with _lock:
        if _image is None:
            _image, _ = run_build()
        return _image
