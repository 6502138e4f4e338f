"""Leak test for kvm machines: real VMs (QEMU through libvirtd), a real controller and agent as
separate processes on RabbitMQ, and random kills of the machine (QEMU SIGKILLed, the domain
destroyed) and of the agent (SIGKILL, then a restart that must reconcile). Afterwards every
build has its result in the store, and no domain, overlay, QEMU process or boot folder of
ours is left.

(The worker inside a VM cannot be reached from the host; killing the worker is exercised by
the container leak test and the process machine tests. To the agent, a VM whose worker dies
is a VM that powers off without a result, the same as a killed QEMU.)
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from bbot.agent.machines.base import agent_tag
from bbot.devfarm import DevFarm, git_daemon
from tests.conftest import RABBITMQ_URL, git_repo
from tests.images.image import ensure_image
from tests.machines.conftest_vm import SYSTEM_URI, libvirt_system

__all__ = ["libvirt_system"]

pytestmark = pytest.mark.slow

BUILDS = 10


@pytest.fixture
def trivial_git_url(tmp_path: Path) -> Iterator[str]:
    """A project whose build takes no time, so the test spends its minutes on boots and kills."""
    base = tmp_path / "git"
    git_repo(base / "trivial.git", {"Makefile": "all:\n\t@echo built\ncheck:\n\t@true\ninstall:\n\t@true\n"})
    with git_daemon(base) as url:
        yield f"{url}/trivial.git#main"


def our_domains(conn: Any, tag: str) -> list[Any]:
    return [d for d in conn.listAllDomains() if d.name().startswith(tag + "-")]


def qemu_pids(tag: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"qemu-system-x86_64 -name guest={tag}-"], capture_output=True,
                         text=True).stdout
    return [int(p) for p in out.split()]


def test_ten_vm_boots_with_random_kills_leave_nothing(libvirt_system: Any, trivial_git_url: str,
                                                      tmp_path: Path, unique: str) -> None:
    seed = int(os.environ.get("BBOT_LEAK_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    machine = f"linux_vm-{unique}"
    farm = DevFarm(
        tmp_path / "farm", RABBITMQ_URL, controller_name=f"leaks-{unique}",
        configurations=[{"name": "vm", "machine": machine, "target": "x86_64-linux-gnu"}],
        controller_settings={"lease_timeout": 600, "schedule_interval": 0.1, "max_attempts": 6},
        agent_settings={"heartbeat": 1.0, "boot_timeout": 120, "build_timeout": 300, "shutdown_grace": 2,
                        "reconcile_interval": 5},
    )
    agent_name = f"vmleak-{unique}"
    tag = agent_tag(agent_name)
    machines = [{"id": "vm1", "name": machine, "type": "kvm", "image": str(ensure_image()), "uri": SYSTEM_URI}]
    # Every kind of kill at least once, the rest at random.
    plan = ["agent", "qemu", "destroy"] + [rng.choice(["none", "none", "agent", "qemu", "destroy"])
                                           for _ in range(BUILDS - 3)]
    rng.shuffle(plan)
    done: list[str] = []
    try:
        farm.start_controller()
        agent = farm.add_agent(agent_name, machines)
        for _ in range(BUILDS):
            farm.submit(trivial_git_url)
        seen: set[str] = set()
        deadline = time.monotonic() + 900
        while farm.built_count() < BUILDS:
            assert time.monotonic() < deadline, f"stuck at {farm.counts()} after {done}:\n{agent.log_tail()}"
            domains = [d for d in our_domains(libvirt_system, tag) if d.name() not in seen]
            if not domains:
                time.sleep(0.2)
                continue
            domain = domains[0]
            seen.add(domain.name())
            action = plan[len(done)] if len(done) < len(plan) else "none"
            time.sleep(rng.uniform(0.5, 10.0))  # somewhere in boot or build
            if action == "agent":
                agent.kill()
                time.sleep(rng.uniform(0.0, 2.0))
                agent.start()  # a new agent of the same name: it must clear what the old one left
            elif action == "qemu":
                for pid in qemu_pids(domain.name()):
                    os.kill(pid, signal.SIGKILL)
            elif action == "destroy":
                try:
                    domain.destroy()
                except libvirt.libvirtError:
                    action += " (too late: it had stopped)"
            done.append(action)
        assert len(seen) >= BUILDS
        # Every build ended with a result in the store, whatever was killed.
        assert farm.counts() == {"built": BUILDS}, farm.counts()
        # And nothing of ours is left once the agent has settled.
        agent_data = tmp_path / "farm" / f"agent-{agent_name}" / "agent" / agent_name

        def leftovers() -> list[str]:
            found = [d.name() for d in our_domains(libvirt_system, tag)]
            found += [f"qemu pid {p}" for p in qemu_pids(tag)]
            found += [str(p) for p in agent_data.rglob("*.qcow2")]
            found += [str(p) for p in (agent_data / "boots").iterdir()]
            found += [str(p) for p in (agent_data / "tftp").iterdir()]
            return found

        end = time.monotonic() + 30
        while leftovers() and time.monotonic() < end:
            time.sleep(0.2)
        assert leftovers() == [], f"seed {seed}, kills {done}"
        print(f"kvm leak test: seed {seed}, {len(seen)} boots, kills {done}")
    finally:
        farm.stop()
        for domain in our_domains(libvirt_system, tag):  # never leave a VM running, even on failure
            domain.destroy()
