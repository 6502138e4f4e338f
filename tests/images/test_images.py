"""ops/images/build for real: the Debian 12 image is built (or found cached), then booted under bare QEMU.

Boots use TCG (the KVM of these machines cannot run stock kernels), direct kernel boot, a qcow2
overlay per boot and QEMU's user-mode network, whose 10.0.2.2 is this host's loopback.
"""

from __future__ import annotations

import gzip
import importlib.machinery
import importlib.util
import io
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bbot import devfarm
from bbot.agent.machines.cpio import write_boot_initrd
from bbot.agent.machines.workercode import package_dirs, worker_archive
from bbot.manifest import Result, Task
from bbot.manifest.status import Status
from bbot.tftp import RESULT_MANIFEST, TASK_MANIFEST, TftpService
from tests.conftest import SAMPLE, git_repo
from tests.images.image import BUILD_COMMAND, ensure_image, run_build

START_LINE = "bbot-init: starting worker"
EXIT_LINE = "bbot-init: worker exited"
ERROR_LINE = "bbot-init: error:"
# The guest sees this host's loopback at this address (QEMU user-mode networking).
GUEST_HOST_ADDRESS = "10.0.2.2"


@pytest.fixture(scope="module")
def image() -> Path:
    return ensure_image()


@pytest.fixture(scope="module")
def machine(image: Path) -> dict[str, object]:
    loaded = yaml.safe_load((image / "machine.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def read_cpio(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, contents) of every newc archive in ``data`` (concatenated, maybe gzip'd)."""
    entries: dict[str, tuple[int, bytes]] = {}
    at = 0
    while at < len(data):
        if data[at] == 0:
            at += 1
            continue
        if data[at:at + 2] == b"\x1f\x8b":
            stream = gzip.GzipFile(fileobj=io.BytesIO(data[at:]))
            entries.update(read_cpio(stream.read()))
            break  # a gzip'd archive is last in what the build makes
        assert data[at:at + 6] == b"070701", f"no newc header at offset {at}"
        fields = [int(data[at + 6 + 8 * i:at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_at = at + 110
        name = data[name_at:name_at + name_size - 1].decode()
        body_at = name_at + name_size + (-(110 + name_size) % 4)
        body = data[body_at:body_at + size]
        at = body_at + size + (-size % 4)
        if name == "TRAILER!!!":
            continue
        entries[name] = (mode, body)
    return entries


def test_second_run_is_instant_and_prints_the_same_path(image: Path) -> None:
    started = time.monotonic()
    again, stderr = run_build(timeout=60)
    elapsed = time.monotonic() - started
    assert again == image
    assert elapsed < 5, f"a cached image took {elapsed:.1f} s to find"
    assert "debootstrap" not in stderr
    link = image.parent / "debian-12"
    assert link.is_symlink() and link.resolve() == image.resolve()


def test_image_dir_has_what_machine_yaml_names(image: Path, machine: dict[str, object]) -> None:
    for field in ("disk", "kernel", "initrd"):
        assert (image / str(machine[field])).is_file(), field
    assert (image / str(machine["rootfs"])).is_dir()
    cmdline = str(machine["cmdline"])
    assert "console=ttyS0" in cmdline and "panic=-1" in cmdline
    assert machine["memory"] == 1024 and machine["cpus"] == 1
    info = subprocess.run(["qemu-img", "info", "--output=json", str(image / str(machine["disk"]))],
                          capture_output=True, text=True, check=True).stdout
    assert '"format": "qcow2"' in info

    rootfs = image / str(machine["rootfs"])
    init = rootfs / "sbin" / "bbot-init"
    assert init.is_file() and os.access(init, os.X_OK)
    for tool in ("python3", "git", "gcc", "g++", "make", "cmake", "ip"):
        assert (rootfs / "usr" / "bin" / tool).exists() or (rootfs / "usr" / "sbin" / tool).exists(), tool
    assert not list((rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"))

    packages = (image / "packages.txt").read_text().splitlines()
    assert packages == sorted(packages)
    names = {line.split("=", 1)[0] for line in packages}
    assert {"python3", "git", "gcc", "g++", "make", "cmake", "ca-certificates", "iproute2", "procps"} <= names
    assert "systemd" not in names


def test_initrd_holds_busybox_init_and_the_virtio_and_ext4_modules(image: Path) -> None:
    entries = read_cpio((image / "initrd.img").read_bytes())
    assert entries["init"][0] & 0o111 and entries["init"][1].startswith(b"#!/bin/busybox sh")
    assert entries["bin/busybox"][1][:4] == b"\x7fELF"
    assert "dev/console" in entries
    order = entries["lib/modules/load-order"][1].decode().split()
    for module in ("virtio_pci.ko", "virtio_blk.ko", "virtio_net.ko", "ext4.ko", "crc32c_generic.ko"):
        assert module in order
        assert f"lib/modules/{module}" in entries
    # Dependencies before the modules that need them.
    assert order.index("jbd2.ko") < order.index("ext4.ko")
    assert order.index("failover.ko") < order.index("net_failover.ko") < order.index("virtio_net.ko")


def test_worker_cpio_is_reproducible_and_holds_bbot_and_tftpy(tmp_path: Path) -> None:
    first, second = io.BytesIO(worker_archive()), io.BytesIO(worker_archive())
    assert first.getvalue() == second.getvalue()
    assert len(first.getvalue()) % 512 == 0
    entries = read_cpio(first.getvalue())
    for name in ("bbot-worker", "bbot-worker/bbot/worker/cli.py", "bbot-worker/tftpy/__init__.py"):
        assert name in entries, name
    assert not any(name.endswith(".pyc") and "/__pycache__/" not in name for name in entries)


def load_build_script() -> object:
    loader = importlib.machinery.SourceFileLoader("ops_images_build", str(BUILD_COMMAND))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_cache_key_follows_the_inputs() -> None:
    build = load_build_script()
    key = build.image_key("http://deb.debian.org/debian")  # type: ignore[attr-defined]
    assert key == build.image_key("http://deb.debian.org/debian")  # type: ignore[attr-defined]
    assert key != build.image_key("http://mirror.example/debian")  # type: ignore[attr-defined]
    inputs = {path.name for path in build.input_files()}  # type: ignore[attr-defined]
    assert {"build", "packages", "bbot-init", "initramfs-init", "cpio.py"} <= inputs
    assert "README.md" not in inputs


@dataclass
class Boot:
    console: str
    returncode: int
    seconds_to_start: float | None  # to START_LINE
    seconds: float  # to QEMU's exit


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def boot(image: Path, machine: dict[str, object], work: Path, extra_cmdline: str = "",
         qemu_args: tuple[str, ...] = (), deadline: float = 120.0, blank_disk: bool = False) -> Boot:
    """Boot the image once with the worker code appended; wait until QEMU exits by itself."""
    work.mkdir(parents=True, exist_ok=True)
    overlay = work / "overlay.qcow2"
    if blank_disk:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(overlay), "64M"], check=True)
    else:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                        str(image / str(machine["disk"])), str(overlay)], check=True)
    initrd = work / "initrd.img"
    write_boot_initrd(image / str(machine["initrd"]), initrd, package_dirs())
    console_log = work / "console.log"
    command = [
        "qemu-system-x86_64", "-accel", "tcg", "-m", str(machine["memory"]), "-smp", str(machine["cpus"]),
        "-no-reboot", "-display", "none", "-monitor", "none", "-serial", f"file:{console_log}",
        "-kernel", str(image / str(machine["kernel"])), "-initrd", str(initrd),
        "-append", f"{machine['cmdline']} {extra_cmdline}".strip(),
        "-drive", f"file={overlay},if=virtio,format=qcow2",
        "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0", *qemu_args,
    ]
    started = time.monotonic()
    seconds_to_start = None
    qemu = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        while qemu.poll() is None:
            if time.monotonic() - started > deadline:
                pytest.fail(f"QEMU still runs after {deadline:.0f} s; console:\n{console_text(console_log)}")
            if seconds_to_start is None and START_LINE in console_text(console_log):
                seconds_to_start = time.monotonic() - started
            time.sleep(0.1)
        seconds = time.monotonic() - started
    finally:
        if qemu.poll() is None:
            qemu.kill()
        qemu.wait()
    assert qemu.stderr is not None
    errors = qemu.stderr.read().decode(errors="replace")
    assert qemu.returncode == 0, f"QEMU exit {qemu.returncode}: {errors}"
    console = console_text(console_log)
    if seconds_to_start is None and START_LINE in console:
        seconds_to_start = seconds
    print(f"boot: {START_LINE!r} after {seconds_to_start} s, QEMU exited after {seconds:.1f} s")
    return Boot(console, qemu.returncode, seconds_to_start, seconds)


def console_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_boot_reaches_the_worker_and_powers_off(image: Path, machine: dict[str, object],
                                                 tmp_path: Path) -> None:
    # Nothing listens on the port: the worker cannot get its task, says so, and the machine stops.
    port = free_port(socket.SOCK_DGRAM)
    result = boot(image, machine, tmp_path, f"bbot.tftp={GUEST_HOST_ADDRESS}:{port} bbot.dir=boot-1")
    assert START_LINE in result.console, result.console
    assert "bbot-initramfs: error" not in result.console
    after = result.console.split(START_LINE, 1)[1]
    assert f"{EXIT_LINE} 2" in after, result.console  # EXIT_NO_TASK
    assert "cannot get the task" in after


def test_boot_without_the_keys_says_what_is_missing(image: Path, machine: dict[str, object],
                                                    tmp_path: Path) -> None:
    result = boot(image, machine, tmp_path)
    assert f"{ERROR_LINE} no bbot.tftp=HOST:PORT" in result.console, result.console
    assert START_LINE not in result.console


def test_initramfs_reports_a_root_disk_it_cannot_mount_and_powers_off(
        image: Path, machine: dict[str, object], tmp_path: Path) -> None:
    result = boot(image, machine, tmp_path, blank_disk=True)
    assert "bbot-initramfs: error: cannot mount /dev/vda (ext4) on /newroot" in result.console, result.console
    assert "bbot-init:" not in result.console


def test_boot_takes_the_keys_from_smbios_oem_strings(image: Path, machine: dict[str, object],
                                                     tmp_path: Path) -> None:
    # Where no kernel command line of ours exists (firmware boots), the keys come as OEM strings.
    port = free_port(socket.SOCK_DGRAM)
    smbios = f"type=11,value=bbot.tftp={GUEST_HOST_ADDRESS}:{port},value=bbot.dir=boot-smbios"
    result = boot(image, machine, tmp_path, qemu_args=("-smbios", smbios))
    assert START_LINE in result.console, result.console
    assert f"TFTP download of 'boot-smbios/{TASK_MANIFEST}' from {GUEST_HOST_ADDRESS}:{port}" in result.console


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A git daemon on 127.0.0.1 serving tmp_path/git (a test-only stand-in for a git host)."""
    base = tmp_path / "git"
    base.mkdir()
    with devfarm.git_daemon(base) as url:
        yield int(url.rsplit(":", 1)[1]), base


def test_worker_in_the_machine_builds_a_task_from_tftp(image: Path, machine: dict[str, object],
                                                       tmp_path: Path, git_daemon: tuple[int, Path]) -> None:
    git_port, git_base = git_daemon
    git_repo(git_base / "libhello.git", SAMPLE)
    tftp_root = tmp_path / "tftp"
    (tftp_root / "boot-1").mkdir(parents=True)
    task = Task(name="libhello", version="1.0.0", machine="linux_debian_12-gcc_12", target="x86_64-linux-gnu",
                repository_url=f"git://{GUEST_HOST_ADDRESS}:{git_port}/libhello.git")
    (tftp_root / "boot-1" / TASK_MANIFEST).write_text(task.to_text())
    service = TftpService(tftp_root)
    service.start()
    try:
        service.allow("boot-1")
        result = boot(image, machine, tmp_path / "machine",
                      f"bbot.tftp={GUEST_HOST_ADDRESS}:{service.port} bbot.dir=boot-1", deadline=600)
    finally:
        service.stop()
    assert f"{EXIT_LINE} 0" in result.console, result.console
    uploaded = Result.from_text((tftp_root / "boot-1" / RESULT_MANIFEST).read_bytes())
    assert uploaded.status == Status.SUCCESS, result.console
    assert {r.operation for r in uploaded.results} >= {"configure", "update", "test"}
    shutil.rmtree(tftp_root)
