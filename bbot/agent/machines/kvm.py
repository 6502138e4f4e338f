"""``kvm`` machines: virtual machines through libvirt, each boot on a throw-away qcow2 overlay.

A machine is an image directory (``ops/images/build`` makes one) whose
``machine.yaml`` names the base disk, and the kernel, initrd and command line
for a direct kernel boot (or none of them, for a firmware boot from the disk).
Per boot the backend:

1. creates a qcow2 overlay on the base disk in the boot's folder (the base is
   never written: every build starts from the same state);
2. starts a *transient* libvirt domain named ``<agent tag>-<boot id>``, with
   the agent's tag, the boot and the task in its ``<metadata>``; user-mode
   networking, so the guest reaches the agent host's loopback (its TFTP
   server) at 10.0.2.2 without any bridge; the serial console goes to a file;
3. tells the worker where its task is on the kernel command line
   (``bbot.tftp=10.0.2.2:PORT bbot.dir=BOOT``), or, for a firmware boot, in
   SMBIOS OEM strings with the same text;
4. appends the agent's own worker code to the initrd (see workercode.py);
5. at the end shuts the guest down (ACPI, then destroy after the grace
   period) and deletes the overlay.

KVM when the host really has it, TCG (QEMU's emulator) otherwise: ``accel:
auto`` boots the image's kernel under KVM once and keeps KVM only if it
reaches userspace (a nested ``/dev/kvm`` may exist and still hang a guest).
The choice is logged at start and shown in ``describe()``.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import yaml

from bbot.agent.machines.base import (
    CMDLINE_DIR,
    CMDLINE_TFTP,
    GUEST_HOST_ADDRESS,
    BootSpec,
    Exit,
    MachineBackend,
    Problem,
    file_tail,
)
from bbot.agent.machines.workercode import initrd_with_worker
from bbot.config import MachineConfig

log = logging.getLogger(__name__)

IMAGE_MANIFEST = "machine.yaml"
IMAGE_KEYS = ("disk", "kernel", "initrd", "cmdline", "memory", "cpus", "rootfs")
OPTIONS = ("image", "memory", "cpus", "accel", "uri")
PATH_OPTIONS = ("image",)  # relative to the configuration file's folder
ACCELS = ("auto", "kvm", "tcg")
DEFAULT_URI = "qemu:///system"
OVERLAY = "overlay.qcow2"
INITRD = "initrd.img"
CONSOLE_LOG = "console.log"
# The namespace of our <metadata> element: how reconcile knows a domain is ours.
METADATA_NS = "https://bbot.build2.invalid/xmlns/machine/1"
METADATA_PREFIX = "bbot"
# How long an ``accel: auto`` probe waits for the kernel to reach userspace under KVM
# (about 1 s with real KVM; a nested /dev/kvm that cannot run the guest hangs instead).
KVM_PROBE_SECONDS = 20.0
KVM_PROBE_MARKER = b"Run /init as init process"
EVENT_WAIT = 1.0  # seconds a vanished domain's lifecycle event may take to arrive


@dataclass(frozen=True)
class MachineImage:
    """An image directory's ``machine.yaml``, paths made absolute."""

    directory: Path
    disk: Path
    kernel: Path | None
    initrd: Path | None
    cmdline: str
    memory: int  # MiB
    cpus: int


