#!/usr/bin/env python3
"""End-to-end throughput of null builds on RabbitMQ, beside Celery 5 on the same broker.

A null build runs on a ``null`` machine, whose worker reports success at once,
so only the farm itself is measured: the controller leases the build in the
store and publishes its task (persistent, publisher confirms) to the machine's
quorum queue, the agent takes it, the result goes back (persistent, confirms)
through the controller's results queue, and the controller commits it to the
store (SQLite, WAL) and acks it. Controller and agent are the real
``bbot controller`` and ``bbot agent`` processes.

The builds are queued first (no agent yet); the rate is N divided by the time
from the first task issued to the last result committed, as the store
recorded them. Then, in the same run and on the same broker, Celery 5 runs N
no-op tasks with publisher confirms and results (ops/bench/celery_reference.py).

Usage: python ops/bench/throughput.py [-n 5000] [--broker amqp://guest:guest@127.0.0.1:5672//]
                                      [--machines 200] [--no-celery] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bbot.devfarm import DevFarm  # noqa: E402

CONFIGURATIONS = 100  # builds per submission


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rabbitmq_pid() -> int | None:
    """The local RabbitMQ node's Erlang VM (the default node, rabbit@...), if it runs here."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"beam.smp" in command and b"rabbit" in command and b"bbottest" not in command:
            return int(entry.name)
    return None


def run_bbot(broker: str, n: int, machines: int, root: Path) -> dict[str, float]:
    repo = root / "null-package"
    repo.mkdir()
    (repo / "README").write_text("nothing to build\n")
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                ["git", "-c", "user.name=b", "-c", "user.email=b@example.org", "commit", "-q", "-m", "x"]):
        subprocess.run(cmd, cwd=repo, check=True)
    farm = DevFarm(
        root / "farm", broker,
        configurations=[{"name": f"null-{i}", "machine": "null*", "target": "x86_64-linux-gnu"}
                        for i in range(CONFIGURATIONS)],
        controller_settings={"lease_timeout": 600, "schedule_interval": 0.05},
        agent_settings={"heartbeat": 1.0},
    )
    try:
        farm.start_controller()
        sets = -(-n // CONFIGURATIONS)
        for _ in range(sets):
            farm.submit(str(repo))
        total = sets * CONFIGURATIONS
        assert farm.controller is not None and farm.controller.popen is not None
        broker_pid = rabbitmq_pid()
        cpu_before = {"controller": cpu_seconds(farm.controller.popen.pid),
                      "rabbitmq": cpu_seconds(broker_pid) if broker_pid else 0.0}
        agent = farm.add_agent("bench", [{"id": f"null-{i}", "name": "null-x86_64", "type": "null"}
                                         for i in range(machines)])
        assert agent.popen is not None
        cpu_before["agent"] = 0.0  # it is new: all its time counts (start-up too)
        # Polled slowly: the rate comes from the store's own timestamps, and the poll must not
        # take CPU from the farm.
        wall = farm.wait_built(total, timeout=600, watch=[farm.controller, agent], poll=0.5)
        cpu = {"controller": cpu_seconds(farm.controller.popen.pid) - cpu_before["controller"],
               "agent": cpu_seconds(agent.popen.pid) - cpu_before["agent"],
               "rabbitmq": (cpu_seconds(broker_pid) - cpu_before["rabbitmq"]) if broker_pid else 0.0}
        with farm.db() as conn:
            first_issue = conn.execute("SELECT MIN(issued_at) FROM bbot_attempts").fetchone()[0]
            last_result = conn.execute("SELECT MAX(finished_at) FROM bbot_builds").fetchone()[0]
            success = conn.execute("SELECT COUNT(*) FROM bbot_builds WHERE status = 'success'").fetchone()[0]
            attempts = conn.execute("SELECT COUNT(*) FROM bbot_attempts").fetchone()[0]
            query = "SELECT finished_at FROM bbot_builds ORDER BY finished_at"
            finished = [t for (t,) in conn.execute(query)]
            latency = conn.execute("SELECT AVG(b.finished_at - a.issued_at) FROM bbot_builds b "
                                   "JOIN bbot_attempts a ON a.build_id = b.id").fetchone()[0]
    finally:
        farm.stop()
    seconds = last_result - first_issue
    return {"n": total, "seconds": seconds, "per_second": total / seconds, "success": success,
            "attempts": attempts, "wall_from_agent_start": wall, "mean_latency": latency,
            "longest_gap": max(b - a for a, b in itertools.pairwise(finished)),
            **{f"cpu_ms_per_build_{k}": v * 1000 / total for k, v in cpu.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--broker", default="amqp://guest:guest@127.0.0.1:5672//")
    parser.add_argument("--machines", type=int, default=200, help="null machines of the agent")
    parser.add_argument("--no-celery", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bbot = run_bbot(args.broker, args.n, args.machines, Path(tmp))
    report: dict[str, object] = {"bbot": bbot}
    print(f"bbot:   {bbot['n']} null builds in {bbot['seconds']:.2f} s = {bbot['per_second']:.0f} builds/s "
          f"({bbot['success']} success, {bbot['attempts']} attempts; mean issue-to-result "
          f"{bbot['mean_latency'] * 1000:.0f} ms; longest gap between results "
          f"{bbot['longest_gap'] * 1000:.0f} ms)", flush=True)
    print("        CPU per build: " + ", ".join(f"{k.removeprefix('cpu_ms_per_build_')} "
                                                f"{v * 1000:.0f} µs" for k, v in bbot.items()
                                                if k.startswith("cpu_ms_per_build_")), flush=True)
    if not args.no_celery:
        import celery_reference

        time.sleep(1)  # let the broker settle after the farm's queues went idle
        ref = celery_reference.run(args.broker, args.n)
        report["celery"] = ref
        report["ratio"] = bbot["per_second"] / ref["per_second"]
        print(f"celery: {ref['n']} no-op tasks in {ref['seconds']:.2f} s = {ref['per_second']:.0f} tasks/s "
              f"(pool {ref.get('pool')}, confirms)")
        print(f"ratio:  {report['ratio']:.2f}x")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
