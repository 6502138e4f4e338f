#!/usr/bin/env python3
"""Polls per second of the controller's brep shim under waitress, beside a bare Flask app.

Three servers, each in a child process of its own (so /proc/<pid>/stat gives
each one's CPU time), each served by ``bbot.controller.web.server.serve`` with
the controller's thread count (``web.threads``):

(a) empty polls: the controller's app (``bbot.farm.start_farm``, no agent)
    answers ``POST /?build-task`` for a machine no configuration wants, so the
    reply is the no-task manifest. Each poll still parses the request and records
    the agent as alive; it ``basic.get``s the machine's task queue on the broker
    at most every 0.25 s per name (the shim remembers an empty queue that long,
    unless its scheduler published since).
(b) task-handing polls: the same app with N builds queued, all issued to the
    broker before the clock starts; each poll takes a task (``basic.get``,
    the hand-over written to the store, ack) and gets the task manifest.
    Only replies that carried a task count. No result is posted back.
(c) the reference: a bare Flask app with one ``POST /`` view that reads the
    body and returns the constant no-task manifest.

The scheduler issues tasks only while a live agent offers a matching machine,
and keeps at most 2 per offered machine out (OUTSTANDING_PER_MACHINE). So
before (b) is measured, setup polls offering 500 machine headers each (one
name, distinct ids) make room for N, and the server reports ready once the
scheduler has issued all N; the measured polls then offer ``--machines``
headers, as (a) does, so (a) and (b) send the same request shape.

Load: ``--clients`` processes, each with one keep-alive ``http.client``
connection sending the same request in a loop; ``--warmup`` seconds, then
``--seconds`` measured. A request counts when it was sent and answered inside
the measured window. Rounds alternate a, c, b, a, c, b, ... (this machine's
speed varies); the table shows medians over rounds, and the ratios are the
medians of the per-round ratios.

Usage: .venv/bin/python ops/bench/shim_polls.py [--seconds 10] [--clients 4] [--rounds 3]
           [--broker amqp://guest:guest@127.0.0.1:5672//] [--tasks 8000] [--machines 2] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from flask import Flask, Response, request  # noqa: E402

from bbot.bus import names  # noqa: E402
from bbot.config import AgentConfig, WebConfig, load_config  # noqa: E402
from bbot.controller.lease import BuildState  # noqa: E402
from bbot.controller.store import NewBuild, NewBuildSet  # noqa: E402
from bbot.controller.web.server import WebServer, serve  # noqa: E402
from bbot.farm import Farm, start_farm  # noqa: E402
from bbot.manifest import MachineHeader, TaskRequest  # noqa: E402

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
NO_TASK = b": 1\nsession:\n"
MANIFEST_TYPE = "text/manifest;charset=utf-8"
TARGET = "/?build-task"
KINDS = {"a": "empty polls (shim)", "b": "task polls (shim)", "c": "bare Flask"}
ORDER = ("a", "c", "b")
# Setup polls for (b): machine headers each, so that 2 per header leave room for every task.
CAPACITY_HEADERS = 500
TARGET_RATIO = 0.5  # (a)/(c)


# -- the servers (each in a child process) ------------------------------------------------------------


@dataclass(frozen=True)
class ServerOptions:
    kind: str
    broker: str
    threads: int
    tasks: int
    unique: str  # machine, agent and controller names of this run: kept apart on a shared broker


def poll_request(agent: str, machine: str, headers: int) -> bytes:
    machines = [MachineHeader(id=f"{agent}-m{i}", name=machine, summary="a benchmark machine")
                for i in range(headers)]
    return TaskRequest(agent=agent, toolchain_name="public", toolchain_version="0.17.0",
                       machines=machines).to_text().encode()


def idle_machine(unique: str) -> str:
    return f"idle_{unique}-gcc"  # matches no configuration: (a)


def bench_machine(unique: str) -> str:
    return f"bench_{unique}-gcc"  # matches the one configuration: (b)


def serve_bare(threads: int) -> WebServer:
    app = Flask("bare")

    @app.post("/")
    def poll() -> Response:
        request.get_data()
        return Response(NO_TASK, content_type=MANIFEST_TYPE)

    return serve(app, "127.0.0.1", 0, threads=threads)


def start_shim(options: ServerOptions, data_dir: Path) -> Farm:
    base = load_config(None, data_dir=data_dir)
    config = replace(
        base, broker_url=options.broker, web=WebConfig("127.0.0.1", 0, options.threads),
        controller=replace(base.controller, name=f"bench-{options.unique}"),
        agent=AgentConfig(name=f"unused-{options.unique}"),
        configurations=(replace(base.configurations[0], machine=f"bench_{options.unique}-*"),),
    )
    return start_farm(config, with_agent=False)


def queue_tasks(farm: Farm, options: ServerOptions) -> None:
    """N queued builds straight through the store (as Controller._add_set does), then setup polls
    that make room for all of them; returns when the scheduler has issued every one."""
    store = farm.controller.store
    conf = farm.config.configurations[0]
    cc = farm.config.controller
    set_id = store.add_build_set(NewBuildSet(
        kind="submit", source="bench", repository_url="https://example.org/libbench.git", ref="main",
        commit="0" * 40, package_name="libbench", package_version="1.0.0"))
    for start in range(0, options.tasks, 1000):
        store.add_builds(set_id, [
            NewBuild(configuration=f"bench-{i}", machine_pattern=conf.machine, target=conf.target,
                     config_args="", warning_regex=[], package_config="default",
                     toolchain_name=cc.toolchain_name, toolchain_version=cc.toolchain_version)
            for i in range(start, min(start + 1000, options.tasks))])
    farm.controller.wake()
    host, port = farm.web.host, farm.web.port
    for agent in range(math.ceil(options.tasks / (2 * CAPACITY_HEADERS))):
        body = poll_request(f"capacity-{options.unique}-{agent}", bench_machine(options.unique),
                            CAPACITY_HEADERS)
        connection = http.client.HTTPConnection(host, port, timeout=60)
        try:
            connection.request("POST", TARGET, body=body, headers={"Content-Type": "text/manifest"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"a setup poll got {response.status}")
        finally:
            connection.close()
    deadline = time.monotonic() + 120 + options.tasks / 20
    while store.count_builds(state=BuildState.LEASED) < options.tasks:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the scheduler issued only {store.count_builds(state=BuildState.LEASED)} "
                               f"of {options.tasks} tasks in time")
        time.sleep(0.2)


def delete_queues(options: ServerOptions) -> None:
    """The durable queues this run's names put on a shared broker."""
    if not options.broker.startswith("amqp"):
        return
    from kombu import Connection as Broker

    queues = [names.task_queue(idle_machine(options.unique)), names.task_queue(bench_machine(options.unique)),
              names.results_queue(f"bench-{options.unique}"), names.announce_queue(f"bench-{options.unique}")]
    with Broker(options.broker) as broker:
        for queue in queues:
            channel = broker.channel()
            try:
                channel.queue_delete(queue)
            except Exception:  # not there (this kind never declared it): the channel closed
                pass
            finally:
                with contextlib.suppress(Exception):
                    channel.close()


