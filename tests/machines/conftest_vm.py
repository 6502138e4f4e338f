"""Real parts for real-machine tests: libvirtd on qemu:///system, a git server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from bbot.devfarm import git_daemon
from tests.conftest import SAMPLE, git_repo

SYSTEM_URI = "qemu:///system"


@pytest.fixture(scope="session")
def libvirt_system() -> Iterator[Any]:
    """A connection to the real libvirtd; fails (never skips) when it is not running."""
    try:
        conn = libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError as e:
        pytest.fail(f"libvirtd does not answer on {SYSTEM_URI} ({e}); start it: virtlogd -d; libvirtd -d "
                    "(./ops/test does)")
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def sample_git_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The C sample as a git repository served by `git daemon` on 127.0.0.1 (machines reach the
    host's loopback at 10.0.2.2; the agent rewrites the URL for them)."""
    base = tmp_path_factory.mktemp("git")
    git_repo(base / "libhello.git", SAMPLE)
    with git_daemon(base) as url:
        yield f"{url}/libhello.git#main"


def boots_left(data_dir: Path, agent_name: str) -> list[Path]:
    return list((data_dir / "agent" / agent_name / "boots").iterdir())
