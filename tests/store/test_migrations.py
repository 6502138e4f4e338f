"""Schema versions: a new store, an older one brought up to date, a newer one refused."""

from __future__ import annotations

import threading
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bbot.controller.lease import BuildState
from bbot.controller.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    FailOutcome,
    Migration,
    ResultOutcome,
    SchemaError,
    Store,
    _check_migrations,
)
from bbot.manifest.status import Status
from tests.store import schema_v1
from tests.store.builds import result
from tests.store.databases import database_url


def _versions(url: str) -> list[int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("select version from bbot_schema_version order by version"))
            return [int(r.version) for r in rows]
    finally:
        engine.dispose()


def _columns(url: str) -> dict[str, list[tuple[str, str, bool, str | None]]]:
    """Every bbot table's columns as (name, type, nullable, server default), in order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            return {
                table: [(c["name"], str(c["type"]), bool(c["nullable"]), c.get("default"))
                        for c in inspector.get_columns(table)]
                for table in sorted(inspector.get_table_names()) if table.startswith("bbot_")
            }
    finally:
        engine.dispose()


def _execute(url: str, statement: str, **params: Any) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)
    finally:
        engine.dispose()


def _fill_v1(url: str) -> dict[str, int]:
    """A version-1 store holding a built build (two operations), a leased one and a counter."""
    v1 = schema_v1
    task = zlib.compress(b"task: 1\n")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            set_id = conn.execute(v1.build_sets.insert().values(
                kind="git", source="hello", repository_url="https://git.example.org/hello.git",
                ref="main", commit="0123", package_name="libhello", package_version="1.2.3+1",
                created_at=10.0,
            )).inserted_primary_key[0]
            common = dict(
                set_id=set_id, package_name="libhello", package_version="1.2.3+1",
                machine_pattern="linux*", target="x86_64-linux-gnu", config_args="",
                warning_regex='["^warning:"]', package_config="default", toolchain_name="public",
                toolchain_version="0.17.0", tenant="", created_at=11.0, forced=False,
            )
            built = conn.execute(v1.builds.insert().values(
                configuration="linux-gcc", state="built", status="warning", attempt=1, session="s-built",
                agent="a1", machine_name="linux_debian_12", finished_at=20.0, **common,
            )).inserted_primary_key[0]
            leased = conn.execute(v1.builds.insert().values(
                configuration="linux-clang", state="leased", attempt=1, session="s-leased",
                lease_deadline=time.time() + 600, **common,
            )).inserted_primary_key[0]
            conn.execute(v1.attempts.insert(), [
                dict(build_id=built, number=1, session="s-built", issued_at=12.0, deadline=99.0,
                     ended_at=20.0, outcome="result", agent="a1", machine="linux_debian_12",
                     metrics='{"build_seconds": 7.5}', task=task),
                dict(build_id=leased, number=1, session="s-leased", issued_at=13.0, deadline=99.0,
                     ended_at=None, outcome=None, agent=None, machine=None, metrics="{}", task=task),
            ])
            conn.execute(v1.operations.insert(), [
                dict(build_id=built, position=0, name="configure", status="success",
                     log=zlib.compress(b"configuring\n")),
                dict(build_id=built, position=1, name="update", status="warning",
                     log=zlib.compress("warning: é\n".encode())),
            ])
            conn.execute(v1.counters_table.insert().values(name="tasks_issued", value=2))
    finally:
        engine.dispose()
    return {"built": int(built), "leased": int(leased)}


def test_an_empty_database_gets_the_latest_schema(url: str) -> None:
    Store(url).close()
    assert _versions(url) == [SCHEMA_VERSION]
    columns = _columns(url)
    assert [c[0] for c in columns["bbot_attempts"]][-1] == "infrastructure"
    Store(url).close()  # opening again changes nothing
    assert _versions(url) == [SCHEMA_VERSION]


def test_a_v1_store_is_migrated_with_its_data_intact(url: str) -> None:
    schema_v1.create(url)
    ids = _fill_v1(url)
    assert _versions(url) == [1]

    store = Store(url)
    try:
        assert _versions(url) == list(range(1, SCHEMA_VERSION + 1))
        built = store.get_build(ids["built"])
        assert built is not None
        assert (built.state, built.status, built.agent, built.warning_regex) == (
            BuildState.BUILT, Status.WARNING, "a1", ["^warning:"])
        assert [(o.name, o.status, o.log) for o in store.operations(ids["built"])] == [
            ("configure", Status.SUCCESS, "configuring\n"), ("update", Status.WARNING, "warning: é\n")]
        (attempt,) = store.attempts(ids["built"])
        assert (attempt.outcome, attempt.metrics, attempt.infrastructure) == (
            "result", {"build_seconds": 7.5}, False)
        assert store.task_text(ids["built"], 1) == "task: 1\n"
        assert store.counters() == {"tasks_issued": 2}

        # The migrated store works like a new one, new column included.
        assert store.fail_attempt("s-leased", "disk full", agent="a2", max_attempts=3) is FailOutcome.RETRY
        assert store.failed_agents(ids["leased"]) == ["a2"]
        assert store.issue_many([]) == []
        store.issue(ids["leased"], "s-leased-2", time.time() + 60, "task")
        assert store.record_result("s-leased-2", result()) is ResultOutcome.ACCEPTED
        assert [a.infrastructure for a in store.attempts(ids["leased"])] == [True, False]
    finally:
        store.close()


def test_a_migrated_store_has_the_same_columns_as_a_new_one(url: str, tmp_path: Path) -> None:
    schema_v1.create(url)
    Store(url).close()
    backend = "postgresql" if url.startswith("postgresql") else "sqlite"
    (tmp_path / "fresh").mkdir()
    with database_url(backend, tmp_path / "fresh") as fresh:
        Store(fresh).close()
        assert _columns(url) == _columns(fresh)


def test_two_stores_opening_at_once_migrate_once(url: str) -> None:
    schema_v1.create(url)
    _fill_v1(url)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            start.wait(timeout=10)
            Store(url).close()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert _versions(url) == list(range(1, SCHEMA_VERSION + 1))


def test_a_newer_store_is_refused_naming_url_versions_and_fix(url: str) -> None:
    Store(url).close()
    _execute(url, "insert into bbot_schema_version (version, applied_at) values (:v, 1.0)",
             v=SCHEMA_VERSION + 1)
    # A password in the URL (trust auth ignores it) must not show in the message.
    secret_url = url.replace("@", ":sekrit@", 1) if url.startswith("postgresql") else url
    with pytest.raises(SchemaError) as raised:
        Store(secret_url)
    message = str(raised.value)
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this bbot's {SCHEMA_VERSION}" in message
    assert "upgrade bbot" in message
    assert "sekrit" not in message
    assert secret_url.split("?")[0].replace(":sekrit@", ":***@") in message
    assert _versions(url) == [SCHEMA_VERSION, SCHEMA_VERSION + 1]


def test_a_failed_migration_keeps_the_old_version(url: str) -> None:
    schema_v1.create(url)
    # Migration 2 adds this column: having it already makes the step fail.
    _execute(url, "alter table bbot_attempts add column infrastructure integer")
    with pytest.raises(SchemaError, match=r"migration to schema version 2 \(bbot_attempts.infrastructure"
                                          r".*stays at version 1"):
        Store(url)
    assert _versions(url) == [1]


def test_foreign_or_damaged_databases_are_refused(url: str) -> None:
    _execute(url, "create table bbot_builds (id integer primary key)")
    with pytest.raises(SchemaError, match=r"has bbot tables \(bbot_builds\) but no bbot_schema_version"):
        Store(url)
    _execute(url, "create table bbot_schema_version (version integer primary key, applied_at float)")
    with pytest.raises(SchemaError, match=r"bbot_schema_version is empty"):
        Store(url)


def test_migrations_are_numbered_consecutively() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(2, SCHEMA_VERSION + 1))
    assert all(m.description for m in MIGRATIONS)
    step = MIGRATIONS[0]
    with pytest.raises(RuntimeError, match=r"versions \[2, 4\]: number them \[2, 3\]"):
        _check_migrations([step, Migration(4, "skips 3", step.apply)])