def server_main(options: ServerOptions, pipe: Connection) -> None:
    """A child process: start the server, say ``("ready", port)``, serve until told to stop."""
    farm: Farm | None = None
    web: WebServer | None = None
    with tempfile.TemporaryDirectory(prefix="bbot-shim-polls-") as tmp:
        try:
            if options.kind == "c":
                web = serve_bare(options.threads)
            else:
                farm = start_shim(options, Path(tmp) / "data")
                web = farm.web
                if options.kind == "b":
                    queue_tasks(farm, options)
            pipe.send(("ready", web.port))
            pipe.recv()  # "stop"
        except BaseException as error:
            pipe.send(("error", f"{type(error).__name__}: {error}"))
            raise
        finally:
            if farm is not None:
                farm.stop()
            elif web is not None:
                web.stop()
            if options.kind != "c":
                delete_queues(options)
    pipe.send(("stopped", None))


# -- the load (client processes) -----------------------------------------------------------------------


@dataclass
class ClientResult:
    replies: int = 0
    tasks: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    error: str | None = None


def client_main(port: int, body: bytes, ready: Barrier, window: Queue[tuple[float, float]],
                out: Queue[ClientResult]) -> None:
    """Send ``body`` over one keep-alive connection until the window ends; count what was sent
    and answered inside it. The first poll comes before the window is set: an agent's first
    poll may wait for the scheduler (shim.FIRST_POLL_WAIT)."""
    result = ClientResult()
    statuses: Counter[int] = Counter()
    headers = {"Content-Type": "text/manifest", "Content-Length": str(len(body))}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", TARGET, body=body, headers=headers)
        connection.getresponse().read()
        ready.wait()
        start, end = window.get()
        while (sent := time.monotonic()) < end:
            connection.request("POST", TARGET, body=body, headers=headers)
            response = connection.getresponse()
            reply = response.read()
            answered = time.monotonic()
            if sent >= start and answered <= end:
                result.replies += 1
                statuses[response.status] += 1
                result.latencies.append(answered - sent)
                if response.status == 200 and reply != NO_TASK:
                    result.tasks += 1
    except Exception as error:
        result.error = f"{type(error).__name__}: {error}"
        ready.abort()  # the bench waits for no client that will not come
    finally:
        connection.close()
    result.statuses = dict(statuses)
    out.put(result)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- one measurement -----------------------------------------------------------------------------------


