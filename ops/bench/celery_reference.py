#!/usr/bin/env python3
"""Celery 5's end-to-end task rate on a RabbitMQ broker: the reference for bbot's throughput.

A no-op task sent N times to a fresh durable queue as persistent messages with
publisher confirms, run by a Celery worker in a separate process, its result sent
back persistent through the ``rpc://`` backend (bbot's builds also send a result
back to the controller). The clock runs from just before the first
``apply_async`` to the moment the last result is collected, after a warm-up.

Usage: python ops/bench/celery_reference.py [--broker URL] [-n 5000] [--pool solo] [--json]

Installs celery into the running venv when it is missing, so that a fresh clone runs it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

CELERY_REQUIREMENT = "celery>=5.3,<6"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
TASK_NAME = "bbot_bench.noop"
POOLS = ("solo", "threads", "prefork")
# solo runs the task, and its confirmed result publish, inside the worker's event loop: with a
# backlog it stalls for seconds at a time with its prefetched tasks unacked. threads does not,
# and is as fast as prefork without the pipe to a child process.
DEFAULT_POOL = "threads"
WARMUP = 200
# The worker process builds its app from these (it imports this module by name with -A).
ENV_BROKER = "BBOT_BENCH_CELERY_BROKER"
ENV_QUEUE = "BBOT_BENCH_CELERY_QUEUE"


def ensure_celery() -> str:
    """Celery's version, installing it into this venv first when it is missing."""
    try:
        import celery  # type: ignore[import-untyped]
    except ImportError:
        # On stderr, pip's output too: stdout stays one JSON object under --json.
        print(f"celery is missing: running {sys.executable} -m pip install '{CELERY_REQUIREMENT}'",
              file=sys.stderr, flush=True)
        command = [sys.executable, "-m", "pip", "install", CELERY_REQUIREMENT]
        subprocess.run(command, check=True, stdout=sys.stderr)
        importlib.invalidate_caches()
        import celery
    return str(celery.__version__)


def noop() -> None:
    return None


def make_app(broker_url: str, queue: str) -> Any:
    """The Celery app of both sides; celery has no type hints, hence Any."""
    from celery import Celery
    from kombu import Queue

    app = Celery("bbot_bench", broker=broker_url, backend="rpc://")
    app.conf.update(
        task_queues=[Queue(queue, routing_key=queue, durable=True)],
        task_default_queue=queue,
        task_default_delivery_mode=2,
        result_persistent=True,  # bbot's results are persistent messages too
        broker_transport_options={"confirm_publish": True},  # the worker's result publishes too
        broker_connection_retry_on_startup=True,
    )
    app.task(name=TASK_NAME)(noop)
    return app


if ENV_BROKER in os.environ:
    app = make_app(os.environ[ENV_BROKER], os.environ[ENV_QUEUE])


def start_worker(broker_url: str, queue: str, pool: str, concurrency: int,
                 log: IO[str]) -> subprocess.Popen[str]:
    here = Path(__file__).resolve().parent
    env = dict(os.environ, **{ENV_BROKER: broker_url, ENV_QUEUE: queue})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(here), env.get("PYTHONPATH")) if p)
    command = [
        sys.executable, "-m", "celery", "-A", Path(__file__).stem, "worker", "--pool", pool,
        "--concurrency", str(concurrency), "--loglevel", "WARNING",
    ]
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def stop_worker(worker: subprocess.Popen[str]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def wait_ready(task: Any, worker: subprocess.Popen[str], log: IO[str], timeout: float = 60.0) -> None:
    """One round trip, watching the worker: a worker that died fails now, not at a timeout."""
    from celery.exceptions import TimeoutError as CeleryTimeout  # type: ignore[import-untyped]

    result = task.apply_async()
    deadline = time.monotonic() + timeout
    while True:
        try:
            result.get(timeout=0.5)
            return
        except CeleryTimeout:
            if worker.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                state = f"exited with {worker.returncode}" if worker.returncode is not None else "is silent"
                raise RuntimeError(f"the celery worker {state}; its output:\n{log.read()}") from None


def collect(app: Any, results: list[Any], timeout: float) -> None:
    from celery.result import ResultSet  # type: ignore[import-untyped]

    values = ResultSet(results, app=app).get(timeout=timeout)
    if len(values) != len(results):
        raise RuntimeError(f"collected {len(values)} results of {len(results)}")


def run(broker_url: str, n: int = 5000, *, concurrency: int = 1, pool: str = DEFAULT_POOL) -> dict[str, Any]:
    if n < 1:
        raise ValueError(f"n={n}: the number of tasks must be at least 1")
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r}: use one of {', '.join(POOLS)}")
    version = ensure_celery()
    queue = f"bbot-bench-celery-{uuid.uuid4().hex}"
    app = make_app(broker_url, queue)
    task = app.tasks[TASK_NAME]
    timeout = 60 + n / 50  # far above any sane rate, yet a stuck run ends
    with tempfile.TemporaryFile("w+") as log:
        worker = start_worker(broker_url, queue, pool, concurrency, log)
        try:
            wait_ready(task, worker, log)
            collect(app, [task.apply_async() for _ in range(WARMUP)], timeout)
            start = time.perf_counter()
            collect(app, [task.apply_async() for _ in range(n)], timeout)
            seconds = time.perf_counter() - start
        finally:
            stop_worker(worker)
            with app.connection_for_write() as connection:
                # Celery also declared a direct exchange of the queue's name.
                connection.default_channel.queue_delete(queue)
                connection.default_channel.exchange_delete(queue)
            app.close()
    return {"system": "celery", "version": version, "n": n, "seconds": seconds,
            "per_second": n / seconds, "pool": pool, "confirms": True}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--broker", default=DEFAULT_BROKER)
    parser.add_argument("-n", type=int, default=5000, help=f"timed tasks (after a warm-up of {WARMUP})")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--pool", choices=POOLS, default=DEFAULT_POOL)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args()
    result = run(args.broker, args.n, concurrency=args.concurrency, pool=args.pool)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"celery {result['version']} ({result['pool']} pool, confirms): {result['n']} tasks in "
              f"{result['seconds']:.2f} s = {result['per_second']:.0f} tasks/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
