"""``bbot up``: a whole farm in one process (the embedded default).

Controller, web pages and one agent share one process; with no configuration
they use kombu's in-memory transport, SQLite and a Maildir outbox in the data
directory, and ``process`` build machines. Every part runs the code it runs
in the datacenter: only URLs in the configuration differ.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from flask import Flask

from bbot.agent.service import Agent
from bbot.config import Config
from bbot.controller.service import Controller
from bbot.controller.shim import AgentShim
from bbot.controller.store import BuildRow
from bbot.controller.web import agents, create_app
from bbot.controller.web.server import WebServer, serve
from bbot.wire import log_url

log = logging.getLogger(__name__)


@dataclass
class Farm:
    config: Config
    controller: Controller
    agent: Agent | None
    web: WebServer
    shim: AgentShim | None = None
    app: Flask | None = None  # what ``web`` serves (to serve it again after a stop)

    @property
    def url(self) -> str:
        return self.controller.base_url

    def stop(self) -> None:
        # Agent first: it gives its running tasks back while the controller still listens.
        if self.agent is not None:
            self.agent.stop()
        self.web.stop()
        if self.shim is not None:
            self.shim.close()
        self.controller.stop()


def start_farm(config: Config, *, with_agent: bool = True, port: int | None = None) -> Farm:
    """Start controller, web server and (optionally) the agent; the caller stops the farm."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    controller = Controller(config)
    web_port = config.web.port if port is None else port
    # The web server starts before the controller so the controller's links carry its real port.
    shim = make_shim(controller)
    app = create_app(controller.store, base_url=controller.base_url, submit=controller.submit,
                     handlers=agents.handlers(shim), configurations=config.configurations,
                     on_force=controller.wake)
    web = serve(app, config.web.host, web_port, threads=config.web.threads)
    if config.controller.base_url is None:
        controller.base_url = web.url.rstrip("/") + "/"
        app.config["BBOT_BASE_URL"] = controller.base_url
    agent = None
    try:
        controller.start()
        if with_agent:
            agent = Agent(
                config.agent, broker_url=config.broker_url, data_dir=config.data_dir,
                broker_declare=config.broker_declare,
                toolchain_name=config.controller.toolchain_name,
                toolchain_version=config.controller.toolchain_version,
            )
            agent.start()
    except BaseException:
        web.stop()
        shim.close()
        controller.stop()
        raise
    return Farm(config, controller, agent, web, shim, app)


def make_shim(controller: Controller) -> AgentShim:
    """brep's agent interface for ``controller``, with its trusted agent keys if configured."""
    cc = controller.config.controller
    trusted = None
    if cc.agent_keys is not None:
        from bbot.brep.keys import TrustedKeys

        trusted = TrustedKeys.load(cc.agent_keys)  # loaded once, as brep does: restart to add keys
    return AgentShim(controller, trusted=trusted, result_timeout=cc.result_timeout,
                     agent_expiry=cc.http_agent_expiry)


def results_table(builds: Sequence[BuildRow], base_url: str) -> str:
    rows = [("package", "version", "configuration", "status", "seconds", "log")]
    for b in builds:
        seconds = f"{b.finished_at - b.created_at:.1f}" if b.finished_at else "-"
        status = b.status.value if b.status is not None else b.state.value
        rows.append((b.package_name, b.package_version, b.configuration, status, seconds,
                     log_url(base_url, b.key)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows]
    return "\n".join(lines)


def _report(farm: Farm, set_ids: list[int], stop: threading.Event, timeout: float) -> int:
    """Wait for the sets' builds, print their table; 0 if all succeeded, 1 if not, 2 if unfinished."""
    started = time.monotonic()
    done = False
    while not stop.is_set() and time.monotonic() - started < timeout:
        if farm.controller.wait_for_sets(set_ids, timeout=0.5):
            done = True
            break
    builds = [b for s in set_ids for b in farm.controller.store.set_builds(s)]
    print(results_table(builds, farm.url), flush=True)
    if not done:
        print(f"bbot: not every build finished within {timeout:g} s", flush=True)
        return 2
    failed = [b for b in builds if b.status is None or b.status.value != "success"]
    print(f"bbot: {len(builds) - len(failed)} of {len(builds)} build(s) succeeded "
          f"in {time.monotonic() - started:.1f} s", flush=True)
    return 0 if not failed else 1


def run_up(config: Config, *, submit: Sequence[str] = (), once: bool = False, timeout: float = 3600.0,
           port: int | None = None) -> int:
    """The ``bbot up`` command; returns the process exit status."""
    farm = start_farm(config, port=port)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"bbot: farm up; pages at {farm.url}builds  (data in {config.data_dir})", flush=True)
        set_ids = []
        for url in submit:
            set_id = farm.controller.submit(url)
            set_ids.append(set_id)
            print(f"bbot: submitted {url} as build set {set_id}", flush=True)
        if once and not set_ids:
            set_ids = sorted({b.set_id for b in farm.controller.store.list_builds(limit=10_000)})
        code = _report(farm, set_ids, stop, timeout) if set_ids else 0
        if once or stop.is_set():
            return code
        print(f"bbot: serving the pages at {farm.url}builds; Ctrl-C stops", flush=True)
        stop.wait()
        return 0
    finally:
        farm.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
