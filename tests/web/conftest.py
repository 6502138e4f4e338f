from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask

from bbot.controller.store import NewBuild, NewBuildSet, Store
from bbot.controller.web import create_app
from bbot.controller.web.server import WebServer, serve
from bbot.manifest import OperationResult, Result
from bbot.manifest.status import Status

BASE_URL = "https://ci.example.org/"

GIT_SET = NewBuildSet(
    kind="git", source="hello", repository_url="https://git.example.org/hello.git", ref="main",
    commit="0123456789abcdef0123", package_name="libhello", package_version="1.2.3+1",
    author_name="Ann Author", author_email="ann@example.org",
)


def new_build(configuration: str = "linux-gcc") -> NewBuild:
    return NewBuild(configuration=configuration, machine_pattern="linux_debian_12*",
                    target="x86_64-linux-gnu", config_args="config.cxx.std=latest",
                    warning_regex=["^warning:"], package_config="default",
                    toolchain_name="public", toolchain_version="0.17.0")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)


def request(server_url: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> Answer:
    """One request over a real socket, with ``path`` sent exactly as given."""
    parts = urlsplit(server_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      response.read())
    finally:
        connection.close()


@dataclass
class Site:
    store: Store
    app: Flask
    server: WebServer
    submissions: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    sessions: int = 0

    @property
    def url(self) -> str:
        return self.server.url

    def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return request(self.url, "GET", path, headers=headers)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> Answer:
        return request(self.url, "POST", path, body=body,
                       headers={"Content-Type": "application/json", **(headers or {})})

    def add(self, new_set: NewBuildSet = GIT_SET, configurations: tuple[str, ...] = ("linux-gcc",)
            ) -> list[int]:
        set_id = self.store.add_build_set(new_set)
        return self.store.add_builds(set_id, [new_build(c) for c in configurations])

    def finish(self, build_id: int, status: Status = Status.SUCCESS,
               operations: list[OperationResult] | None = None) -> None:
        build = self.store.get_build(build_id)
        assert build is not None
        self.sessions += 1
        session = f"session-{self.sessions}"
        self.store.issue(build_id, session, time.time() + 600, "task")
        if operations is None:
            operations = [
                OperationResult("configure", Status.SUCCESS, "configured\n"),
                OperationResult("update", status, f"update log: {status.value}\n"),
            ]
        self.store.record_result(
            session,
            Result(build.package_name, build.package_version, status, operations, None, None),
            agent="agent-1", machine_name="linux_debian_12", machine_summary="Debian 12",
            metrics={"seconds": 42.0},
        )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    submissions: list[tuple[str, str | None, str | None]] = []

    def submit(url: str, ref: str | None, email: str | None) -> int:
        if "refuse" in url:
            raise ValueError(f"'{url}' is not a git URL bbot can fetch")
        if "crash" in url:
            raise RuntimeError("disk full")
        submissions.append((url, ref, email))
        return 77

    app = create_app(store, base_url=BASE_URL, submit=submit)
    server = serve(app)
    try:
        yield Site(store, app, server, submissions)
    finally:
        server.stop()
        store.close()
