#!/usr/bin/env python3
"""Throughput of the store's batch calls: results (and issues) per second, SQLite and PostgreSQL.

For each backend: add N builds, lease them with ``issue_many`` in batches,
then store one tiny result each (one operation, a one-line log) with
``record_results`` in batches; then, for comparison, the same with the single
calls ``issue``/``record_result`` on N/4 more builds. Only the store calls
are timed.

SQLite is a fresh WAL file in a temporary directory; PostgreSQL a fresh
schema (dropped afterwards) of the database at --postgres.

Usage: python ops/bench/store_batch.py [--results 4000] [--batch 200]
           [--backend sqlite|postgresql|both] [--postgres postgresql+psycopg://USER@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import getpass
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from bbot.controller.store import IssueItem, NewBuild, NewBuildSet, ResultItem, ResultOutcome, Store
from bbot.manifest import OperationResult, Result
from bbot.manifest.status import Status

NAME, VERSION = "libbench", "1.0.0"


@contextmanager
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        yield f"sqlite:///{Path(directory) / 'bench.sqlite'}"


@contextmanager
def postgres_url(admin_url: str) -> Iterator[str]:
    schema = f"bbot_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        yield f"{admin_url}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def add_builds(store: Store, count: int) -> list[int]:
    set_id = store.add_build_set(NewBuildSet(
        kind="submit", source="bench", repository_url="https://x/bench.git", ref=None, commit=None,
        package_name=NAME, package_version=VERSION))
    return store.add_builds(set_id, [
        NewBuild(configuration=f"c{i}", machine_pattern="m*", target="t", config_args="",
                 warning_regex=[], package_config="default", toolchain_name="public",
                 toolchain_version="1")
        for i in range(count)])


def tiny_result() -> Result:
    return Result(name=NAME, version=VERSION, status=Status.SUCCESS,
                  results=[OperationResult("update", Status.SUCCESS, "ok\n")])


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.0f}/s ({count} in {seconds:.2f} s)"


def bench(label: str, url: str, results: int, batch: int) -> None:
    store = Store(url)
    try:
        ids = add_builds(store, results)
        deadline = time.time() + 3600
        started = time.perf_counter()
        for start in range(0, results, batch):
            store.issue_many([IssueItem(b, f"s{b}", deadline, "task") for b in ids[start:start + batch]])
        issued = time.perf_counter() - started

        payload = tiny_result()
        started = time.perf_counter()
        outcomes: list[ResultOutcome] = []
        for start in range(0, results, batch):
            outcomes += store.record_results(
                [ResultItem(f"s{b}", payload, agent="a", machine_name="m") for b in ids[start:start + batch]])
        recorded = time.perf_counter() - started
        if outcomes.count(ResultOutcome.ACCEPTED) != results:
            raise SystemExit(f"{label}: only {outcomes.count(ResultOutcome.ACCEPTED)} of {results} accepted")

        singles = add_builds(store, max(1, results // 4))
        started = time.perf_counter()
        for b in singles:
            store.issue(b, f"one{b}", deadline, "task")
        issued_one = time.perf_counter() - started
        started = time.perf_counter()
        for b in singles:
            store.record_result(f"one{b}", payload, agent="a", machine_name="m")
        recorded_one = time.perf_counter() - started

        print(f"{label:10} record_results (batch {batch}): {rate(results, recorded)}")
        print(f"{label:10} issue_many     (batch {batch}): {rate(results, issued)}")
        print(f"{label:10} record_result  (one by one): {rate(len(singles), recorded_one)}")
        print(f"{label:10} issue          (one by one): {rate(len(singles), issued_one)}")
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres", default=f"postgresql+psycopg://{getpass.getuser()}@127.0.0.1:5432/test")
    args = parser.parse_args()
    if args.results < 1 or args.batch < 1:
        parser.error("--results and --batch must be 1 or more")
    if args.backend in ("sqlite", "both"):
        with sqlite_url() as url:
            bench("sqlite", url, args.results, args.batch)
    if args.backend in ("postgresql", "both"):
        with postgres_url(args.postgres) as url:
            bench("postgresql", url, args.results, args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
