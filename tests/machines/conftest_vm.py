"""Real parts for real-machine tests: libvirtd on qemu:///system, a git server on loopback."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def sample_git_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The C sample as a git repository served by `git daemon` on 127.0.0.1 (machines reach the
    host's loopback at 10.0.2.2; the agent rewrites the URL for them)."""
    base = tmp_path_factory.mktemp("git")
    git_repo(base / "libhello.git", SAMPLE)
    port = _free_port()
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}",
                               "--listen=127.0.0.1", f"--port={port}", str(base)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or daemon.poll() is not None:
                daemon.kill()
                pytest.fail(f"git daemon did not start: {daemon.stderr.read() if daemon.stderr else ''}")
            time.sleep(0.05)
    try:
        yield f"git://127.0.0.1:{port}/libhello.git#main"
    finally:
        daemon.terminate()
        daemon.wait(10)
        if daemon.stderr:
            daemon.stderr.close()


def boots_left(data_dir: Path, agent_name: str) -> list[Path]:
    return list((data_dir / "agent" / agent_name / "boots").iterdir())
