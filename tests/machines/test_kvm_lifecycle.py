"""kvm machines on libvirt's ``test:///default`` driver: the real libvirt API, no daemon, no guest.

Nothing runs inside these domains, so the test plays the guest's part where a path
needs one: it reads the boot's command line from the domain's XML, fetches the task
over the agent's real TFTP server, uploads a result, and powers the domain off or
destroys it, through libvirt, as a guest or a crash would.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from bbot.agent.lifecycle import MachineState
from bbot.agent.machines.base import BootSpec, agent_tag
from bbot.agent.machines.kvm import METADATA_NS, KvmMachine, domain_owner
from bbot.bus import names
from bbot.config import AgentConfig, ConfigError, MachineConfig, parse_config
from bbot.manifest import OperationResult, Result, Task
from bbot.manifest.status import Status
from bbot.tftp import RESULT_MANIFEST, TASK_MANIFEST, download, upload
from tests.machines.harness import result, running_agent, submit, wait_for

URI = "test:///default"


@pytest.fixture(scope="module")
def fake_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image directory as ops/images/build makes one; the disk is a real qcow2 (overlays
    are made with the real qemu-img), the kernel and initrd are never run by the test driver."""
    d = tmp_path_factory.mktemp("image")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d / "disk.qcow2"), "64M"], check=True)
    (d / "vmlinuz").write_bytes(b"not a kernel: the test driver runs nothing")
    (d / "initrd.img").write_bytes(b"07070100")
    (d / "machine.yaml").write_text(
        "disk: disk.qcow2\nkernel: vmlinuz\ninitrd: initrd.img\n"
        "cmdline: console=ttyS0 root=/dev/vda rw\nmemory: 512\ncpus: 1\n")
    return d


@pytest.fixture
def conn() -> Iterator[Any]:
    c = libvirt.open(URI)
    yield c
    c.close()


def machine(image: Path, unique: str, **options: object) -> MachineConfig:
    return MachineConfig(f"vm-{unique}", f"kvm-{unique}", "test-driver VM", type="kvm",
                         options={"image": str(image), "uri": URI, **options})


def agent_config(image: Path, unique: str, **settings: Any) -> AgentConfig:
    options = settings.pop("options", {})
    return AgentConfig(name=f"agent-{unique}", heartbeat=0.5, shutdown_grace=0.5,
                       machines=(machine(image, unique, **options),), **settings)


def task_for(unique: str) -> Task:
    return Task(name="libx", version="1.0", repository_url="http://127.0.0.1:9418/libx.git#main",
                machine=f"kvm-{unique}", target="x86_64-linux-gnu")


def our_domains(conn: Any, tag: str) -> list[Any]:
    return [d for d in conn.listAllDomains() if d.name().startswith(tag + "-")]


class FakeGuest:
    """Plays the guest of the one domain the agent boots: what a worker inside would do."""

    def __init__(self, conn: Any, tag: str) -> None:
        self.conn = conn
        self.tag = tag

    def domain(self) -> Any:
        return wait_for(lambda: next(iter(our_domains(self.conn, self.tag)), None), 10, "the agent's domain")

    def worker_args(self, domain: Any) -> dict[str, str]:
        cmdline = ET.fromstring(domain.XMLDesc()).findtext("os/cmdline") or ""
        return dict(re.findall(r"(bbot\.\w+)=(\S+)", cmdline))

    def fetch_task(self, tftp_port: int) -> tuple[Any, str, Task]:
        domain = self.domain()
        args = self.worker_args(domain)
        boot = args["bbot.dir"]
        # The guest reaches the host's loopback at 10.0.2.2; here, the test is on the host.
        assert args["bbot.tftp"] == f"10.0.2.2:{tftp_port}"
        task = Task.from_text(download("127.0.0.1", tftp_port, f"{boot}/{TASK_MANIFEST}"))
        return domain, boot, task


