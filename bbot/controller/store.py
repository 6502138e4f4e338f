"""The controller's store: build sets, builds, their attempts, results and logs.

One SQLAlchemy Core schema that runs on SQLite (the embedded default, a file
in WAL mode) and on PostgreSQL (``postgresql+psycopg://...``). Every change
of a build's state goes through ``bbot.controller.lease.next_state``, inside
one transaction that locks the build row, so two threads (or two controller
processes on PostgreSQL) can never both move the same build.

Logs are stored zlib-compressed; everything else is plain columns so the
pages can filter and count in SQL.
"""

from __future__ import annotations

import contextlib
import enum
import json
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.pool import StaticPool

from bbot.controller.lease import BuildState, LeaseEvent, next_state
from bbot.manifest import Result
from bbot.manifest.status import Status
from bbot.wire import BuildKey

SCHEMA_VERSION = 1

# How long a SQLite writer waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000


# --------------------------------------------------------------------------- public rows


@dataclass(frozen=True)
class NewBuildSet:
    kind: str  # "submit" | "git"
    source: str  # the source's configured name
    repository_url: str  # git URL without fragment
    ref: str | None
    commit: str | None
    package_name: str
    package_version: str
    author_name: str | None = None
    author_email: str | None = None
    submitter_email: str | None = None


@dataclass(frozen=True)
class NewBuild:
    configuration: str
    machine_pattern: str
    target: str
    config_args: str  # raw, space-separated
    warning_regex: list[str]
    package_config: str
    toolchain_name: str
    toolchain_version: str


@dataclass(frozen=True)
class BuildRow:
    id: int
    set_id: int
    package_name: str
    package_version: str
    configuration: str
    machine_pattern: str
    target: str
    config_args: str
    warning_regex: list[str]
    package_config: str
    toolchain_name: str
    toolchain_version: str
    tenant: str
    state: BuildState
    status: Status | None
    attempt: int
    session: str | None
    lease_deadline: float | None
    agent: str | None
    machine_name: str | None
    machine_summary: str | None
    reason: str | None  # why it waits, or why it ended abnormal
    created_at: float
    issued_at: float | None
    finished_at: float | None
    forced: bool
    # From the build set.
    kind: str
    source: str
    repository_url: str
    ref: str | None
    commit: str | None
    author_name: str | None
    author_email: str | None
    submitter_email: str | None

    @property
    def key(self) -> BuildKey:
        return BuildKey(
            package_name=self.package_name,
            package_version=self.package_version,
            target=self.target,
            target_config=self.configuration,
            package_config=self.package_config,
            toolchain_name=self.toolchain_name,
            toolchain_version=self.toolchain_version,
            tenant=self.tenant,
        )


@dataclass(frozen=True)
class OperationRow:
    name: str
    status: Status
    log: str


@dataclass(frozen=True)
class AttemptRow:
    number: int
    session: str
    issued_at: float
    ended_at: float | None
    outcome: str | None  # "result" | "expired" | "given-up"; None while the lease is out
    agent: str | None
    machine: str | None
    detail: str | None
    metrics: dict[str, float]


class ResultOutcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # this session's result is already stored
    STALE = "stale"  # a session of the build that is no longer current
    UNKNOWN = "unknown"  # no such session
    MISMATCH = "mismatch"  # the result's name/version differ from the build's


class BuildNotFound(LookupError):
    def __init__(self, build_id: int) -> None:
        super().__init__(f"no build with id {build_id}")
        self.build_id = build_id


SET_KINDS = ("submit", "git")

# Attempt outcomes.
OUTCOME_RESULT = "result"
OUTCOME_EXPIRED = "expired"
OUTCOME_GIVEN_UP = "given-up"


# --------------------------------------------------------------------------- schema

metadata = sa.MetaData()

schema_version_table = sa.Table(
    "bbot_schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.Double, nullable=False),
)

build_sets = sa.Table(
    "bbot_build_sets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("repository_url", sa.Text, nullable=False),
    sa.Column("ref", sa.Text),
    sa.Column("commit", sa.Text),
    sa.Column("package_name", sa.Text, nullable=False),
    sa.Column("package_version", sa.Text, nullable=False),
    sa.Column("author_name", sa.Text),
    sa.Column("author_email", sa.Text),
    sa.Column("submitter_email", sa.Text),
    sa.Column("created_at", sa.Double, nullable=False),
)