def load_image(directory: Path) -> tuple[MachineImage | None, list[str]]:
    """Read ``<directory>/machine.yaml``; (None, problems) when it is unusable."""
    manifest = directory / IMAGE_MANIFEST
    fix = "build one with ops/images/build, or name an image directory that has one"
    try:
        with open(manifest, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except OSError as e:
        return None, [f"cannot read {manifest}: {e.strerror}; {fix}"]
    except yaml.YAMLError as e:
        return None, [f"{manifest} is not valid YAML: {e}"]
    if not isinstance(data, dict):
        return None, [f"{manifest}: expected a mapping of {', '.join(IMAGE_KEYS)}"]
    problems = [f"{manifest}: unknown key '{k}'; allowed: {', '.join(IMAGE_KEYS)}"
                for k in data if k not in IMAGE_KEYS]

    def path(key: str, required: bool) -> Path | None:
        value = data.get(key)
        if value is None:
            if required:
                problems.append(f"{manifest}: '{key}' is required")
            return None
        p = directory / str(value)
        if not p.is_file():
            problems.append(f"{manifest}: {key} {p} is not a file")
        return p

    def count(key: str, default: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{manifest}: {key} must be a positive integer, got {value!r}")
            return default
        return value

    disk = path("disk", True)
    kernel = path("kernel", False)
    initrd = path("initrd", False)
    if initrd is not None and kernel is None:
        problems.append(f"{manifest}: an initrd needs a kernel (direct kernel boot); remove it or add kernel")
    image = MachineImage(directory, disk or directory, kernel, initrd, str(data.get("cmdline") or ""),
                         count("memory", 1024), count("cpus", 1))
    return (None if problems else image), problems


def check_options(where: str, options: Mapping[str, Any], problem: Problem, base: Path) -> None:
    for key in options:
        if key not in OPTIONS:
            problem(f"{where}.{key}", f"unknown key; allowed for kvm machines: id, name, summary, type, "
                                      f"{', '.join(OPTIONS)}")
    image = options.get("image")
    if not isinstance(image, str):
        problem(f"{where}.image", "required for kvm machines: an image directory holding machine.yaml "
                                  "(ops/images/build makes one)")
    else:
        for what in load_image(base / image)[1]:
            problem(f"{where}.image", what)
    for key in ("memory", "cpus"):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            problem(f"{where}.{key}", f"must be a positive integer (memory in MiB), got {value!r}")
    if options.get("accel", "auto") not in ACCELS:
        problem(f"{where}.accel", f"must be one of {', '.join(ACCELS)}, got {options.get('accel')!r}")
    if not isinstance(options.get("uri", DEFAULT_URI), str):
        problem(f"{where}.uri", f"must be a libvirt URI such as {DEFAULT_URI}")


def image_of(machine: MachineConfig) -> MachineImage:
    """The machine's image, by its real folder: when the configured path is a link that a
    rebuild moves (ops/images/build's ``debian-12``), boots already running keep their own."""
    image, problems = load_image(Path(str(machine.options["image"])).resolve())
    if image is None:
        raise RuntimeError("; ".join(problems))
    return image


# -- libvirt: one event loop per process, one connection per URI ---------------------------------

_libvirt_lock = threading.Lock()
_event_loop_started = False


def _libvirt() -> Any:
    """The libvirt module, with its event loop running (lifecycle events say why a domain
    stopped: powered off, destroyed, crashed)."""
    global _event_loop_started
    import libvirt

    with _libvirt_lock:
        if not _event_loop_started:
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed
            libvirt.virEventRegisterDefaultImpl()

            def run() -> None:
                while True:
                    libvirt.virEventRunDefaultImpl()

            threading.Thread(target=run, name="libvirt-events", daemon=True).start()
            _event_loop_started = True
    return libvirt


def domain_type(uri: str, accel: str) -> str:
    if uri.startswith("test:"):
        return "test"  # libvirt's test driver: the real API, nothing runs
    return "kvm" if accel == "kvm" else "qemu"


def probe_kvm(kernel: Path, initrd: Path | None, qemu: str = "qemu-system-x86_64") -> tuple[bool, str]:
    """Does this host really run guests under KVM? Boot ``kernel`` under KVM until it
    reaches userspace, or give up after KVM_PROBE_SECONDS. (True or False, and why.)"""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "no usable /dev/kvm"
    if shutil.which(qemu) is None:
        return False, f"{qemu} is not installed"
    with tempfile.TemporaryDirectory(prefix="bbot-kvm-probe-") as tmp:
        console = Path(tmp) / CONSOLE_LOG
        argv = [qemu, "-accel", "kvm", "-cpu", "host", "-m", "256", "-smp", "1", "-nodefaults",
                "-display", "none", "-no-reboot", "-kernel", str(kernel),
                "-append", "console=ttyS0 loglevel=7 panic=-1", "-serial", f"file:{console}"]
        if initrd is not None:
            argv += ["-initrd", str(initrd)]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + KVM_PROBE_SECONDS
        try:
            while time.monotonic() < deadline:
                if console.exists() and KVM_PROBE_MARKER in console.read_bytes():
                    return True, "a KVM guest reached userspace"
                if proc.poll() is not None:
                    error = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
                    last = error.splitlines()[-1] if error else f"exit code {proc.returncode}"
                    return False, f"QEMU with KVM failed: {last}"
                time.sleep(0.1)
            return False, f"a KVM guest did not reach userspace in {KVM_PROBE_SECONDS:g} s"
        finally:
            proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()


def _warn_if_kvm_device_is_private() -> None:
    """libvirt checks /dev/kvm as its QEMU user; without access it takes its cached QEMU
    capabilities for stale and probes QEMU again at every domain start (35 s per boot on
    our hosts). udev normally makes the device group kvm, mode 0660; say so when it did not."""
    try:
        st = os.stat("/dev/kvm")
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        return
    if st.st_gid != kvm_gid or st.st_mode & 0o060 != 0o060:
        log.warning("kvm: /dev/kvm is not group kvm with mode 0660, so libvirt probes QEMU again at "
                    "every boot (tens of seconds each); fix: chgrp kvm /dev/kvm && chmod 660 /dev/kvm "
                    "(what Debian's udev rule does)")


class KvmMachine(MachineBackend):
    type_name = "kvm"
    guest_host_address = GUEST_HOST_ADDRESS

    def __init__(self) -> None:
        self._connections: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._probes: dict[Path, tuple[str, str]] = {}  # kernel -> (accel, why) of an auto probe
        self._accel: dict[str, tuple[str, str]] = {}  # machine id -> (accel, why), for describe()
        self._stopped: dict[str, tuple[int, int]] = {}  # domain name -> last lifecycle event
        self._event_arrived = threading.Condition()
        self._uris: set[str] = set()
        self._boot_images: dict[str, MachineImage] = {}  # boot id -> its image, from create_snapshot

    # -- set-up ---------------------------------------------------------------------------------

    def attach(self, machines: list[MachineConfig]) -> None:
        _warn_if_kvm_device_is_private()
        for machine in machines:
            self._uris.add(self._uri(machine))
            if self._uri(machine).startswith("test:"):
                continue
            image = image_of(machine)
            accel = self._choose_accel(machine, image)
            log.info("kvm machine %s (%s): %s, %s", machine.id, image.directory, *accel)

    def describe(self) -> str:
        accels = sorted({f"{a} ({why})" for a, why in self._accel.values()})
        return "kvm machines through libvirt: " + ("; ".join(accels) or "accelerator chosen at first boot")

    @staticmethod
    def _uri(machine: MachineConfig) -> str:
        return str(machine.options.get("uri", DEFAULT_URI))

    def _choose_accel(self, machine: MachineConfig, image: MachineImage) -> tuple[str, str]:
        """(accelerator, why) for a machine; probed once per kernel, remembered per machine."""
        wanted = str(machine.options.get("accel", "auto"))
        with self._lock:
            if wanted != "auto":
                choice = (wanted, "set by the machine's accel option")
            elif image.kernel is None:
                choice = ("tcg", "firmware boot: KVM is not probed, set accel: kvm to use it")
            else:
                if image.kernel not in self._probes:
                    works, why = probe_kvm(image.kernel, image.initrd)
                    self._probes[image.kernel] = ("kvm", why) if works else ("tcg", why)
                choice = self._probes[image.kernel]
            self._accel[machine.id] = choice
            return choice

    def _connection(self, uri: str) -> Any:
        libvirt = _libvirt()
        with self._lock:
            conn = self._connections.get(uri)
            if conn is not None and conn.isAlive():
                return conn
            try:
                conn = libvirt.open(uri)
            except libvirt.libvirtError as e:
                raise RuntimeError(f"cannot connect to libvirt at {uri}: {e}; is libvirtd running?") from e
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None)
            self._connections[uri] = conn
            return conn

    def _on_event(self, _conn: Any, domain: Any, event: int, detail: int, _opaque: Any) -> None:
        libvirt = _libvirt()
        if event in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_CRASHED):
            with self._event_arrived:
                self._stopped[domain.name()] = (event, detail)
                self._event_arrived.notify_all()

    def _domain(self, spec: BootSpec) -> Any | None:
        libvirt = _libvirt()
        assert spec.machine is not None
        try:
            return self._connection(self._uri(spec.machine)).lookupByName(spec.resource_name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    # -- the lifecycle ---------------------------------------------------------------------------

    def create_snapshot(self, spec: BootSpec) -> None:
        assert spec.machine is not None
        # Read once per boot: the overlay, the kernel and the initrd all come from this image.
        image = self._boot_images[spec.boot_id] = image_of(spec.machine)
        overlay = spec.work_dir / OVERLAY
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                        "-b", str(image.disk), str(overlay)],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        if image.initrd is not None:
            (spec.work_dir / INITRD).write_bytes(initrd_with_worker(image.initrd))

    def boot(self, spec: BootSpec) -> None:
        assert spec.machine is not None
        uri = self._uri(spec.machine)
        self._uris.add(uri)
        image = self._boot_images[spec.boot_id]
        accel = "tcg" if uri.startswith("test:") else self._choose_accel(spec.machine, image)[0]
        xml = domain_xml(spec, image, domain_type(uri, accel))
        (spec.work_dir / "domain.xml").write_text(xml, encoding="utf-8")  # for people debugging a boot
        self._stopped.pop(spec.resource_name, None)
        libvirt = _libvirt()
        try:
            self._connection(uri).createXML(xml, 0)
        except libvirt.libvirtError as e:
            raise RuntimeError(f"libvirt could not start {spec.resource_name}: {e}") from e

    def poll(self, spec: BootSpec) -> Exit | None:
        libvirt = _libvirt()
        domain = self._domain(spec)
        try:
            state, reason = domain.state() if domain is not None else (None, None)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            domain = None  # it went away between the lookup and the question
        if domain is not None:
            if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED,
                         libvirt.VIR_DOMAIN_NOSTATE):
                return None
            if state == libvirt.VIR_DOMAIN_PAUSED and reason not in (libvirt.VIR_DOMAIN_PAUSED_IOERROR,
                                                                     libvirt.VIR_DOMAIN_PAUSED_CRASHED):
                return None
            if state == libvirt.VIR_DOMAIN_CRASHED or reason == libvirt.VIR_DOMAIN_PAUSED_CRASHED:
                return Exit(None, "the machine crashed (guest panic)")
            if state == libvirt.VIR_DOMAIN_PAUSED:
                return Exit(None, "the machine stopped on a disk I/O error (disk full?)")
            if state in (libvirt.VIR_DOMAIN_SHUTDOWN,):
                return None  # shutting down: not yet stopped
        # Gone: the lifecycle event saying why may still be on its way from libvirt.
        with self._event_arrived:
            self._event_arrived.wait_for(lambda: spec.resource_name in self._stopped, timeout=EVENT_WAIT)
            event = self._stopped.get(spec.resource_name)
        return Exit(None, _describe_stop(libvirt, event))

    def console_tail(self, spec: BootSpec, max_bytes: int = 8192) -> str:
        return file_tail(spec.work_dir / CONSOLE_LOG, max_bytes)

    def shutdown(self, spec: BootSpec, grace: float) -> None:
        libvirt = _libvirt()
        domain = self._domain(spec)
        if domain is None:
            return
        with contextlib.suppress(libvirt.libvirtError):
            domain.shutdown()  # ACPI power button: a guest that listens stops cleanly
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._domain(spec) is not None:
            time.sleep(0.05)
        domain = self._domain(spec)
        if domain is not None:
            with contextlib.suppress(libvirt.libvirtError):
                domain.destroy()

    def discard(self, spec: BootSpec) -> None:
        libvirt = _libvirt()
        try:
            domain = self._domain(spec)
            if domain is not None:  # shutdown failed, or was never reached
                with contextlib.suppress(libvirt.libvirtError):
                    domain.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    if domain.isPersistent():
                        domain.undefine()
        except (RuntimeError, libvirt.libvirtError) as e:
            # libvirt is away: the overlay still goes; a domain left running is reconciled later.
            log.warning("kvm: cannot reach libvirt to discard %s: %s", spec.resource_name, e)
        finally:
            self._stopped.pop(spec.resource_name, None)
            self._boot_images.pop(spec.boot_id, None)
            shutil.rmtree(spec.work_dir, ignore_errors=True)

    def reconcile(self, tag: str, live_boot_ids: set[str]) -> list[str]:
        libvirt = _libvirt()
        removed = []
        for uri in sorted(self._uris):
            conn = self._connection(uri)
            for domain in conn.listAllDomains():
                owner = domain_owner(libvirt, domain)
                if owner is None or owner[0] != tag or owner[1] in live_boot_ids:
                    continue
                with contextlib.suppress(libvirt.libvirtError):
                    if domain.isActive():
                        domain.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    domain.undefine()
                removed.append(f"libvirt domain {domain.name()} at {uri}")
        return removed


