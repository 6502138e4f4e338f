"""A farm of separate processes on one host: ``bbot controller`` and ``bbot agent``s.

The fault tests and ``ops/bench/throughput.py`` use it to run the real
commands, with their YAML configs, against a real broker, and to kill and
restart them by their own handles. Every process it starts, ``stop`` stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bbot.controller.lease import BuildState


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def git_daemon(base: Path, timeout: float = 10.0) -> Iterator[str]:
    """``git daemon`` on 127.0.0.1 serving the repositories under ``base`` (a stand-in for a
    git host, for tests and benchmarks); yields ``git://127.0.0.1:PORT``; stopped on exit.
    Build machines reach it at 10.0.2.2 (the agent rewrites loopback URLs)."""
    port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}",
                               "--listen=127.0.0.1", f"--port={port}", str(base)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if daemon.poll() is not None:
                    raise RuntimeError(f"git daemon exited with code {daemon.returncode}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"git daemon did not listen within {timeout:g} s") from None
                time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        daemon.terminate()
        daemon.wait(10)


@dataclass
class Proc:
    """One bbot process, its config and its log."""

    name: str
    args: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.popen is None or self.popen.poll() is not None, f"{self.name} is running"
        log = self.log_path.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.popen = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)
        log.close()

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is given back."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stop(self, timeout: float = 30) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        # Whatever the bbot process left in its group (a worker mid-build) goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class DevFarm:
    """Configs, processes and the store of one multi-process farm under ``root``."""

    root: Path
    broker_url: str
    configurations: Sequence[dict[str, Any]]
    controller_settings: dict[str, Any] = field(default_factory=dict)
    agent_settings: dict[str, Any] = field(default_factory=dict)
    controller_name: str = "main"
    agent_broker_url: str | None = None  # None: the controller's (e.g. another user's credentials)
    declare: bool = True
    store_url: str | None = None
    web_port: int = 0
    controller: Proc | None = None
    agents: dict[str, Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.web_port = self.web_port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"

    def _write(self, name: str, document: dict[str, Any]) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def _common(self, broker_url: str | None = None) -> dict[str, Any]:
        url = broker_url or self.broker_url
        document: dict[str, Any] = {
            "data_dir": str(self.data),
            "broker": {"urls": url.split(";"), "declare": self.declare},
        }
        if self.store_url:
            document["store"] = {"url": self.store_url}
        return document

    def start_controller(self) -> Proc:
        if self.controller is None:
            config = self._write("controller", {
                **self._common(),
                "controller": {"name": self.controller_name, **self.controller_settings},
                "web": {"host": "127.0.0.1", "port": self.web_port},
                "configurations": list(self.configurations),
                "agent": {"heartbeat": self.agent_settings.get("heartbeat", 5.0)},
            })
            command = [sys.executable, "-m", "bbot", "controller", "-c", str(config)]
            self.controller = Proc("controller", command, self.root / "controller.log")
        self.controller.start()
        self.wait_http(self.url + "api/builds", 60)
        return self.controller

    def add_agent(self, name: str, machines: Sequence[dict[str, Any]]) -> Proc:
        config = self._write(f"agent-{name}", {
            **self._common(self.agent_broker_url),
            "data_dir": str(self.root / f"agent-{name}"),
            "controller": {"name": self.controller_name},
            "agent": {"name": name, **self.agent_settings, "machines": list(machines)},
        })
        proc = Proc(f"agent {name}", [sys.executable, "-m", "bbot", "agent", "-c", str(config)],
                    self.root / f"agent-{name}.log")
        self.agents[name] = proc
        proc.start()
        return proc

    def stop(self) -> None:
        for proc in self.agents.values():
            proc.stop()
        if self.controller is not None:
            self.controller.stop()

    # -- talking to the controller --------------------------------------------------------------

    @staticmethod
    def wait_http(url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not answer within {timeout:g} s") from None
                time.sleep(0.1)

    def submit(self, git_url: str) -> int:
        body = json.dumps({"url": git_url}).encode()
        request = urllib.request.Request(self.url + "api/submit", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return int(json.load(response)["set_id"])

    # -- reading the store (SQLite, read-only, beside the controller) ------------------------------

    @contextlib.contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        assert self.store_url is None, "only the default SQLite store is read directly"
        conn = sqlite3.connect(f"file:{self.data / 'bbot.sqlite'}?mode=ro", uri=True, timeout=30)
        try:
            yield conn
        finally:
            conn.close()

    def counts(self) -> dict[str, int]:
        with self.db() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM bbot_builds GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def built_count(self) -> int:
        with self.db() as conn:  # counted on the (state, lease_deadline) index
            return int(conn.execute("SELECT COUNT(*) FROM bbot_builds WHERE state = ?",
                                    (BuildState.BUILT.value,)).fetchone()[0])

    def wait_built(self, n: int, timeout: float, *, watch: Sequence[Proc] = (), poll: float = 0.05) -> float:
        """Wait until ``n`` builds are built; returns the seconds waited."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            with contextlib.suppress(sqlite3.OperationalError):
                if self.built_count() >= n:
                    return time.monotonic() - start
            for proc in watch:
                if not proc.alive:
                    raise RuntimeError(f"{proc.name} died:\n{proc.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.counts()} of {n} builds after {timeout:g} s")
            time.sleep(poll)