def test_config_problems_of_kvm_machines_are_reported_together(fake_image: Path, tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "machine.yaml").write_text("disk: missing.qcow2\nmemory: lots\ncolour: red\n")
    document = {"agent": {"machines": [
        {"id": "a", "name": "n", "type": "kvm"},
        {"id": "b", "name": "n", "type": "kvm", "image": str(tmp_path / "nowhere")},
        {"id": "c", "name": "n", "type": "kvm", "image": str(tmp_path / "bad"), "cpus": 0,
         "accel": "warp", "memroy": 1},
        {"id": "d", "name": "n", "type": "kvm", "image": str(fake_image)},
    ]}}
    with pytest.raises(ConfigError) as caught:
        parse_config(document, base=tmp_path)
    text = str(caught.value)
    assert "agent.machines[0].image: required for kvm machines" in text
    assert f"agent.machines[1].image: cannot read {tmp_path}/nowhere/machine.yaml" in text
    assert "ops/images/build" in text
    assert f"bad/machine.yaml: disk {tmp_path}/bad/missing.qcow2 is not a file" in text
    assert "bad/machine.yaml: memory must be a positive integer, got 'lots'" in text
    assert "bad/machine.yaml: unknown key 'colour'" in text
    assert "agent.machines[2].cpus: must be a positive integer" in text
    assert "agent.machines[2].accel: must be one of auto, kvm, tcg, got 'warp'" in text
    assert "agent.machines[2].memroy: unknown key" in text
    assert "agent.machines[3]" not in text  # the good one
    # With only the good machine, the configuration loads and keeps its options.
    good = parse_config({"agent": {"machines": [document["agent"]["machines"][3]]}}, base=tmp_path)
    assert good.agent.machines[0].options["image"] == str(fake_image)


def test_backend_lifecycle_overlay_domain_and_cleanup(fake_image: Path, tmp_path: Path, conn: Any,
                                                      unique: str) -> None:
    backend = KvmMachine()
    spec = BootSpec(f"b-{unique}", tmp_path / "boot", "127.0.0.1", 6969, machine=machine(fake_image, unique),
                    tag=agent_tag(f"a-{unique}"), label="libx/1.0 /session")
    spec.work_dir.mkdir()
    backend.create_snapshot(spec)
    info = subprocess.run(["qemu-img", "info", "--output=json", str(spec.work_dir / "overlay.qcow2")],
                          capture_output=True, text=True, check=True).stdout
    assert f'"backing-filename": "{fake_image}/disk.qcow2"' in info
    # The worker's code rides on the initrd: the image's own, then bbot's archive.
    initrd = (spec.work_dir / "initrd.img").read_bytes()
    assert initrd.startswith(b"07070100") and len(initrd) > 10_000
    backend.boot(spec)
    domain = conn.lookupByName(spec.resource_name)
    assert not domain.isPersistent()  # transient: nothing of it outlives the boot
    assert domain_owner(libvirt, domain) == (spec.tag, spec.boot_id)
    assert 'task="libx/1.0 /session"' in domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
    desc = ET.fromstring(domain.XMLDesc())
    assert desc.findtext("os/cmdline") == (f"console=ttyS0 root=/dev/vda rw bbot.tftp=10.0.2.2:6969 "
                                           f"bbot.dir={spec.boot_id}")
    assert desc.find("devices/interface").get("type") == "user"
    assert backend.poll(spec) is None
    backend.shutdown(spec, grace=1.0)
    assert spec.resource_name not in [d.name() for d in conn.listAllDomains()]
    exit_ = backend.poll(spec)
    assert exit_ is not None and exit_.description == "the machine powered off"
    backend.discard(spec)
    assert not spec.work_dir.exists()
    backend.discard(spec)  # idempotent


def test_normal_boot_through_the_agent(fake_image: Path, tmp_path: Path, conn: Any, unique: str) -> None:
    config = agent_config(fake_image, unique)
    guest = FakeGuest(conn, agent_tag(config.name))
    with running_agent(config, tmp_path) as (agent, lives):
        assert agent.tftp is not None
        reply = submit(task_for(unique), unique)
        domain, boot, task = guest.fetch_task(agent.tftp.port)
        # The task's loopback repository is rewritten to the address the guest reaches the host by.
        assert task.repository_url == "http://10.0.2.2:9418/libx.git#main"
        done = Result("libx", "1.0", Status.SUCCESS, [OperationResult("update", Status.SUCCESS, "built\n")])
        upload("127.0.0.1", agent.tftp.port, f"{boot}/{RESULT_MANIFEST}", done.to_text().encode())
        # The agent powers the machine off as soon as the result is in (the guest's own init
        # does too, after its upload; whichever comes first).
        with contextlib.suppress(libvirt.libvirtError):
            domain.shutdown()
        request, headers = result(reply, timeout=20)
        boots = list((tmp_path / "agent" / config.name / "boots").iterdir())
    assert request.result.status is Status.SUCCESS
    assert names.HEADER_INFRA_FAILURE not in headers
    assert lives[0].state is MachineState.DISCARDED
    assert [s.value for s, _ in lives[0].history] == ["snapshot", "booting", "running", "result", "shutdown",
                                                      "discarded"]
    assert our_domains(conn, guest.tag) == [] and boots == []