@dataclass
class Measure:
    kind: str
    seconds: float
    replies: int
    tasks: int
    per_second: float  # replies/s; for (b) task replies/s
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    statuses: dict[int, int]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * p
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def measure(kind: str, args: argparse.Namespace, unique: str) -> Measure:
    spawn = multiprocessing.get_context("spawn")
    options = ServerOptions(kind, args.broker, args.threads, args.tasks, unique)
    parent, child = spawn.Pipe()
    server = spawn.Process(target=server_main, args=(options, child), name=f"server-{kind}")
    server.start()
    started = time.monotonic()
    clients: list[multiprocessing.process.BaseProcess] = []
    try:
        if not parent.poll(300 + args.tasks / 20):
            raise RuntimeError(f"server {kind} did not start")
        what, port = parent.recv()
        if what != "ready":
            raise RuntimeError(f"server {kind} failed: {port}")
        print(f"({kind}) {KINDS[kind]}: server ready in {time.monotonic() - started:.1f} s",
              file=sys.stderr, flush=True)
        machine = bench_machine(unique) if kind == "b" else idle_machine(unique)
        fork = multiprocessing.get_context("fork")
        out, window, ready = fork.Queue(), fork.Queue(), fork.Barrier(args.clients + 1)
        clients = [fork.Process(target=client_main, name=f"client-{i}",
                                args=(port, poll_request(f"poller-{unique}-{i}", machine, args.machines),
                                      ready, window, out))
                   for i in range(args.clients)]
        for client in clients:
            client.start()
        try:
            ready.wait(timeout=120)  # every client has had its first reply
        except threading.BrokenBarrierError:
            raise RuntimeError(f"clients of {kind} failed: {[out.get(timeout=10).error]}") from None
        start = time.monotonic() + args.warmup
        end = start + args.seconds
        for _ in clients:
            window.put((start, end))
        assert server.pid is not None
        time.sleep(max(0.0, start - time.monotonic()))
        cpu_before = cpu_seconds(server.pid)
        time.sleep(max(0.0, end - time.monotonic()))
        cpu = cpu_seconds(server.pid) - cpu_before
        results: list[ClientResult] = [out.get(timeout=120) for _ in clients]
        for client in clients:
            client.join(30)
    finally:
        for client in clients:
            if client.is_alive():
                client.terminate()
                client.join(10)
        if server.is_alive():
            with contextlib.suppress(OSError):
                parent.send("stop")
                if parent.poll(120):
                    parent.recv()
            server.join(30)
            if server.is_alive():
                server.terminate()
                server.join(10)
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"clients of {kind} failed: {errors}")
    replies = sum(r.replies for r in results)
    tasks = sum(r.tasks for r in results)
    statuses: Counter[int] = Counter()
    for r in results:
        statuses.update(r.statuses)
    latencies = [x for r in results for x in r.latencies]
    counted = tasks if kind == "b" else replies
    return Measure(kind, args.seconds, replies, tasks, counted / args.seconds,
                   percentile(latencies, 0.50) * 1000, percentile(latencies, 0.99) * 1000,
                   cpu / replies * 1e6 if replies else math.nan, dict(statuses))