def domain_owner(libvirt: Any, domain: Any) -> tuple[str, str] | None:
    """(agent tag, boot id) from a domain's bbot metadata; None when it is not bbot's."""
    import xml.etree.ElementTree as ET

    try:
        text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
    except libvirt.libvirtError:
        return None
    try:
        element = ET.fromstring(text)
    except ET.ParseError:
        return None
    tag, boot = element.get("tag"), element.get("boot")
    if not tag or not boot or domain.name() != f"{tag}-{boot}":
        return None
    return tag, boot


def _describe_stop(libvirt: Any, event: tuple[int, int] | None) -> str:
    if event is None:
        return "the machine stopped"
    kind, detail = event
    if kind == libvirt.VIR_DOMAIN_EVENT_CRASHED:
        return "the machine crashed (guest panic)"
    return {
        libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "the machine powered off",
        libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "the machine was destroyed",
        libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "the machine crashed",
        libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "the hypervisor failed",
    }.get(detail, "the machine stopped")


def domain_xml(spec: BootSpec, image: MachineImage, dtype: str) -> str:
    """The transient domain of one boot."""
    assert spec.machine is not None
    memory = int(spec.machine.options.get("memory") or image.memory)
    cpus = int(spec.machine.options.get("cpus") or image.cpus)
    tftp_host = GUEST_HOST_ADDRESS if spec.tftp_host in ("127.0.0.1", "localhost") else spec.tftp_host
    worker_args = [f"{CMDLINE_TFTP}={tftp_host}:{spec.tftp_port}", f"{CMDLINE_DIR}={spec.boot_id}"]
    if image.kernel is not None:
        cmdline = " ".join([image.cmdline, *worker_args]).strip()
        initrd = f"<initrd>{escape(str(spec.work_dir / INITRD))}</initrd>" if image.initrd else ""
        os_xml = (f"<kernel>{escape(str(image.kernel))}</kernel>{initrd}"
                  f"<cmdline>{escape(cmdline)}</cmdline>")
        sysinfo = ""
    else:
        os_xml = "<boot dev='hd'/><smbios mode='sysinfo'/>"
        entries = "".join(f"<entry>{escape(a)}</entry>" for a in worker_args)
        sysinfo = f"<sysinfo type='smbios'><oemStrings>{entries}</oemStrings></sysinfo>"
    cpu = "<cpu mode='host-passthrough'/>" if dtype == "kvm" else ""
    # QEMU runs as the agent's user (root), reading the base image and writing the overlay in
    # place: libvirt must not chown them (the base is shared by concurrent boots).
    seclabel = ("" if dtype == "test" else
                "<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>")
    return f"""<domain type={quoteattr(dtype)}>
  <name>{escape(spec.resource_name)}</name>
  <title>bbot build machine {escape(spec.machine.id)}</title>
  <description>{escape(spec.label)}</description>
  <metadata>
    <{METADATA_PREFIX}:boot xmlns:{METADATA_PREFIX}={quoteattr(METADATA_NS)} tag={quoteattr(spec.tag)}
        boot={quoteattr(spec.boot_id)} machine={quoteattr(spec.machine.id)} task={quoteattr(spec.label)}/>
  </metadata>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>{cpus}</vcpu>
  {sysinfo}
  <os><type arch='x86_64'>hvm</type>{os_xml}</os>
  {cpu}
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='unsafe' discard='unmap'/>
      <source file={quoteattr(str(spec.work_dir / OVERLAY))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><model type='virtio'/></interface>
    <serial type='file'>
      <source path={quoteattr(str(spec.work_dir / CONSOLE_LOG))}/><target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  {seclabel}
</domain>
"""