def test_boot_failure_when_libvirt_cannot_start_the_domain(fake_image: Path, tmp_path: Path,
                                                           unique: str) -> None:
    config = agent_config(fake_image, unique, options={"uri": f"test://{tmp_path}/no-such-host.xml"})
    with running_agent(config, tmp_path) as (_agent, lives):
        request, headers = result(submit(task_for(unique), unique), timeout=20)
    log = request.result.results[0].log
    assert request.result.status is Status.ABNORMAL
    assert "machine failed to boot: cannot connect to libvirt at test://" in log
    assert "cannot connect to libvirt" in str(headers[names.HEADER_INFRA_FAILURE])  # retried elsewhere
    assert lives[0].state is MachineState.DISCARDED
    assert list((tmp_path / "agent" / config.name / "boots").iterdir()) == []


def test_machine_that_hangs_in_boot(fake_image: Path, tmp_path: Path, conn: Any, unique: str) -> None:
    config = agent_config(fake_image, unique, boot_timeout=1.0)
    tag = agent_tag(config.name)
    with running_agent(config, tmp_path) as (_agent, lives):
        request, headers = result(submit(task_for(unique), unique), timeout=20)
    assert request.result.status is Status.ABNORMAL
    assert "machine did not start its worker within boot_timeout (1 s)" in request.result.results[0].log
    assert names.HEADER_INFRA_FAILURE in headers
    assert our_domains(conn, tag) == []
    assert lives[0].seconds_in(MachineState.RUNNING) == 0


def test_build_that_hangs_is_shut_down_at_build_timeout(fake_image: Path, tmp_path: Path, conn: Any,
                                                        unique: str) -> None:
    config = agent_config(fake_image, unique, build_timeout=1.0)
    guest = FakeGuest(conn, agent_tag(config.name))
    with running_agent(config, tmp_path) as (agent, _lives):
        assert agent.tftp is not None
        reply = submit(task_for(unique), unique)
        guest.fetch_task(agent.tftp.port)  # and then nothing: the build hangs
        request, headers = result(reply, timeout=20)
    assert request.result.status is Status.ABNORMAL
    assert "build timed out after 1 s; machine shut down" in request.result.results[0].log
    assert names.HEADER_INFRA_FAILURE not in headers  # the package's own result
    assert our_domains(conn, guest.tag) == []


def test_machine_that_crashes_mid_build(fake_image: Path, tmp_path: Path, conn: Any, unique: str) -> None:
    config = agent_config(fake_image, unique)
    guest = FakeGuest(conn, agent_tag(config.name))
    (fake_image / "console.note").write_text("")
    with running_agent(config, tmp_path) as (agent, _lives):
        assert agent.tftp is not None
        reply = submit(task_for(unique), unique)
        domain, boot, _ = guest.fetch_task(agent.tftp.port)
        console = tmp_path / "agent" / config.name / "boots" / boot / "console.log"
        console.write_text("[   12.5] Kernel panic - not syncing: Attempted to kill init!\n")
        domain.destroy()  # what a crash looks like from outside: the domain is gone
        request, headers = result(reply, timeout=20)
    log = request.result.results[0].log
    assert request.result.status is Status.ABNORMAL
    assert "the machine was destroyed without a result" in log
    assert "Kernel panic - not syncing" in log  # the console's tail
    assert "the machine was destroyed" in str(headers[names.HEADER_INFRA_FAILURE])


