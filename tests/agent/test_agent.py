"""The agent with real process machines, a real TFTP server and a broker (in memory)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from kombu import Connection

from bbot import bus
from bbot.agent.lifecycle import BootLife, MachineState
from bbot.agent.machines.process import ProcessMachine
from bbot.agent.service import Agent
from bbot.bus import names
from bbot.config import AgentConfig, MachineConfig
from bbot.manifest import ResultRequest, Task
from bbot.manifest.status import Status

PY = sys.executable


# A worker's first act: fetch its task over TFTP (which tells the agent it has started).
FETCH = ("import os; from bbot.tftp import download; h, p = os.environ['BBOT_TFTP'].split(':'); "
         "download(h, int(p), os.environ['BBOT_DIR'] + '/task.manifest'); ")


def run_one(tmp_path: Path, unique: str, worker: list[str], timeout: float = 30.0,
            build_timeout: float = 20.0, boot_timeout: float = 20.0,
            ) -> tuple[ResultRequest, dict[str, object], list[BootLife]]:
    machine = f"m-{unique}"
    config = AgentConfig(name=f"agent-{unique}", build_timeout=build_timeout, boot_timeout=boot_timeout,
                         shutdown_grace=1.0,
                         heartbeat=0.5, machines=(MachineConfig(f"id-{unique}", machine, "test machine"),))
    lives: list[BootLife] = []
    agent = Agent(config, broker_url="memory://", data_dir=tmp_path,
                  backends={"process": ProcessMachine(worker)}, on_boot_done=lives.append)
    reply = f"bbot.results.test-{unique}"
    results = bus.results_queue(f"test-{unique}")
    agent.start()
    try:
        with Connection("memory://") as conn:
            results(conn.default_channel).declare()
            task = Task(name="libx", version="1.0", repository_url="file:///nowhere#main",
                        machine=machine, target="x86_64-linux-gnu")
            publisher = bus.Publisher("memory://")
            publisher.publish(task.to_text(), exchange=bus.tasks_exchange(),
                              routing_key=names.machine_key(machine), declare=[bus.task_queue(machine)],
                              reply_to=reply, correlation_id="/libx/1.0/t/c/d/n/1/42")
            publisher.close()
            queue = conn.SimpleQueue(results)
            message = queue.get(block=True, timeout=timeout)
            message.ack()
            request = ResultRequest.from_text(bus.body_text(message.body))
            headers = dict(message.headers)
            queue.close()
    finally:
        agent.stop()
    # Nothing left behind: no boot directory, no TFTP directory.
    assert list((tmp_path / "agent" / config.name / "boots").iterdir()) == []
    assert list((tmp_path / "agent" / config.name / "tftp").iterdir()) == []
    return request, headers, lives


def test_hanging_worker_ends_abnormal_with_timeout(tmp_path: Path, unique: str) -> None:
    start = time.monotonic()
    request, headers, lives = run_one(
        tmp_path, unique, [PY, "-c", FETCH + "import time; print('hanging', flush=True); time.sleep(600)"],
        build_timeout=1.5)
    assert time.monotonic() - start < 15
    assert request.session == "/libx/1.0/t/c/d/n/1/42"
    assert request.result.status is Status.ABNORMAL
    log = request.result.results[0].log
    assert "build timed out after 1.5 s" in log
    assert "hanging" in log  # the console tail
    assert headers[names.HEADER_AGENT] == f"agent-{unique}"
    assert lives[0].state is MachineState.DISCARDED
    assert lives[0].seconds_in(MachineState.RUNNING) >= 1.5


def test_machine_that_never_starts_its_worker_ends_abnormal_at_boot_timeout(tmp_path: Path, unique: str) -> None:
    start = time.monotonic()
    request, headers, lives = run_one(
        tmp_path, unique, [PY, "-c", "import time; print('stuck in boot', flush=True); time.sleep(600)"],
        boot_timeout=1.5)
    assert time.monotonic() - start < 15
    log = request.result.results[0].log
    assert request.result.status is Status.ABNORMAL
    assert "machine did not start its worker within boot_timeout (1.5 s)" in log
    assert "stuck in boot" in log
    # Not the package's fault: another machine may do better.
    assert "did not start its worker" in str(headers[names.HEADER_INFRA_FAILURE])
    assert lives[0].seconds_in(MachineState.RUNNING) == 0
    assert lives[0].state is MachineState.DISCARDED


def test_crashing_worker_ends_abnormal_with_signal(tmp_path: Path, unique: str) -> None:
    request, _, lives = run_one(
        tmp_path, unique,
        [PY, "-c", FETCH + "print('about to crash', flush=True); os.kill(os.getpid(), 9)"])
    assert request.result.status is Status.ABNORMAL
    log = request.result.results[0].log
    assert "worker killed by SIGKILL without a result" in log
    assert "about to crash" in log
    assert lives[0].failure is not None


def test_machine_dying_in_boot_ends_abnormal_at_once(tmp_path: Path, unique: str) -> None:
    start = time.monotonic()
    request, _, _ = run_one(tmp_path, unique, [PY, "-c", "print('kernel panic'); raise SystemExit(3)"])
    assert time.monotonic() - start < 10
    log = request.result.results[0].log
    assert "machine stopped before its worker started: worker exited with code 3" in log
    assert "kernel panic" in log


def test_worker_exiting_without_result(tmp_path: Path, unique: str) -> None:
    request, _, _ = run_one(tmp_path, unique, [PY, "-c", FETCH + "raise SystemExit(3)"])
    assert request.result.status is Status.ABNORMAL
    assert "worker exited with code 3 without a result" in request.result.results[0].log


def test_children_of_a_hanging_worker_are_killed(tmp_path: Path, unique: str) -> None:
    pidfile = tmp_path / "child.pid"
    script = (f"import subprocess,time; p=subprocess.Popen(['sleep','600']); "
              f"open({str(pidfile)!r},'w').write(str(p.pid)); time.sleep(600)")
    request, _, _ = run_one(tmp_path, unique, [PY, "-c", script], build_timeout=1.5)
    assert request.result.status is Status.ABNORMAL
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        # A zombie awaiting its reaper no longer runs: count it as gone.
        if "State:\tZ" in Path(f"/proc/{child}/status").read_text():
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists() or "State:\tZ" in Path(f"/proc/{child}/status").read_text()


@pytest.mark.parametrize("bad", ["bad name", "x/y"])
def test_machine_names_must_be_routing_keys(tmp_path: Path, bad: str) -> None:
    config = AgentConfig(name="a", machines=(MachineConfig("id1", bad, "s"),))
    with pytest.raises(ValueError, match="cannot be a routing key"):
        Agent(config, broker_url="memory://", data_dir=tmp_path)