# -- the report ----------------------------------------------------------------------------------------


def table(rounds: list[dict[str, Measure]]) -> str:
    def median(kind: str, attribute: str) -> float:
        return float(statistics.median(float(getattr(r[kind], attribute)) for r in rounds))

    lines = ["| server | requests/s | vs bare | p50 ms | p99 ms | server CPU µs/request | per round |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for kind in ("a", "b", "c"):
        ratio = statistics.median(r[kind].per_second / r["c"].per_second for r in rounds)
        per_round = ", ".join(f"{r[kind].per_second:.0f}" for r in rounds)
        lines.append(f"| ({kind}) {KINDS[kind]} | {median(kind, 'per_second'):.0f} | {ratio:.2f} | "
                     f"{median(kind, 'p50_ms'):.2f} | {median(kind, 'p99_ms'):.2f} | "
                     f"{median(kind, 'cpu_us_per_request'):.0f} | {per_round} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1].rsplit("\n\nUsage:", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring (2)")
    parser.add_argument("--clients", type=int, default=4, help="client processes, one connection each (4)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of a, c, b (3); medians are reported")
    parser.add_argument("--broker", default=DEFAULT_BROKER,
                        help=f"the shim's broker ({DEFAULT_BROKER}; or memory://)")
    parser.add_argument("--threads", type=int, default=WebConfig().threads,
                        help=f"waitress threads of every server (web.threads: {WebConfig().threads})")
    parser.add_argument("--tasks", type=int, default=8000,
                        help="builds queued for (b) in each round; more than (b) can take (8000)")
    parser.add_argument("--machines", type=int, default=2, help="machine headers per measured poll (2)")
    parser.add_argument("--json", action="store_true", help="also print every measurement as JSON")
    args = parser.parse_args()
    rounds: list[dict[str, Measure]] = []
    for number in range(1, args.rounds + 1):
        unique = uuid.uuid4().hex[:8]
        done: dict[str, Measure] = {}
        for kind in ORDER:
            done[kind] = m = measure(kind, args, f"{unique}{kind}")
            print(f"round {number}: ({kind}) {KINDS[kind]:<20} {m.per_second:8.0f}/s  "
                  f"p50 {m.p50_ms:6.2f} ms  p99 {m.p99_ms:6.2f} ms  "
                  f"CPU {m.cpu_us_per_request:5.0f} µs/request  replies {m.statuses}",
                  file=sys.stderr, flush=True)
            if kind == "b" and m.replies > m.tasks:
                print(f"round {number}: (b) {m.replies - m.tasks} polls got no task: raise --tasks",
                      file=sys.stderr, flush=True)
        rounds.append(done)
    ratio_a = statistics.median(r["a"].per_second / r["c"].per_second for r in rounds)
    ratio_b = statistics.median(r["b"].per_second / r["c"].per_second for r in rounds)
    print(f"\nshim polls vs a bare Flask app, both on waitress ({args.threads} threads); {args.clients} "
          f"clients, {args.seconds:g} s per run after {args.warmup:g} s warm-up, {args.rounds} rounds "
          f"(medians); broker {args.broker}; {args.machines} machine header(s) per poll\n")
    print(table(rounds))
    verdict = "met" if ratio_a >= TARGET_RATIO else "NOT met"
    print(f"\n(a)/(c) = {ratio_a:.3f} (target >= {TARGET_RATIO}: {verdict}); (b)/(c) = {ratio_b:.3f}")
    if args.json:
        print(json.dumps({"rounds": [{k: asdict(m) for k, m in r.items()} for r in rounds],
                          "ratio_a_c": ratio_a, "ratio_b_c": ratio_b}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