def test_agent_restart_removes_its_leftovers_and_nothing_else(fake_image: Path, tmp_path: Path, conn: Any,
                                                             unique: str) -> None:
    config = agent_config(fake_image, unique, reconcile_interval=1.0)
    tag = agent_tag(config.name)
    boots = tmp_path / "agent" / config.name / "boots"
    # What a killed agent leaves: running domains with their overlays, in its boot folders.
    crashed = KvmMachine()
    leftovers = []
    for i in range(3):
        spec = BootSpec(f"old{i}-{unique}", boots / f"old{i}-{unique}", "127.0.0.1", 1,
                        machine=machine(fake_image, unique), tag=tag)
        spec.work_dir.mkdir(parents=True)
        crashed.create_snapshot(spec)
        crashed.boot(spec)
        leftovers.append(spec)
    # Someone else's: another agent's domain, one named like ours without our metadata, the
    # driver's own 'test' domain.
    other = BootSpec(f"x-{unique}", tmp_path / "other", "127.0.0.1", 1, machine=machine(fake_image, unique),
                     tag=agent_tag(f"other-{unique}"))
    other.work_dir.mkdir()
    crashed.create_snapshot(other)
    crashed.boot(other)
    lookalike = conn.createXML(f"<domain type='test'><name>{tag}-lookalike</name><memory>65536</memory>"
                               "<os><type>hvm</type></os></domain>", 0)
    try:
        with running_agent(config, tmp_path) as (agent, _lives):
            names_now = {d.name() for d in conn.listAllDomains()}
            assert not any(spec.resource_name in names_now for spec in leftovers)
            assert {other.resource_name, f"{tag}-lookalike", "test"} <= names_now
            assert list(boots.iterdir()) == []
            # While it runs, leftovers are found again every reconcile_interval.
            late = BootSpec(f"late-{unique}", boots / f"late-{unique}", "127.0.0.1", 1,
                            machine=machine(fake_image, unique), tag=tag)
            late.work_dir.mkdir(parents=True)
            crashed.create_snapshot(late)
            crashed.boot(late)
            wait_for(lambda: late.resource_name not in {d.name() for d in conn.listAllDomains()}, 10,
                     "the periodic reconcile to remove a leftover domain")
            wait_for(lambda: not late.work_dir.exists(), 10, "the leftover overlay's folder to go")
            assert agent.live_boot_ids() == set()
        assert other.resource_name in {d.name() for d in conn.listAllDomains()}
    finally:
        crashed.shutdown(other, 0)
        crashed.discard(other)
        lookalike.destroy()


def test_reconcile_spares_a_live_boot(fake_image: Path, tmp_path: Path, conn: Any, unique: str) -> None:
    config = agent_config(fake_image, unique, boot_timeout=30.0)
    tag = agent_tag(config.name)
    with running_agent(config, tmp_path) as (agent, _lives):
        submit(task_for(unique), unique)
        domain = FakeGuest(conn, tag).domain()
        removed = agent.reconcile()
        assert removed == []
        assert domain.isActive()
        # Stopping the agent interrupts the boot: its task goes back, its domain goes away.
        stopper = threading.Thread(target=agent.stop)
        stopper.start()
        stopper.join(30)
    assert our_domains(conn, tag) == []


def test_machine_options_override_the_images_memory_and_cpus(fake_image: Path, tmp_path: Path, conn: Any,
                                                            unique: str) -> None:
    backend = KvmMachine()
    spec = BootSpec(f"m-{unique}", tmp_path / "boot", "127.0.0.1", 69,
                    machine=machine(fake_image, unique, memory=768, cpus=2), tag=agent_tag(f"m-{unique}"))
    spec.work_dir.mkdir()
    backend.create_snapshot(spec)
    backend.boot(spec)
    try:
        desc = ET.fromstring(conn.lookupByName(spec.resource_name).XMLDesc())
        assert desc.findtext("memory") == str(768 * 1024)  # KiB
        assert desc.findtext("vcpu") == "2"
    finally:
        backend.shutdown(spec, 0)
        backend.discard(spec)


def test_the_accelerator_is_chosen_and_reported(tmp_path: Path) -> None:
    from tests.images.image import ensure_image

    image = str(ensure_image())
    auto = KvmMachine()
    auto.attach([MachineConfig("a", "n", "s", type="kvm", options={"image": image})])
    # Whatever this host can do, the choice comes with its reason: KVM only when a guest
    # really reached userspace under it, TCG otherwise (here: a nested /dev/kvm that cannot).
    text = auto.describe()
    assert re.search(r"kvm machines through libvirt: (kvm \(a KVM guest reached userspace\)|tcg \(.+\))", text), text
    forced = KvmMachine()
    forced.attach([MachineConfig("b", "n", "s", type="kvm", options={"image": image, "accel": "tcg"})])
    assert forced.describe() == "kvm machines through libvirt: tcg (set by the machine's accel option)"
