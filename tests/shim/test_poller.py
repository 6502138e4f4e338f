"""Agents that poll: the result spool (retries, restarts, refusals, signatures) against real
HTTP servers, and HTTP and AMQP agents competing for the same task queues on RabbitMQ."""

from __future__ import annotations

import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bbot.agent.poller import ResultSpool
from bbot.agent.service import Agent, HttpDestination
from bbot.brep import keys
from bbot.config import AgentConfig, MachineConfig
from bbot.controller.lease import BuildState
from bbot.controller.store import NewBuild, NewBuildSet
from bbot.farm import start_farm
from bbot.manifest import OperationResult, Result, ResultRequest, Status
from tests.shim.conftest import shim_config, wait_for


class Recorder:
    """A real HTTP server that answers every POST with ``status`` and keeps the bodies."""

    def __init__(self, port: int = 0, status: int = 200) -> None:
        recorder = self
        self.bodies: list[bytes] = []
        self.status = status

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                recorder.bodies.append(self.rfile.read(length))
                self.send_response(recorder.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?build-result"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(session: str = "/libhello/1.0/x86_64-linux-gnu/c/default/bbot/0.1.0/1") -> ResultRequest:
    return ResultRequest(session=session, result=Result("libhello", "1.0", Status.SUCCESS,
                                                        [OperationResult("update", Status.SUCCESS, "ok\n")]))


CONFIG = AgentConfig(name="spooler", poll_interval=0.05, poll_backoff_max=0.2)


def test_a_result_the_controller_cannot_take_yet_survives_a_restart(tmp_path: Path) -> None:
    port = free_port()  # nobody listens here yet
    spool = ResultSpool(tmp_path / "spool", CONFIG, None)
    spool.start()
    try:
        spool.put(HttpDestination(f"http://127.0.0.1:{port}/?build-result"), request())
        wait_for(lambda: spool._backoff.failures >= 2, what="failed posts")
    finally:
        spool.stop()
    assert len(spool.pending()) == 1  # still on disk after the agent stopped

    server = Recorder(port)
    again = ResultSpool(tmp_path / "spool", CONFIG, None)
    again.start()
    try:
        wait_for(lambda: again.posted == 1, what="the result posted after the restart")
        assert ResultRequest.from_text(server.bodies[0]).session == request().session
        assert again.pending() == []
    finally:
        again.stop()
        server.stop()


def test_a_result_the_controller_refuses_is_kept_aside_not_retried(tmp_path: Path, recorder: Recorder) -> None:
    recorder.status = 400
    spool = ResultSpool(tmp_path / "spool", CONFIG, None)
    spool.start()
    try:
        spool.put(HttpDestination(recorder.url), request())
        wait_for(lambda: list((tmp_path / "spool" / "rejected").glob("*.json")), what="the refusal")
        assert len(recorder.bodies) == 1 and spool.pending() == []
    finally:
        spool.stop()


def test_a_5xx_is_retried_until_it_goes_through(tmp_path: Path, recorder: Recorder) -> None:
    recorder.status = 503
    spool = ResultSpool(tmp_path / "spool", CONFIG, None)
    spool.start()
    try:
        spool.put(HttpDestination(recorder.url), request())
        wait_for(lambda: len(recorder.bodies) >= 3, what="retries")
        recorder.status = 200
        wait_for(lambda: spool.posted == 1, what="the post that goes through")
        assert spool.pending() == []
    finally:
        spool.stop()


def test_the_challenge_is_signed_with_the_agents_key(tmp_path: Path, recorder: Recorder) -> None:
    key = keys.generate_private_key(1024)
    spool = ResultSpool(tmp_path / "spool", CONFIG, key)
    spool.start()
    try:
        challenge = keys.new_challenge()
        spool.put(HttpDestination(recorder.url, challenge), request())
        wait_for(lambda: spool.posted == 1, what="the post")
        sent = ResultRequest.from_text(recorder.bodies[0])
        assert sent.challenge is not None
        assert keys.verify_challenge(key.public_key(), challenge, sent.challenge)
    finally:
        spool.stop()


@pytest.mark.rabbitmq
def test_http_and_amqp_agents_compete_for_the_same_queues(tmp_path: Path, unique: str, rabbitmq: str) -> None:
    machine = f"null_{unique}-x86_64"
    config = shim_config(tmp_path, unique, rabbitmq)
    config = replace(config, agent=AgentConfig(
        name=f"amqp-{unique}", heartbeat=0.5,
        machines=tuple(MachineConfig(f"a{i}-{unique}", machine, "null", type="null") for i in range(4))))
    farm = start_farm(config)  # with its AMQP agent
    poller = None
    try:
        store = farm.controller.store
        set_id = store.add_build_set(NewBuildSet(kind="submit", source="test", repository_url="file:///x",
                                                 ref=None, commit="0" * 40, package_name="libnull",
                                                 package_version="1.0"))
        count = 300
        store.add_builds(set_id, [NewBuild(configuration=f"c{i}", machine_pattern=f"null_{unique}-*",
                                           target="x86_64-linux-gnu", config_args="", warning_regex=[],
                                           package_config="default", toolchain_name="bbot",
                                           toolchain_version="0.1.0") for i in range(count)])
        farm.controller.wake()
        poller = Agent(AgentConfig(name=f"http-{unique}", controllers=(farm.url,), poll_interval=0.05,
                                   machines=tuple(MachineConfig(f"h{i}-{unique}", machine, "null", type="null")
                                                  for i in range(4))),
                       broker_url="amqp://nobody:nothing@127.0.0.1:1//", data_dir=tmp_path / "remote")
        poller.start()
        assert farm.controller.wait_for_sets([set_id], timeout=120)
        builds = store.set_builds(set_id)
        assert all(b.state is BuildState.BUILT and b.status is Status.SUCCESS for b in builds)
        by_agent = Counter(b.agent for b in builds)
        assert set(by_agent) == {f"amqp-{unique}", f"http-{unique}"}, by_agent
        # Each built once: one attempt with a result, and no duplicate or stale result anywhere.
        for b in builds[:50]:
            assert [a.outcome for a in store.attempts(b.id)] == ["result"]
        counters = store.counters()
        assert not any(counters.get(f"results_dropped_{o}") for o in ("duplicate", "stale", "unknown"))
    finally:
        if poller is not None:
            poller.stop()
        farm.stop()


def test_a_task_response_with_fields_this_bbot_does_not_know_is_taken(tmp_path: Path) -> None:
    """A newer brep may add fields: the polling side reads past them (and sends the task on
    without them)."""
    from bbot.brep import client
    from bbot.manifest import MachineHeader, TaskRequest

    answer = (b": 1\nsession: /libhello/1.0/t/c/default/public/0.17.0/1\nresult-url: http://x/?build-result\n"
              b"frobnicate-url: http://x/?frobnicate\n:\nname: libhello\nversion: 1.0\n"
              b"repository-url: https://git.example.org/hello.git\nmachine: linux_debian_12-gcc_13\n"
              b"target: x86_64-linux-gnu\nbrand-new-field: yes\n")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "text/manifest;charset=utf-8")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        request = TaskRequest(agent="a", toolchain_name="public", toolchain_version="0.17.0",
                              machines=[MachineHeader(id="1", name="linux_debian_12-gcc_13", summary="s")])
        response = client.request_task(f"http://127.0.0.1:{server.server_address[1]}/", request)
        assert response.task is not None and response.task.machine == "linux_debian_12-gcc_13"
        assert "brand-new-field" not in response.task.to_text()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
