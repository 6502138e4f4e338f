#!/usr/bin/env python3
"""Build machines, phase by phase, per machine type; the kvm path against bare QEMU.

For each machine type asked for (default: kvm, container, process), one agent with
one machine of that type builds the C sample (ops/sample/libhello, cloned by the
worker from a `git daemon` on loopback) N times, one build after another, and
each boot's lifecycle (bbot/agent/lifecycle.py) gives its phases:

- snapshot: the throw-away copy made (qcow2 overlay, overlayfs dirs, a folder);
- boot to worker start: from starting the machine to the worker fetching its task
  over TFTP;
- build: from there to the result manifest's upload (clone, configure, build, test,
  install);
- shutdown + discard: from the result to the snapshot gone.

The reference for the kvm path runs in the same loop, alternating with it: a bare
`qemu-system-x86_64` direct boot of the same kernel, initrd (with the same worker
archive), a qcow2 overlay on the same disk, the same command line, user-mode
networking and serial file, to the same point: the worker fetching its task from a
real TFTP server. Ratio = kvm p50 / bare p50 for boot to worker start.

Usage: .venv/bin/python ops/bench/machines.py [--builds 10] [--types kvm,container,process]
Needs what ./ops/test sets up: libvirtd running, the image (ops/images/build).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from kombu import Connection

from bbot import bus
from bbot.agent.lifecycle import BootLife, MachineState
from bbot.agent.machines.base import CMDLINE_DIR, CMDLINE_TFTP, GUEST_HOST_ADDRESS
from bbot.agent.machines.kvm import load_image
from bbot.agent.machines.workercode import initrd_with_worker
from bbot.agent.service import Agent
from bbot.bus import names
from bbot.config import AgentConfig, MachineConfig
from bbot.devfarm import git_daemon
from bbot.manifest import ResultRequest, Task
from bbot.manifest.status import Status
from bbot.tftp import TASK_MANIFEST, TftpService

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "ops" / "sample" / "libhello"
PHASES = ("snapshot", "boot to worker start", "build", "shutdown + discard", "total")


def image_dir() -> Path:
    out = subprocess.run([str(ROOT / "ops" / "images" / "build")], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def served_sample(tmp: Path) -> Iterator[str]:
    """The sample as a git repository served on loopback; yields its URL."""
    repo = tmp / "git" / "libhello.git"
    shutil.copytree(SAMPLE, repo)
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=bench", "-c", "user.email=b@bbot.invalid", "commit", "-q", "-m", "x"],
    ):
        subprocess.run(cmd, cwd=repo, check=True)
    with git_daemon(tmp / "git") as url:
        yield f"{url}/libhello.git#main"


def phases(life: BootLife) -> dict[str, float]:
    at = {state: t for state, t in life.history}
    return {
        "snapshot": at[MachineState.BOOTING] - at[MachineState.SNAPSHOT],
        "boot to worker start": at[MachineState.RUNNING] - at[MachineState.BOOTING],
        "build": at[MachineState.RESULT] - at[MachineState.RUNNING],
        "shutdown + discard": at[MachineState.DISCARDED] - at[MachineState.RESULT],
        "total": at[MachineState.DISCARDED] - at[MachineState.SNAPSHOT],
    }


class AgentRun:
    """One agent with one machine of a type, building one task at a time."""

    def __init__(self, machine_type: str, options: dict[str, object], data: Path, url: str) -> None:
        self.name = f"bench-{machine_type}"
        self.machine = f"bench_{machine_type}"
        self.url = url
        self.lives: list[BootLife] = []
        self.agent = Agent(
            AgentConfig(
                name=self.name,
                heartbeat=5.0,
                boot_timeout=300,
                build_timeout=1200,
                machines=(
                    MachineConfig(
                        f"{machine_type}-1", self.machine, "bench", type=machine_type, options=options
                    ),
                ),
            ),
            broker_url="memory://",
            data_dir=data,
            on_boot_done=self.lives.append,
        )
        self.agent.start()
        with Connection("memory://") as conn:
            bus.results_queue(self.name)(conn.default_channel).declare()

    def build_once(self) -> dict[str, float]:
        task = Task(
            name="libhello",
            version="1.0.0",
            repository_url=self.url,
            machine=self.machine,
            target="x86_64-linux-gnu",
        )
        publisher = bus.Publisher("memory://")
        publisher.publish(
            task.to_text(),
            exchange=bus.tasks_exchange(),
            routing_key=names.machine_key(self.machine),
            declare=[bus.task_queue(self.machine)],
            reply_to=f"bbot.results.{self.name}",
            correlation_id=f"/libhello/1.0.0/bench/{len(self.lives)}",
        )
        publisher.close()
        with Connection("memory://") as conn:
            queue = conn.SimpleQueue(bus.results_queue(self.name))
            message = queue.get(block=True, timeout=1800)
            message.ack()
            queue.close()
        request = ResultRequest.from_text(bus.body_text(message.body))
        if request.result.status is not Status.SUCCESS:
            logs = "\n".join(r.log for r in request.result.results)
            raise SystemExit(f"{self.name}: the build ended {request.result.status.value}:\n{logs[-3000:]}")
        deadline = time.monotonic() + 30
        while len(self.lives) < int(message.properties.get("correlation_id", "0/0").rsplit("/", 1)[1]) + 1:
            if time.monotonic() > deadline:
                raise SystemExit("the boot's lifecycle never came back")
            time.sleep(0.01)
        return phases(self.lives[-1])

    def stop(self) -> str:
        described = "; ".join(b.describe() for b in self.agent.backends.values())
        self.agent.stop()
        return described


def bare_qemu_boot(image: Path, tmp: Path, tftp: TftpService, boot: str) -> tuple[float, float]:
    """(overlay create+discard seconds, seconds from starting QEMU to the worker's task fetch)."""
    img, problems = load_image(image)
    assert img is not None and img.kernel is not None and img.initrd is not None, problems
    work = tmp / boot
    (tftp.root / boot).mkdir()
    (tftp.root / boot / TASK_MANIFEST).write_text(
        Task(
            name="x", version="1", repository_url="git://10.0.2.2:9/none.git", machine="m", target="t"
        ).to_text()
    )
    tftp.allow(boot)
    fetched = threading.Event()
    tftp.on_download = lambda d: fetched.set() if d == boot else None
    work.mkdir(parents=True)
    start = time.monotonic()
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(img.disk.absolute()),
            str(work / "overlay.qcow2"),
        ],
        check=True,
    )
    snapshot = time.monotonic() - start
    (work / "initrd.img").write_bytes(
        initrd_with_worker(img.initrd.absolute())
    )
    cmdline = f"{img.cmdline} {CMDLINE_TFTP}={GUEST_HOST_ADDRESS}:{tftp.port} {CMDLINE_DIR}={boot}"
    argv = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        str(img.memory),
        "-smp",
        str(img.cpus),
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        str(img.kernel),
        "-initrd",
        str(work / "initrd.img"),
        "-append",
        cmdline,
        "-drive",
        f"file={work / 'overlay.qcow2'},if=virtio,format=qcow2,cache=unsafe",
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-pci,netdev=n0",
        "-serial",
        f"file:{work / 'console.log'}",
    ]
    start = time.monotonic()
    qemu = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        if not fetched.wait(300):
            raise SystemExit(
                f"bare QEMU: the worker never fetched its task; console:\n"
                f"{(work / 'console.log').read_text(errors='replace')[-3000:]}"
            )
        boot_seconds = time.monotonic() - start
    finally:
        qemu.kill()
        qemu.wait()
    start = time.monotonic()
    shutil.rmtree(work)
    snapshot += time.monotonic() - start
    tftp.forbid(boot)
    return snapshot, boot_seconds


