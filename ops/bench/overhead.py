#!/usr/bin/env python3
"""Per-build overhead of the embedded farm: submit to stored result, minus the worker's own time.

Runs N builds (default 50) of a trivial make project one after another on the
embedded default (in-memory transport, SQLite, process machines), and for each
records:

- total: from ``Controller.submit`` returning to the result being committed;
- worker: how long the worker process ran (boot to exit, as the agent saw it:
  TFTP fetch, git clone, the build steps, TFTP upload);
- steps: the build steps alone are inside "worker";
- overhead = total - worker: scheduling, lease, AMQP publish/consume, machine
  snapshot and boot, result publish, store commit.

Usage: python ops/bench/overhead.py [--builds 50] [--broker memory://]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bbot.config import AgentConfig, BuildConfiguration, MachineConfig, WebConfig, load_config
from bbot.farm import start_farm


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", type=int, default=50)
    parser.add_argument("--broker", default="memory://")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = root / "trivial"
        repo.mkdir()
        (repo / "Makefile").write_text("all:\n\t@true\ncheck:\n\t@true\ninstall:\n\t@true\n")
        for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q", "-m", "x"]):
            subprocess.run(cmd, cwd=repo, check=True)
        base = load_config(None, data_dir=root / "data")
        config = replace(
            base, broker_url=args.broker, web=WebConfig("127.0.0.1", 0),
            controller=replace(base.controller, schedule_interval=0.2),
            configurations=(BuildConfiguration("trivial", "bench-*", "x86_64-linux-gnu"),),
            agent=AgentConfig(name="bench", heartbeat=1.0,
                              machines=(MachineConfig("bench-1", "bench-machine", "bench"),)),
        )
        farm = start_farm(config)
        totals: list[float] = []
        workers: list[float] = []
        try:
            for _ in range(args.builds):
                t0 = time.monotonic()
                set_id = farm.controller.submit(f"file://{repo}#main")
                t1 = time.monotonic()
                if not farm.controller.wait_for_sets([set_id], timeout=120):
                    print("a build did not finish", file=sys.stderr)
                    return 1
                t2 = time.monotonic()
                (build,) = farm.controller.store.set_builds(set_id)
                attempt = farm.controller.store.attempts(build.id)[-1]
                totals.append(t2 - t1)
                workers.append(attempt.metrics.get("worker-seconds", 0.0))
                del t0
        finally:
            farm.stop()
    overheads = [t - w for t, w in zip(totals, workers, strict=True)]
    print(f"builds: {len(totals)} (sequential, broker {args.broker})")
    for label, values in (("total (submit -> stored)", totals), ("worker process", workers),
                          ("overhead = total - worker", overheads)):
        p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
        print(f"{label:28s} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms   "
              f"mean {statistics.mean(values) * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
