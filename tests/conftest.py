"""Shared fixtures: real services, never stand-ins."""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "ops" / "sample" / "libhello"
RABBITMQ_URL = os.environ.get("BBOT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")


def git_repo(path: Path, files: dict[str, str] | Path, message: str = "initial",
             author: str = "Ann Author <ann@example.org>") -> str:
    """Make a git repository at ``path`` with ``files`` (a mapping, or a directory to copy); returns its head sha."""
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(files, Path):
        subprocess.run(["cp", "-r", f"{files}/.", str(path)], check=True)
    else:
        for name, text in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(text)
    if not (path / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    name, email = author.rstrip(">").split(" <")
    env = {**os.environ, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), "commit", "-q", "-m", message], check=True, env=env)
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def unique() -> str:
    """A name no other test uses: keeps queues of separate tests apart on a shared broker."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[str]:
    """The RabbitMQ broker on 127.0.0.1:5672. Fails (never skips) when it is not there."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
    except OSError as e:
        pytest.fail(f"RabbitMQ is not reachable on 127.0.0.1:5672 ({e}); ./ops/test starts it")
    yield RABBITMQ_URL