def p50(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--builds", type=int, default=10)
    parser.add_argument("--types", default="kvm,container,process")
    args = parser.parse_args()
    types = [t for t in args.types.split(",") if t]
    image = image_dir()
    rows: dict[str, dict[str, list[float]]] = {}
    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bbot-bench-") as tmp_name, served_sample(Path(tmp_name)) as url:
        tmp = Path(tmp_name)
        for machine_type in types:
            options: dict[str, object] = {"image": str(image)} if machine_type in ("kvm", "container") else {}
            run = AgentRun(machine_type, options, tmp / "data", url)
            reference: TftpService | None = None
            if machine_type == "kvm":
                (tmp / "bare-tftp").mkdir()
                reference = TftpService(tmp / "bare-tftp")
                reference.start()
                rows["bare qemu"] = {p: [] for p in PHASES}
            rows[machine_type] = {p: [] for p in PHASES}
            try:
                for i in range(args.builds):
                    if reference is not None:  # alternate with the kvm path: same conditions
                        snap, boot = bare_qemu_boot(image, tmp / "bare", reference, f"bare-{i}")
                        rows["bare qemu"]["snapshot"].append(snap)
                        rows["bare qemu"]["boot to worker start"].append(boot)
                    measured = run.build_once()
                    for phase, seconds in measured.items():
                        rows[machine_type][phase].append(seconds)
                    print(
                        f"{machine_type} {i + 1}/{args.builds}: "
                        + ", ".join(f"{k} {v:.3f}s" for k, v in measured.items()),
                        file=sys.stderr,
                        flush=True,
                    )
            finally:
                notes[machine_type] = run.stop()
                if reference is not None:
                    reference.stop()
    print(f"\nmachine phases, p50 over {args.builds} builds of ops/sample/libhello (seconds)\n")
    print("| machine | " + " | ".join(PHASES) + " |")
    print("|---|" + "---|" * len(PHASES))
    for machine_type, phase_values in rows.items():
        cells = [f"{p50(v):.3f}" if v else "—" for v in phase_values.values()]
        print(f"| {machine_type} | " + " | ".join(cells) + " |")
    if "kvm" in rows and rows["bare qemu"]["boot to worker start"]:
        ratio = p50(rows["kvm"]["boot to worker start"]) / p50(rows["bare qemu"]["boot to worker start"])
        print(f"\nkvm boot to worker start vs bare qemu-system-x86_64: {ratio:.2f}x (target <= 1.3x)")
        spread = rows["kvm"]["boot to worker start"]
        print(
            f"kvm boot to worker start min/max: {min(spread):.2f}/{max(spread):.2f} s; bare: "
            f"{min(rows['bare qemu']['boot to worker start']):.2f}/"
            f"{max(rows['bare qemu']['boot to worker start']):.2f} s"
        )
    for machine_type, text in notes.items():
        print(f"{machine_type}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