builds = sa.Table(
    "bbot_builds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("set_id", sa.Integer, sa.ForeignKey("bbot_build_sets.id"), nullable=False),
    sa.Column("package_name", sa.Text, nullable=False),
    sa.Column("package_version", sa.Text, nullable=False),
    sa.Column("configuration", sa.Text, nullable=False),
    sa.Column("machine_pattern", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("config_args", sa.Text, nullable=False),
    sa.Column("warning_regex", sa.Text, nullable=False),  # JSON list of strings
    sa.Column("package_config", sa.Text, nullable=False),
    sa.Column("toolchain_name", sa.Text, nullable=False),
    sa.Column("toolchain_version", sa.Text, nullable=False),
    sa.Column("tenant", sa.Text, nullable=False, default=""),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16)),
    sa.Column("attempt", sa.Integer, nullable=False, default=0),
    sa.Column("session", sa.Text),
    sa.Column("lease_deadline", sa.Double),
    sa.Column("agent", sa.Text),
    sa.Column("machine_name", sa.Text),
    sa.Column("machine_summary", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("issued_at", sa.Double),
    sa.Column("finished_at", sa.Double),
    sa.Column("forced", sa.Boolean, nullable=False, default=False),
    sa.Column("worker_checksum", sa.Text),
    sa.Column("dependency_checksum", sa.Text),
    sa.Index("bbot_builds_state", "state", "lease_deadline"),
    sa.Index("bbot_builds_set", "set_id"),
    sa.Index("bbot_builds_package", "package_name", "configuration"),
)

