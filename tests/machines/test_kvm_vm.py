"""A real VM: the agent boots the machine image under QEMU through libvirtd (TCG here, KVM
where the host really has it), the worker inside fetches its task over TFTP, clones the
sample over the network, builds and tests it, and uploads the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bbot.agent.lifecycle import MachineState
from bbot.agent.machines.base import agent_tag
from bbot.bus import names
from bbot.config import AgentConfig, MachineConfig
from bbot.manifest import Task
from bbot.manifest.status import Status
from tests.images.image import ensure_image
from tests.machines.conftest_vm import SYSTEM_URI, boots_left, libvirt_system, sample_git_url
from tests.machines.harness import result, running_agent, submit

__all__ = ["libvirt_system", "sample_git_url"]  # fixtures, used by name

pytestmark = pytest.mark.slow


def vm_config(unique: str, **settings: Any) -> AgentConfig:
    options = {"image": str(ensure_image()), "uri": SYSTEM_URI, **settings.pop("options", {})}
    return AgentConfig(
        name=f"vm-{unique}", heartbeat=1.0, shutdown_grace=5.0,
        boot_timeout=settings.pop("boot_timeout", 240.0), build_timeout=settings.pop("build_timeout", 900.0),
        machines=(MachineConfig(f"vm-{unique}", f"linux_debian_12-{unique}", "Debian 12 VM", type="kvm",
                                options=options),),
        **settings)


def test_the_sample_builds_in_a_real_vm(libvirt_system: Any, sample_git_url: str, tmp_path: Path,
                                        unique: str) -> None:
    config = vm_config(unique)
    machine = config.machines[0].name
    with running_agent(config, tmp_path) as (agent, lives):
        described = [b.describe() for b in agent.backends.values()]
        task = Task(name="libhello", version="1.0.0", repository_url=sample_git_url, machine=machine,
                    target="x86_64-linux-gnu")
        request, headers = result(submit(task, unique), timeout=1200)
    console = "\n".join(r.log for r in request.result.results)
    assert request.result.status is Status.SUCCESS, console
    steps = [r.operation for r in request.result.results]
    assert "update" in steps and "test" in steps, steps
    # The worker cloned through the guest's gateway, from the rewritten URL.
    assert "git://10.0.2.2:" in console
    assert names.HEADER_INFRA_FAILURE not in headers
    life = lives[0]
    assert [s for s, _ in life.history][-1] is MachineState.DISCARDED
    assert life.seconds_in(MachineState.BOOTING) > 0.5 and life.seconds_in(MachineState.RUNNING) > 0.5
    assert "tcg" in described[0] or "kvm" in described[0]
    # Nothing of the boot is left: no domain, no overlay.
    tag = agent_tag(config.name)
    assert [d.name() for d in libvirt_system.listAllDomains() if d.name().startswith(tag)] == []
    assert boots_left(tmp_path, config.name) == []


def test_a_vm_that_dies_in_boot_ends_abnormal_with_its_console(libvirt_system: Any, tmp_path: Path,
                                                               unique: str) -> None:
    # A kernel command line that sends init nowhere: the kernel panics, panic=-1 reboots, and
    # on_reboot=destroy ends the domain. The agent must say so, with the console's tail.
    image = ensure_image()
    bad = tmp_path / "image"
    bad.mkdir()
    for name in ("disk.qcow2", "vmlinuz", "initrd.img"):
        (bad / name).symlink_to(image / name)
    (bad / "machine.yaml").write_text(
        "disk: disk.qcow2\nkernel: vmlinuz\ninitrd: initrd.img\nmemory: 512\ncpus: 1\n"
        "cmdline: console=ttyS0 quiet panic=-1 rdinit=/no-such-init init=/no-such-init\n")
    config = vm_config(unique, options={"image": str(bad)})
    with running_agent(config, tmp_path / "data") as (_agent, _lives):
        task = Task(name="libhello", version="1.0.0", repository_url="git://127.0.0.1:9/x.git",
                    machine=config.machines[0].name, target="x86_64-linux-gnu")
        request, headers = result(submit(task, unique), timeout=600)
    log = request.result.results[0].log
    assert request.result.status is Status.ABNORMAL
    assert "machine stopped before its worker started" in log
    assert "Kernel panic" in log  # from the serial console
    assert "machine stopped before its worker started" in str(headers[names.HEADER_INFRA_FAILURE])
    assert boots_left(tmp_path / "data", config.name) == []
