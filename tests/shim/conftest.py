"""A controller with its shim on a real socket, and raw HTTP to drive it as a bbot agent would."""

from __future__ import annotations

import http.client as httplib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bbot.brep import keys
from bbot.config import AgentConfig, Config, WebConfig, load_config
from bbot.controller.store import BuildRow
from bbot.farm import Farm, start_farm
from bbot.manifest import MachineHeader, TaskRequest
from tests.conftest import SAMPLE, git_repo


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def http(url: str, body: bytes | None = None, *, method: str = "POST",
         headers: dict[str, str] | None = None, timeout: float = 30, chunked: bool = False) -> Reply:
    """One raw HTTP/1.1 request over a real socket; the path and query are sent as given."""
    parts = urlsplit(url)
    connection = httplib.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body,
                           headers={"Content-Type": "text/manifest", **(headers or {})},
                           encode_chunked=chunked)
        response = connection.getresponse()
        return Reply(response.status, response.getheader("Content-Type", ""), response.read())
    finally:
        connection.close()


def wait_for(condition: Callable[[], object], timeout: float = 20, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class ShimFarm:
    farm: Farm
    machine: str  # a machine name the configurations accept
    set_id: int

    @property
    def url(self) -> str:
        return self.farm.url.rstrip("/") + "/"

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.farm.controller.store

    def builds(self) -> list[BuildRow]:
        return self.store.set_builds(self.set_id)

    def task_request(self, *, agent: str = "remote-1", machine: str | None = None,
                     fingerprint: str | None = None) -> TaskRequest:
        name = machine or self.machine
        return TaskRequest(agent=agent, toolchain_name="public", toolchain_version="0.17.0",
                           machines=[MachineHeader(id="m-" + name, name=name, summary="a remote machine")],
                           fingerprint=fingerprint)

    def poll(self, request: TaskRequest | bytes, query: str = "build-task") -> Reply:
        body = request if isinstance(request, bytes) else request.to_text().encode()
        return http(f"{self.url}?{query}", body)


def shim_config(tmp_path: Path, unique: str, broker_url: str, *, agent_keys: Path | None = None) -> Config:
    base = load_config(None, data_dir=tmp_path / "data")
    return replace(
        base,
        broker_url=broker_url,
        web=WebConfig("127.0.0.1", 0),
        controller=replace(base.controller, name=f"c-{unique}", schedule_interval=0.05,
                           agent_keys=agent_keys),
        agent=AgentConfig(name=f"unused-{unique}"),
        # One configuration: one build per submission.
        configurations=(replace(base.configurations[0], machine=f"linux_{unique}-*"),),
    )


def start_shim_farm(tmp_path: Path, unique: str, broker_url: str = "memory://",
                    agent_keys: Path | None = None) -> ShimFarm:
    farm = start_farm(shim_config(tmp_path, unique, broker_url, agent_keys=agent_keys), with_agent=False)
    try:
        repo = tmp_path / "libhello"
        git_repo(repo, SAMPLE)
        set_id = farm.controller.submit(str(repo))
    except BaseException:
        farm.stop()
        raise
    return ShimFarm(farm, f"linux_{unique}-gcc", set_id)


@pytest.fixture
def shim(tmp_path: Path, unique: str) -> Iterator[ShimFarm]:
    s = start_shim_farm(tmp_path, unique)
    yield s
    s.farm.stop()


@pytest.fixture
def agent_key(tmp_path: Path) -> keys.rsa.RSAPrivateKey:
    return keys.generate_private_key(2048)


@pytest.fixture
def keyed_shim(tmp_path: Path, unique: str, agent_key: keys.rsa.RSAPrivateKey) -> Iterator[ShimFarm]:
    directory = tmp_path / "agent-keys"
    directory.mkdir()
    (directory / "remote-1.pem").write_text(keys.public_pem(agent_key))
    s = start_shim_farm(tmp_path, unique, agent_keys=directory)
    yield s
    s.farm.stop()