operations = sa.Table(
    "bbot_operations",
    metadata,
    sa.Column("build_id", sa.Integer, sa.ForeignKey("bbot_builds.id"), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("log", sa.LargeBinary, nullable=False),  # zlib-compressed UTF-8
)

attempts = sa.Table(
    "bbot_attempts",
    metadata,
    sa.Column("build_id", sa.Integer, sa.ForeignKey("bbot_builds.id"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("session", sa.Text, nullable=False, unique=True),
    sa.Column("issued_at", sa.Double, nullable=False),
    sa.Column("deadline", sa.Double, nullable=False),
    sa.Column("ended_at", sa.Double),
    sa.Column("outcome", sa.String(16)),
    sa.Column("agent", sa.Text),
    sa.Column("machine", sa.Text),
    sa.Column("detail", sa.Text),
    sa.Column("metrics", sa.Text, nullable=False, default="{}"),  # JSON object
    sa.Column("task", sa.LargeBinary, nullable=False),  # zlib-compressed task manifest
)

counters_table = sa.Table(
    "bbot_counters",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)


def _compress(text: str) -> bytes:
    return zlib.compress(text.encode("utf-8"))


def _decompress(data: bytes) -> str:
    return zlib.decompress(data).decode("utf-8", errors="replace")


_E = TypeVar("_E", Status, BuildState)


def _parse_enum(kind: type[_E], value: str | _E, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(s.value for s in kind)
        raise ValueError(f"unknown {what} '{value}': expected one of {allowed}") from None


# --------------------------------------------------------------------------- the store


class Store:
    """All of the controller's persistent state; safe to use from several threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = _create_engine(url)
        # An in-memory SQLite database is one shared connection: serialise its use.
        self._memory_lock: threading.RLock | None = (
            threading.RLock() if isinstance(self._engine.pool, StaticPool) else None
        )
        self._create_schema()

    def close(self) -> None:
        self._engine.dispose()

    # ----------------------------------------------------------------- transactions

    @contextlib.contextmanager
    def _tx(self, *, write: bool) -> Iterator[Connection]:
        lock = self._memory_lock or contextlib.nullcontext()
        with lock, self._engine.connect() as conn:
            if write:
                # Read by the SQLite "begin" hook: take the write lock up front, so a
                # read-then-write transaction never fails half way on a lock upgrade.
                conn = conn.execution_options(bbot_write=True)
            with conn.begin():
                yield conn

    def _create_schema(self) -> None:
        with self._tx(write=True) as conn:
            metadata.create_all(conn, checkfirst=True)
            current = conn.execute(sa.select(sa.func.max(schema_version_table.c.version)))
            version = current.scalar()
            if version is None:
                conn.execute(
                    schema_version_table.insert().values(
                        version=SCHEMA_VERSION, applied_at=time.time()
                    )
                )
            elif version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"store {_safe_url(self.url)} has schema version {version}, newer than "
                    f"this bbot's {SCHEMA_VERSION}: upgrade bbot"
                )

    # ----------------------------------------------------------------- build sets and builds

    def add_build_set(self, new: NewBuildSet) -> int:
        if new.kind not in SET_KINDS:
            raise ValueError(f"unknown build set kind '{new.kind}': expected one of "
                             f"{', '.join(SET_KINDS)}")
        with self._tx(write=True) as conn:
            result = conn.execute(
                build_sets.insert().values(
                    kind=new.kind,
                    source=new.source,
                    repository_url=new.repository_url,
                    ref=new.ref,
                    commit=new.commit,
                    package_name=new.package_name,
                    package_version=new.package_version,
                    author_name=new.author_name,
                    author_email=new.author_email,
                    submitter_email=new.submitter_email,
                    created_at=time.time(),
                )
            )
            return _new_id(result)

    def add_builds(self, set_id: int, new_builds: Sequence[NewBuild]) -> list[int]:
        now = time.time()
        ids: list[int] = []
        with self._tx(write=True) as conn:
            the_set = conn.execute(
                sa.select(build_sets.c.package_name, build_sets.c.package_version).where(
                    build_sets.c.id == set_id
                )
            ).first()
            if the_set is None:
                raise LookupError(f"no build set with id {set_id}")
            for new in new_builds:
                result = conn.execute(
                    builds.insert().values(
                        set_id=set_id,
                        package_name=the_set.package_name,
                        package_version=the_set.package_version,
                        configuration=new.configuration,
                        machine_pattern=new.machine_pattern,
                        target=new.target,
                        config_args=new.config_args,
                        warning_regex=json.dumps(list(new.warning_regex)),
                        package_config=new.package_config,
                        toolchain_name=new.toolchain_name,
                        toolchain_version=new.toolchain_version,
                        tenant="",
                        state=BuildState.QUEUED.value,
                        attempt=0,
                        created_at=now,
                        forced=False,
                    )
                )
                ids.append(_new_id(result))
        return ids

    # ----------------------------------------------------------------- the lease

    def _lock_build(self, conn: Connection, build_id: int) -> RowMapping:
        row = (
            conn.execute(sa.select(builds).where(builds.c.id == build_id).with_for_update())
            .mappings()
            .first()
        )
        if row is None:
            raise BuildNotFound(build_id)
        return row

    def issue(self, build_id: int, session: str, deadline: float, task_text: str) -> int:
        """QUEUED -> LEASED under ``session``; returns the attempt number."""
        now = time.time()
        with self._tx(write=True) as conn:
            row = self._lock_build(conn, build_id)
            state = next_state(BuildState(row["state"]), LeaseEvent.ISSUE)
            number = int(row["attempt"]) + 1
            conn.execute(
                builds.update()
                .where(builds.c.id == build_id)
                .values(
                    state=state.value,
                    attempt=number,
                    session=session,
                    lease_deadline=deadline,
                    issued_at=now,
                )
            )
            conn.execute(
                attempts.insert().values(
                    build_id=build_id,
                    number=number,
                    session=session,
                    issued_at=now,
                    deadline=deadline,
                    metrics="{}",
                    task=_compress(task_text),
                )
            )
            return number

    def expire(self, build_id: int, session: str, detail: str) -> bool:
        """LEASED -> QUEUED when ``session`` is still the current one; False otherwise."""
        now = time.time()
        with self._tx(write=True) as conn:
            row = self._lock_build(conn, build_id)
            if row["state"] != BuildState.LEASED.value or row["session"] != session:
                return False
            state = next_state(BuildState(row["state"]), LeaseEvent.EXPIRE)
            conn.execute(
                builds.update()
                .where(builds.c.id == build_id)
                .values(state=state.value, lease_deadline=None)
            )
            conn.execute(
                attempts.update()
                .where(attempts.c.build_id == build_id, attempts.c.session == session)
                .values(ended_at=now, outcome=OUTCOME_EXPIRED, detail=detail)
            )
            return True

    def give_up(self, build_id: int, detail: str) -> None:
        """End the build ``abnormal`` with ``detail`` as its reason (from QUEUED or LEASED)."""
        now = time.time()
        with self._tx(write=True) as conn:
            row = self._lock_build(conn, build_id)
            previous = BuildState(row["state"])
            state = next_state(previous, LeaseEvent.GIVE_UP)
            conn.execute(
                builds.update()
                .where(builds.c.id == build_id)
                .values(
                    state=state.value,
                    status=Status.ABNORMAL.value,
                    reason=detail,
                    lease_deadline=None,
                    finished_at=now,
                )
            )
            if previous is BuildState.LEASED:
                conn.execute(
                    attempts.update()
                    .where(attempts.c.build_id == build_id, attempts.c.session == row["session"])
                    .values(ended_at=now, outcome=OUTCOME_GIVEN_UP, detail=detail)
                )

    def record_result(
        self,
        session: str,
        result: Result,
        *,
        agent: str | None = None,
        machine_name: str | None = None,
        machine_summary: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> ResultOutcome:
        """Store ``result`` for ``session`` when it is the build's current lease."""
        now = time.time()
        with self._tx(write=True) as conn:
            outcome = self._judge_result(conn, session, result)
            if outcome is not ResultOutcome.ACCEPTED:
                self._bump(conn, f"results_dropped_{outcome.value}", 1)
                return outcome
            attempt = conn.execute(
                sa.select(attempts.c.build_id).where(attempts.c.session == session)
            ).one()
            build_id = int(attempt.build_id)
            row = self._lock_build(conn, build_id)
            state = next_state(BuildState(row["state"]), LeaseEvent.RESULT)
            conn.execute(
                builds.update()
                .where(builds.c.id == build_id)
                .values(
                    state=state.value,
                    status=Status(result.status).value,
                    lease_deadline=None,
                    finished_at=now,
                    reason=None,
                    agent=agent,
                    machine_name=machine_name,
                    machine_summary=machine_summary,
                    worker_checksum=result.worker_checksum,
                    dependency_checksum=result.dependency_checksum,
                )
            )
            conn.execute(operations.delete().where(operations.c.build_id == build_id))
            if result.results:
                conn.execute(
                    operations.insert(),
                    [
                        {
                            "build_id": build_id,
                            "position": position,
                            "name": op.operation,
                            "status": Status(op.status).value,
                            "log": _compress(op.log),
                        }
                        for position, op in enumerate(result.results)
                    ],
                )
            conn.execute(
                attempts.update()
                .where(attempts.c.session == session)
                .values(
                    ended_at=now,
                    outcome=OUTCOME_RESULT,
                    agent=agent,
                    machine=machine_name,
                    metrics=json.dumps({k: float(v) for k, v in (metrics or {}).items()}),
                )
            )
            return ResultOutcome.ACCEPTED

    def _judge_result(self, conn: Connection, session: str, result: Result) -> ResultOutcome:
        owner = conn.execute(
            sa.select(attempts.c.build_id).where(attempts.c.session == session)
        ).scalar()
        if owner is None:
            return ResultOutcome.UNKNOWN
        row = self._lock_build(conn, int(owner))
        # Read the attempt only under the build's lock: a concurrent copy of this
        # result may have just been committed.
        outcome = conn.execute(
            sa.select(attempts.c.outcome).where(attempts.c.session == session)
        ).scalar()
        if (result.name, result.version) != (row["package_name"], row["package_version"]):
            return ResultOutcome.MISMATCH
        if outcome == OUTCOME_RESULT:
            return ResultOutcome.DUPLICATE
        if row["state"] != BuildState.LEASED.value or row["session"] != session:
            return ResultOutcome.STALE
        return ResultOutcome.ACCEPTED

    def set_reason(self, build_id: int, reason: str | None) -> None:
        with self._tx(write=True) as conn:
            updated = conn.execute(
                builds.update().where(builds.c.id == build_id).values(reason=reason)
            )
            if updated.rowcount == 0:
                raise BuildNotFound(build_id)

    # ----------------------------------------------------------------- queries

    def _select_builds(self) -> sa.Select[Any]:
        return sa.select(
            builds,
            build_sets.c.kind,
            build_sets.c.source,
            build_sets.c.repository_url,
            build_sets.c.ref,
            build_sets.c.commit,
            build_sets.c.author_name,
            build_sets.c.author_email,
            build_sets.c.submitter_email,
        ).join(build_sets, builds.c.set_id == build_sets.c.id)

    def _fetch(self, query: sa.Select[Any]) -> list[BuildRow]:
        with self._tx(write=False) as conn:
            return [_build_row(m) for m in conn.execute(query).mappings()]

    def _fetch_one(self, query: sa.Select[Any]) -> BuildRow | None:
        found = self._fetch(query.limit(1))
        return found[0] if found else None

    def queued_builds(self, limit: int = 100) -> list[BuildRow]:
        query = (
            self._select_builds()
            .where(builds.c.state == BuildState.QUEUED.value)
            .order_by(builds.c.id)
            .limit(limit)
        )
        return self._fetch(query)

    def expired_leases(self, now: float) -> list[BuildRow]:
        query = (
            self._select_builds()
            .where(builds.c.state == BuildState.LEASED.value, builds.c.lease_deadline <= now)
            .order_by(builds.c.lease_deadline)
        )
        return self._fetch(query)

    def get_build(self, build_id: int) -> BuildRow | None:
        return self._fetch_one(self._select_builds().where(builds.c.id == build_id))

    def build_by_session(self, session: str) -> BuildRow | None:
        owner = sa.select(attempts.c.build_id).where(attempts.c.session == session)
        return self._fetch_one(self._select_builds().where(builds.c.id.in_(owner)))

    def _filters(
        self,
        package: str | None,
        configuration: str | None,
        status: str | Status | None,
        state: str | BuildState | None,
        set_id: int | None,
    ) -> list[sa.ColumnElement[bool]]:
        where: list[sa.ColumnElement[bool]] = []
        if package:
            where.append(builds.c.package_name == package)
        if configuration:
            where.append(builds.c.configuration == configuration)
        if status:
            where.append(builds.c.status == _parse_enum(Status, status, "status").value)
        if state:
            where.append(builds.c.state == _parse_enum(BuildState, state, "state").value)
        if set_id is not None:
            where.append(builds.c.set_id == set_id)
        return where

    def list_builds(
        self,
        *,
        package: str | None = None,
        configuration: str | None = None,
        status: str | Status | None = None,
        state: str | BuildState | None = None,
        set_id: int | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[BuildRow]:
        if limit < 0 or offset < 0:
            raise ValueError(f"limit ({limit}) and offset ({offset}) must not be negative")
        where = self._filters(package, configuration, status, state, set_id)
        query = (
            self._select_builds()
            .where(*where)
            .order_by(builds.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return self._fetch(query)

    def count_builds(
        self,
        *,
        package: str | None = None,
        configuration: str | None = None,
        status: str | Status | None = None,
        state: str | BuildState | None = None,
        set_id: int | None = None,
    ) -> int:
        where = self._filters(package, configuration, status, state, set_id)
        with self._tx(write=False) as conn:
            query = sa.select(sa.func.count()).select_from(builds).where(*where)
            return int(conn.execute(query).scalar_one())

    def operations(self, build_id: int) -> list[OperationRow]:
        with self._tx(write=False) as conn:
            rows = conn.execute(
                sa.select(operations.c.name, operations.c.status, operations.c.log)
                .where(operations.c.build_id == build_id)
                .order_by(operations.c.position)
            )
            return [
                OperationRow(name=r.name, status=Status(r.status), log=_decompress(r.log))
                for r in rows
            ]

    def attempts(self, build_id: int) -> list[AttemptRow]:
        with self._tx(write=False) as conn:
            rows = conn.execute(
                sa.select(attempts)
                .where(attempts.c.build_id == build_id)
                .order_by(attempts.c.number)
            )
            return [
                AttemptRow(
                    number=r.number,
                    session=r.session,
                    issued_at=r.issued_at,
                    ended_at=r.ended_at,
                    outcome=r.outcome,
                    agent=r.agent,
                    machine=r.machine,
                    detail=r.detail,
                    metrics={str(k): float(v) for k, v in json.loads(r.metrics).items()},
                )
                for r in rows
            ]

    def task_text(self, build_id: int, number: int) -> str | None:
        """The task manifest sent with attempt ``number`` of the build."""
        with self._tx(write=False) as conn:
            data = conn.execute(
                sa.select(attempts.c.task).where(
                    attempts.c.build_id == build_id, attempts.c.number == number
                )
            ).scalar()
            return None if data is None else _decompress(data)

    def find_by_key(self, key: BuildKey) -> BuildRow | None:
        query = (
            self._select_builds()
            .where(
                builds.c.package_name == key.package_name,
                builds.c.package_version == key.package_version,
                builds.c.target == key.target,
                builds.c.configuration == key.target_config,
                builds.c.package_config == key.package_config,
                builds.c.toolchain_name == key.toolchain_name,
                builds.c.toolchain_version == key.toolchain_version,
                builds.c.tenant == key.tenant,
            )
            .order_by(builds.c.id.desc())
        )
        return self._fetch_one(query)

    def previous_build(self, build: BuildRow) -> BuildRow | None:
        """The latest built build before ``build`` of the same package, branch and config."""
        query = (
            self._select_builds()
            .where(
                builds.c.id < build.id,
                builds.c.state == BuildState.BUILT.value,
                builds.c.package_name == build.package_name,
                builds.c.configuration == build.configuration,
                build_sets.c.repository_url == build.repository_url,
                build_sets.c.ref.is_not_distinct_from(build.ref),
            )
            .order_by(builds.c.id.desc())
        )
        return self._fetch_one(query)

    def set_builds(self, set_id: int) -> list[BuildRow]:
        return self._fetch(
            self._select_builds().where(builds.c.set_id == set_id).order_by(builds.c.id)
        )

    def unfinished_count(self, set_ids: Iterable[int]) -> int:
        ids = list(set_ids)
        if not ids:
            return 0
        with self._tx(write=False) as conn:
            query = (
                sa.select(sa.func.count())
                .select_from(builds)
                .where(builds.c.set_id.in_(ids), builds.c.state != BuildState.BUILT.value)
            )
            return int(conn.execute(query).scalar_one())

    # ----------------------------------------------------------------- counters

    def counters(self) -> dict[str, int]:
        with self._tx(write=False) as conn:
            rows = conn.execute(sa.select(counters_table.c.name, counters_table.c.value))
            return {r.name: int(r.value) for r in rows}

    def bump(self, name: str, by: int = 1) -> None:
        with self._tx(write=True) as conn:
            self._bump(conn, name, by)

    def _bump(self, conn: Connection, name: str, by: int) -> None:
        insert: Any
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif conn.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - only the two dialects above are supported
            raise RuntimeError(f"unsupported database dialect {conn.dialect.name}")
        statement = insert(counters_table).values(name=name, value=by)
        statement = statement.on_conflict_do_update(
            index_elements=[counters_table.c.name],
            set_={"value": counters_table.c.value + by},
        )
        conn.execute(statement)


# --------------------------------------------------------------------------- helpers


def _build_row(m: RowMapping) -> BuildRow:
    return BuildRow(
        id=m["id"],
        set_id=m["set_id"],
        package_name=m["package_name"],
        package_version=m["package_version"],
        configuration=m["configuration"],
        machine_pattern=m["machine_pattern"],
        target=m["target"],
        config_args=m["config_args"],
        warning_regex=[str(r) for r in json.loads(m["warning_regex"])],
        package_config=m["package_config"],
        toolchain_name=m["toolchain_name"],
        toolchain_version=m["toolchain_version"],
        tenant=m["tenant"],
        state=BuildState(m["state"]),
        status=None if m["status"] is None else Status(m["status"]),
        attempt=m["attempt"],
        session=m["session"],
        lease_deadline=m["lease_deadline"],
        agent=m["agent"],
        machine_name=m["machine_name"],
        machine_summary=m["machine_summary"],
        reason=m["reason"],
        created_at=m["created_at"],
        issued_at=m["issued_at"],
        finished_at=m["finished_at"],
        forced=bool(m["forced"]),
        kind=m["kind"],
        source=m["source"],
        repository_url=m["repository_url"],
        ref=m["ref"],
        commit=m["commit"],
        author_name=m["author_name"],
        author_email=m["author_email"],
        submitter_email=m["submitter_email"],
    )


def _new_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - every insert here has an integer primary key
        raise RuntimeError("the database returned no id for a new row")
    return int(key[0])


def _safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable URL>"


def _create_engine(url: str) -> Engine:
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError(
            f"invalid store URL '{url}': expected sqlite:///<path> or "
            "postgresql+psycopg://<user>@<host>/<database>"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return sa.create_engine(parsed, pool_pre_ping=True)
    if backend != "sqlite":
        raise ValueError(
            f"unsupported store URL '{_safe_url(url)}': expected sqlite:///<path> or "
            "postgresql+psycopg://<user>@<host>/<database>"
        )
    in_memory = parsed.database in (None, "", ":memory:")
    options: dict[str, Any] = {
        "connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    }
    if in_memory:
        options["poolclass"] = StaticPool
    engine = sa.create_engine(parsed, **options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below issue BEGIN itself (pysqlite's own
        # implicit transactions do not cover reads and cannot take the write lock).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("bbot_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
