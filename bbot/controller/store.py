"""The controller's store: build sets, builds, their attempts, results and logs.

One SQLAlchemy Core schema that runs on SQLite (the embedded default, a file
in WAL mode) and on PostgreSQL (``postgresql+psycopg://...``). Every change
of a build's state goes through ``bbot.controller.lease.next_state``, inside
one transaction that locks the build row, so two threads (or two controller
processes on PostgreSQL) can never both move the same build.

Logs are stored zlib-compressed; everything else is plain columns so the
pages can filter and count in SQL.

The schema is versioned: ``MIGRATIONS`` lists every step after the first
schema, and opening a store brings an older database up to ``SCHEMA_VERSION``
(one transaction per step, under a lock so two processes starting at once do
not both migrate). The ``*_many``/``record_results`` methods do a whole batch
in one transaction with a few set-wise queries, for throughput.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateColumn

from bbot.controller.lease import BuildState, LeaseEvent, next_state
from bbot.manifest import Result
from bbot.manifest.status import Status
from bbot.wire import BuildKey

log = logging.getLogger(__name__)

# How long a SQLite writer waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_MS = 30_000
CHECKPOINT_INTERVAL = 1.0  # seconds between SQLite WAL checkpoints


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
    tenant: str = ""


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
    # The first attempt of the current round: a forced rebuild starts a new round, with
    # max_attempts of its own.
    first_attempt: int = 1

    @property
    def round_attempts(self) -> int:
        """Attempts made in the current round (the ones ``max_attempts`` bounds)."""
        return self.attempt - self.first_attempt + 1

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
    outcome: str | None  # "result" | "expired" | "given-up" | "failed"; None while the lease is out
    agent: str | None
    machine: str | None
    detail: str | None
    metrics: dict[str, float]
    infrastructure: bool = False  # it ended by an infrastructure failure: the agent, not the package, failed


class ResultOutcome(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # this session's result is already stored
    STALE = "stale"  # a session of the build that is no longer current
    UNKNOWN = "unknown"  # no such session
    MISMATCH = "mismatch"  # the result's name/version differ from the build's


class FailOutcome(enum.Enum):
    RETRY = "retry"  # the attempt is recorded as failed and the build is queued again
    GAVE_UP = "gave-up"  # that was the last allowed attempt: the build ended abnormal
    STALE = "stale"  # not the build's current lease, or no such session: nothing changed


class ForceOutcome(enum.Enum):
    FORCED = "forced"  # queued again (from built, or from building with its session ended)
    QUEUED = "queued"  # not built yet: nothing to rebuild (brep answers 404)


@dataclass(frozen=True)
class HttpLease:
    """A task handed to an agent over HTTP (brep's ?build-task): who took it, and its challenge.

    The task may be another controller's (a shared task queue): ``reply_to`` names the
    results queue its result goes to.
    """

    session: str
    agent: str
    reply_to: str
    machine_name: str
    machine_summary: str
    fingerprint: str | None = None
    challenge: str | None = None
    handed_at: float = 0.0


@dataclass(frozen=True)
class UpstreamTask:
    """A task this controller took from an upper controller (brep or bbot), to build below."""

    url: str  # the upper controller's root URL (polled with ?build-task)
    session: str  # the upper controller's session: opaque, sent back with the result
    result_url: str
    task_text: str
    challenge: str | None = None
    agent_checksum: str | None = None


@dataclass(frozen=True)
class UpstreamResult:
    """A finished build to report to the upper controller it came from."""

    build_id: int
    task: UpstreamTask
    status: Status
    operations: list[OperationRow]
    worker_checksum: str | None
    dependency_checksum: str | None


@dataclass(frozen=True)
class IssueItem:
    """One build to lease in ``Store.issue_many``: the arguments of ``Store.issue``."""

    build_id: int
    session: str
    deadline: float
    task_text: str


@dataclass(frozen=True)
class ResultItem:
    """One result for ``Store.record_results``: the arguments of ``Store.record_result``."""

    session: str
    result: Result
    agent: str | None = None
    machine_name: str | None = None
    machine_summary: str | None = None
    metrics: Mapping[str, float] | None = None


# A build's id, its set's kind, its status, the author's and the submitter's email.
MailFacts = tuple[int, str, Status | None, str | None, str | None]


class SchemaError(RuntimeError):
    """The database's schema is not one this bbot can use (newer, foreign, or a migration failed)."""


class BuildNotFound(LookupError):
    def __init__(self, build_id: int) -> None:
        super().__init__(f"no build with id {build_id}")
        self.build_id = build_id


SET_KINDS = ("submit", "git", "upstream")  # "upstream": a task taken from an upper controller

# Attempt outcomes.
OUTCOME_RESULT = "result"
OUTCOME_EXPIRED = "expired"
OUTCOME_GIVEN_UP = "given-up"
OUTCOME_FAILED = "failed"

# The operation that tells, in a build bbot gave up on, how each attempt ended.
BBOT_OPERATION = "bbot"

# Counter bumped when an infrastructure failure arrives for a lease that is not current.
COUNTER_FAILURE_STALE = "results_stale"

# Bound on the values in one IN (...) list: SQLite caps the parameters of one statement.
IN_CHUNK = 500


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
    # Since schema version 3 (so the last column).
    sa.Column("first_attempt", sa.Integer, nullable=False, default=1, server_default=sa.text("1")),
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
    # Since schema version 2 (so the last column, as ALTER TABLE puts it).
    sa.Column("infrastructure", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
)

# Since schema version 3: tasks handed out over HTTP, by session.
http_leases = sa.Table(
    "bbot_http_leases",
    metadata,
    sa.Column("session", sa.Text, primary_key=True),
    sa.Column("agent", sa.Text, nullable=False),
    sa.Column("reply_to", sa.Text, nullable=False),
    sa.Column("machine_name", sa.Text, nullable=False),
    sa.Column("machine_summary", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.Text),
    sa.Column("challenge", sa.Text),
    sa.Column("handed_at", sa.Double, nullable=False),
    sa.Index("bbot_http_leases_handed", "handed_at"),
)

# Since schema version 3: builds whose task came from an upper controller.
upstream = sa.Table(
    "bbot_upstream",
    metadata,
    sa.Column("build_id", sa.Integer, sa.ForeignKey("bbot_builds.id"), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("session", sa.Text, nullable=False, unique=True),
    sa.Column("result_url", sa.Text, nullable=False),
    sa.Column("challenge", sa.Text),
    sa.Column("agent_checksum", sa.Text),
    sa.Column("task", sa.LargeBinary, nullable=False),  # zlib-compressed task manifest, as received
    sa.Column("posted_at", sa.Double),  # the result reached the upper controller
    sa.Column("post_outcome", sa.Text),  # what it answered, or why it was given up
)

counters_table = sa.Table(
    "bbot_counters",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)


# --------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    """One step of the schema from ``version - 1`` to ``version``.

    ``apply`` runs inside the step's own transaction (SQLite and PostgreSQL both
    have transactional DDL), so a step that fails leaves the previous version.
    """

    version: int
    description: str
    apply: Callable[[Connection], None]


def _add_column(conn: Connection, table: str, column: sa.Column[Any]) -> None:
    # CreateColumn renders the type and default in the connection's own dialect
    # (BOOLEAN DEFAULT false on PostgreSQL, BOOLEAN DEFAULT 0 on SQLite).
    spec = CreateColumn(column).compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {spec}")


def _v2_attempt_infrastructure(conn: Connection) -> None:
    # Spelled out rather than taken from ``attempts``: this step must keep doing
    # what it does even when a later version changes the table.
    _add_column(
        conn,
        "bbot_attempts",
        sa.Column("infrastructure", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def _v3_http_agents_and_layers(conn: Connection) -> None:
    _add_column(
        conn,
        "bbot_builds",
        sa.Column("first_attempt", sa.Integer, nullable=False, server_default=sa.text("1")),
    )
    # New tables: created from their definitions, which this step is the first to use.
    http_leases.create(conn)
    upstream.create(conn)


# The schema the first bbot created; every later version is a migration below.
BASE_SCHEMA_VERSION = 1

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "bbot_attempts.infrastructure: the attempt ended because the agent, not the package, failed",
        _v2_attempt_infrastructure,
    ),
    Migration(
        3,
        "HTTP agents and controller layers: bbot_http_leases, bbot_upstream, bbot_builds.first_attempt",
        _v3_http_agents_and_layers,
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version if MIGRATIONS else BASE_SCHEMA_VERSION


def _check_migrations(migrations: Sequence[Migration]) -> None:
    found = [m.version for m in migrations]
    expected = list(range(BASE_SCHEMA_VERSION + 1, BASE_SCHEMA_VERSION + 1 + len(migrations)))
    if found != expected:
        raise RuntimeError(
            f"bbot.controller.store.MIGRATIONS has versions {found}: number them {expected}, "
            "consecutive after the base schema"
        )


_check_migrations(MIGRATIONS)

# Key space of the PostgreSQL advisory lock taken while checking or migrating the schema ("bbot").
_PG_SCHEMA_LOCK = 0x62626F74


def _lock_schema(conn: Connection) -> None:
    """Serialise schema checks and migrations among processes opening the same store."""
    if conn.dialect.name == "postgresql":
        # Held until the transaction ends. Keyed by the schema too, so stores in
        # different schemas of one database do not wait for each other.
        conn.execute(
            sa.text(
                "SELECT pg_advisory_xact_lock(CAST(:space AS integer), "
                "hashtext(coalesce(current_schema(), '')))"
            ),
            {"space": _PG_SCHEMA_LOCK},
        )
    # SQLite: the transaction began with BEGIN IMMEDIATE, which already shuts out
    # every other writer until it ends.


def _compress(text: str) -> bytes:
    return zlib.compress(text.encode("utf-8"))


def _decompress(data: bytes) -> str:
    return zlib.decompress(data).decode("utf-8", errors="replace")


_E = TypeVar("_E", Status, BuildState)
_V = TypeVar("_V")


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
        try:
            self._open_schema()
        except BaseException:
            self._engine.dispose()
            raise
        self._closing = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if self._engine.dialect.name == "sqlite" and self._memory_lock is None:
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="store-checkpoint",
                                                  daemon=True)
            self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """Copy the SQLite write-ahead log into the database every second, beside the writers.

        PASSIVE never waits for readers or writers; what it cannot copy now, the next one does.
        """
        while not self._closing.wait(CHECKPOINT_INTERVAL):
            try:
                self._checkpoint("PASSIVE")
            except Exception:
                log.exception("SQLite checkpoint failed; retrying in %g s", CHECKPOINT_INTERVAL)

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join(timeout=30)
        if self._checkpointer is not None:
            with contextlib.suppress(Exception):
                self._checkpoint("TRUNCATE")  # leave a tidy database file
        self._engine.dispose()

    def _checkpoint(self, mode: str) -> None:
        # On the raw connection: outside any transaction (SQLAlchemy's would BEGIN first).
        raw = self._engine.raw_connection()
        try:
            raw.cursor().execute(f"PRAGMA wal_checkpoint({mode})")
        finally:
            raw.close()

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

    def _open_schema(self) -> None:
        """Create the schema in an empty database, or bring an older one up to SCHEMA_VERSION."""
        while True:
            # One transaction per step: the version is read again under the lock each
            # time, so a process that waited while another one migrated goes on from there.
            with self._tx(write=True) as conn:
                _lock_schema(conn)
                version = self._schema_version(conn)
                if version is None:
                    metadata.create_all(conn)
                    conn.execute(
                        schema_version_table.insert().values(version=SCHEMA_VERSION, applied_at=time.time())
                    )
                    return
                if version == SCHEMA_VERSION:
                    return
                if version > SCHEMA_VERSION:
                    raise SchemaError(
                        f"store {_safe_url(self.url)} has schema version {version}, newer than this "
                        f"bbot's {SCHEMA_VERSION}: a newer bbot has migrated it; upgrade bbot to one "
                        f"that knows schema version {version} (stores are never downgraded)"
                    )
                if version < BASE_SCHEMA_VERSION:
                    raise SchemaError(
                        f"store {_safe_url(self.url)} has schema version {version}, older than any "
                        f"bbot made ({BASE_SCHEMA_VERSION}): restore it from a backup or point bbot "
                        "at an empty database"
                    )
                step = MIGRATIONS[version - BASE_SCHEMA_VERSION]
                try:
                    step.apply(conn)
                except sa.exc.SQLAlchemyError as error:
                    raise SchemaError(
                        f"store {_safe_url(self.url)}: migration to schema version {step.version} "
                        f"({step.description}) failed, the store stays at version {version}: {error}"
                    ) from error
                conn.execute(
                    schema_version_table.insert().values(version=step.version, applied_at=time.time())
                )
            log.info("store %s: migrated to schema version %d: %s", _safe_url(self.url), step.version,
                     step.description)

    def _schema_version(self, conn: Connection) -> int | None:
        """The database's schema version; None when it holds no bbot table at all."""
        names = set(sa.inspect(conn).get_table_names())
        if schema_version_table.name not in names:
            ours = sorted(names & set(metadata.tables))
            if ours:
                raise SchemaError(
                    f"store {_safe_url(self.url)} has bbot tables ({', '.join(ours)}) but no "
                    f"{schema_version_table.name}: it was not made by bbot or is damaged; restore "
                    "it from a backup or point bbot at an empty database"
                )
            return None
        version = conn.execute(sa.select(sa.func.max(schema_version_table.c.version))).scalar()
        if version is None:
            raise SchemaError(
                f"store {_safe_url(self.url)}: {schema_version_table.name} is empty, so its schema "
                "version is unknown; restore it from a backup or point bbot at an empty database"
            )
        return int(version)

    # ----------------------------------------------------------------- build sets and builds

    def add_build_set(self, new: NewBuildSet) -> int:
        with self._tx(write=True) as conn:
            return self._insert_set(conn, new)

    def add_builds(self, set_id: int, new_builds: Sequence[NewBuild]) -> list[int]:
        with self._tx(write=True) as conn:
            return self._insert_builds(conn, set_id, new_builds)

    def _insert_set(self, conn: Connection, new: NewBuildSet) -> int:
        if new.kind not in SET_KINDS:
            raise ValueError(f"unknown build set kind '{new.kind}': expected one of "
                             f"{', '.join(SET_KINDS)}")
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

    def _insert_builds(self, conn: Connection, set_id: int, new_builds: Sequence[NewBuild]) -> list[int]:
        now = time.time()
        ids: list[int] = []
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
                    tenant=new.tenant,
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

    def _lock_builds(self, conn: Connection, build_ids: Iterable[int]) -> dict[int, RowMapping]:
        """Lock and read many builds; missing ids are left out.

        Rows are locked in id order (each chunk ordered, chunks ascending), so two
        batches on PostgreSQL cannot deadlock by taking the same rows in opposite orders.
        """
        found: dict[int, RowMapping] = {}
        for chunk in _chunks(sorted(set(build_ids))):
            query = sa.select(builds).where(builds.c.id.in_(chunk)).order_by(builds.c.id).with_for_update()
            for row in conn.execute(query).mappings():
                found[int(row["id"])] = row
        return found

    def issue(self, build_id: int, session: str, deadline: float, task_text: str) -> int:
        """QUEUED -> LEASED under ``session``; returns the attempt number."""
        with self._tx(write=True) as conn:
            row = self._lock_build(conn, build_id)
            next_state(BuildState(row["state"]), LeaseEvent.ISSUE)  # IllegalTransition unless queued
            number = int(row["attempt"]) + 1
            self._lease(conn, [(IssueItem(build_id, session, deadline, task_text), number)], time.time())
            return number

    def issue_many(self, items: Sequence[IssueItem]) -> list[int]:
        """Lease every item's build that is still queued, in one transaction.

        Returns the ids of the builds issued, in the items' order. A build that is
        not queued (any more), does not exist, or came earlier in ``items`` is
        skipped: that is the race with another scheduler pass, not an error.
        """
        if not items:
            return []
        with self._tx(write=True) as conn:
            rows = self._lock_builds(conn, (item.build_id for item in items))
            attempt = {build_id: int(row["attempt"]) for build_id, row in rows.items()
                       if row["state"] == BuildState.QUEUED.value}
            leases: list[tuple[IssueItem, int]] = []
            for item in items:
                if item.build_id in attempt:
                    leases.append((item, attempt.pop(item.build_id) + 1))
            self._lease(conn, leases, time.time())
            return [item.build_id for item, _ in leases]

    def _lease(self, conn: Connection, leases: Sequence[tuple[IssueItem, int]], now: float) -> None:
        """Write the leases (each item with its attempt number) of builds locked and checked queued."""
        if not leases:
            return
        leased = next_state(BuildState.QUEUED, LeaseEvent.ISSUE)
        conn.execute(
            builds.update().where(builds.c.id == sa.bindparam("b_id")),
            [
                {
                    "b_id": item.build_id,
                    "state": leased.value,
                    "attempt": number,
                    "session": item.session,
                    "lease_deadline": item.deadline,
                    "issued_at": now,
                    "reason": None,  # whatever it waited for, it is out now
                }
                for item, number in leases
            ],
        )
        conn.execute(
            attempts.insert(),
            [
                {
                    "build_id": item.build_id,
                    "number": number,
                    "session": item.session,
                    "issued_at": now,
                    "deadline": item.deadline,
                    "metrics": "{}",
                    "task": _compress(item.task_text),
                    "infrastructure": False,
                }
                for item, number in leases
            ],
        )

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
        """End the build ``abnormal`` with ``detail`` as its reason (from QUEUED or LEASED).

        When the build had attempts, its one operation "bbot" logs how each ended,
        then ``detail``.
        """
        now = time.time()
        with self._tx(write=True) as conn:
            row = self._lock_build(conn, build_id)
            previous = BuildState(row["state"])
            state = next_state(previous, LeaseEvent.GIVE_UP)
            if previous is BuildState.LEASED:
                conn.execute(
                    attempts.update()
                    .where(attempts.c.build_id == build_id, attempts.c.session == row["session"])
                    .values(ended_at=now, outcome=OUTCOME_GIVEN_UP, detail=detail)
                )
            self._end_abnormal(conn, build_id, state, reason=detail, last_line=detail, now=now)

    def fail_attempt(
        self, session: str, reason: str, *, agent: str | None, max_attempts: int
    ) -> FailOutcome:
        """End ``session``'s attempt by an infrastructure failure (the agent, not the package, failed).

        When ``session`` is the build's current lease, its attempt ends "failed"
        with ``reason``; then the build ends abnormal (GAVE_UP) if that was attempt
        ``max_attempts`` or later, else it is queued again (RETRY). Otherwise
        nothing changes but the "results_stale" counter (STALE).
        """
        if max_attempts < 1:
            raise ValueError(f"fail_attempt: max_attempts is {max_attempts}; it must be 1 or more")
        now = time.time()
        with self._tx(write=True) as conn:
            owner = conn.execute(
                sa.select(attempts.c.build_id).where(attempts.c.session == session)
            ).scalar()
            row = None if owner is None else self._lock_build(conn, int(owner))
            if row is None or row["state"] != BuildState.LEASED.value or row["session"] != session:
                self._bump(conn, COUNTER_FAILURE_STALE, 1)
                return FailOutcome.STALE
            build_id = int(row["id"])
            conn.execute(
                attempts.update()
                .where(attempts.c.build_id == build_id, attempts.c.session == session)
                .values(ended_at=now, outcome=OUTCOME_FAILED, infrastructure=True, detail=reason,
                        agent=agent)
            )
            number = int(row["attempt"]) - int(row["first_attempt"]) + 1  # attempts this round
            if number >= max_attempts:
                state = next_state(BuildState.LEASED, LeaseEvent.GIVE_UP)
                gave_up = f"gave up after {_attempts_text(number)}"
                self._end_abnormal(conn, build_id, state, last_line=gave_up, now=now,
                                   reason=f"infrastructure failure: {reason}; {gave_up}")
                return FailOutcome.GAVE_UP
            state = next_state(BuildState.LEASED, LeaseEvent.FAIL)
            conn.execute(
                builds.update()
                .where(builds.c.id == build_id)
                .values(
                    state=state.value,
                    session=None,
                    lease_deadline=None,
                    reason=f"retrying after an infrastructure failure: {reason}",
                )
            )
            return FailOutcome.RETRY

    def _end_abnormal(
        self, conn: Connection, build_id: int, state: BuildState, *, reason: str, last_line: str, now: float
    ) -> None:
        """End a locked build abnormal; its one operation "bbot" logs every attempt, then ``last_line``."""
        conn.execute(
            builds.update()
            .where(builds.c.id == build_id)
            .values(
                state=state.value,
                status=Status.ABNORMAL.value,
                reason=reason,
                lease_deadline=None,
                finished_at=now,
            )
        )
        conn.execute(operations.delete().where(operations.c.build_id == build_id))
        ended = conn.execute(
            sa.select(attempts.c.number, attempts.c.session, attempts.c.agent, attempts.c.outcome,
                      attempts.c.detail)
            .where(attempts.c.build_id == build_id)
            .order_by(attempts.c.number)
        ).all()
        if not ended:
            # Never issued (e.g. no machine matches): there is nothing to tell but the reason.
            return
        lines = [
            f"attempt {a.number} (agent {a.agent or 'unknown'}, session {a.session}): "
            f"{a.detail or a.outcome or 'no detail'}"
            for a in ended
        ]
        conn.execute(
            operations.insert().values(
                build_id=build_id,
                position=0,
                name=BBOT_OPERATION,
                status=Status.ABNORMAL.value,
                log=_compress("\n".join([*lines, last_line]) + "\n"),
            )
        )

    def renew(self, sessions: Sequence[str], agent: str, deadline: float) -> int:
        """Set the leases of ``sessions`` that are still current to end at ``deadline``; how many.

        An agent's heartbeat names the sessions it is building: from then on their
        leases last as long as it announces (shorter or longer than the first
        lease, which only covers the wait for an agent), and its name goes on the
        attempt. A session that is no longer current (expired, built) is left alone.
        """
        renewed = 0
        with self._tx(write=True) as conn:
            for chunk in _chunks(sorted(set(sessions))):
                renewed += conn.execute(
                    builds.update()
                    .where(builds.c.session.in_(chunk), builds.c.state == BuildState.LEASED.value)
                    .values(agent=agent, lease_deadline=deadline)
                ).rowcount
                conn.execute(
                    attempts.update()
                    .where(attempts.c.session.in_(chunk), attempts.c.ended_at.is_(None))
                    .values(agent=agent)
                )
        return renewed

    def build_ids(self, sessions: Sequence[str]) -> dict[str, int]:
        """The build of each known session."""
        with self._tx(write=False) as conn:
            found = _by_session(conn, sorted(set(sessions)), attempts.c.build_id)
        return {s: int(b) for s, b in found.items()}

    def failed_agents(self, build_id: int) -> list[str]:
        """The agents whose attempts at the build ended by an infrastructure failure, first failure first."""
        with self._tx(write=False) as conn:
            rows = conn.execute(
                sa.select(attempts.c.agent)
                .where(attempts.c.build_id == build_id, attempts.c.infrastructure,
                       attempts.c.agent.is_not(None))
                .order_by(attempts.c.number)
            )
            return list(dict.fromkeys(str(r.agent) for r in rows))

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
        item = ResultItem(session, result, agent, machine_name, machine_summary, metrics)
        return self.record_results([item])[0]

    def record_results(self, items: Sequence[ResultItem]) -> list[ResultOutcome]:
        """``record_result`` for every item, in order, in one transaction; their outcomes.

        An item judged after an earlier one of the same batch sees it: the same
        session twice is ACCEPTED then DUPLICATE. Every dropped result bumps the
        counter "results_dropped_<outcome>".
        """
        if not items:
            return []
        now = time.time()
        sessions = sorted({item.session for item in items})
        with self._tx(write=True) as conn:
            # A session's build never changes, so this read needs no lock.
            owner = {s: int(b) for s, b in _by_session(conn, sessions, attempts.c.build_id).items()}
            rows = self._lock_builds(conn, owner.values())
            # Read the attempts' outcomes only under the builds' locks: a concurrent
            # copy of one of these results may have just been committed.
            ended: dict[str, Any] = _by_session(conn, sessions, attempts.c.outcome)
            current = {build_id: (row["state"], row["session"]) for build_id, row in rows.items()}

            outcomes: list[ResultOutcome] = []
            accepted: list[tuple[int, ResultItem]] = []
            for item in items:
                build_id = owner.get(item.session)
                row = None if build_id is None else rows.get(build_id)
                if build_id is None or row is None:
                    outcome = ResultOutcome.UNKNOWN
                elif (item.result.name, item.result.version) != (row["package_name"], row["package_version"]):
                    outcome = ResultOutcome.MISMATCH
                elif ended.get(item.session) == OUTCOME_RESULT:
                    outcome = ResultOutcome.DUPLICATE
                elif current[build_id] != (BuildState.LEASED.value, item.session):
                    outcome = ResultOutcome.STALE
                else:
                    outcome = ResultOutcome.ACCEPTED
                    current[build_id] = (BuildState.BUILT.value, item.session)
                    ended[item.session] = OUTCOME_RESULT
                    accepted.append((build_id, item))
                outcomes.append(outcome)

            self._store_results(conn, accepted, now)
            dropped = Counter(o.value for o in outcomes if o is not ResultOutcome.ACCEPTED)
            for name, count in sorted(dropped.items()):
                self._bump(conn, f"results_dropped_{name}", count)
            return outcomes

    def _store_results(
        self, conn: Connection, accepted: Sequence[tuple[int, ResultItem]], now: float
    ) -> None:
        """Write accepted results (each with its locked, leased build's id) with executemany."""
        if not accepted:
            return
        built = next_state(BuildState.LEASED, LeaseEvent.RESULT)
        conn.execute(
            builds.update().where(builds.c.id == sa.bindparam("b_id")),
            [
                {
                    "b_id": build_id,
                    "state": built.value,
                    "status": Status(item.result.status).value,
                    "lease_deadline": None,
                    "finished_at": now,
                    "reason": None,
                    "agent": item.agent,
                    "machine_name": item.machine_name,
                    "machine_summary": item.machine_summary,
                    "worker_checksum": item.result.worker_checksum,
                    "dependency_checksum": item.result.dependency_checksum,
                }
                for build_id, item in accepted
            ],
        )
        for chunk in _chunks([build_id for build_id, _ in accepted]):
            conn.execute(operations.delete().where(operations.c.build_id.in_(chunk)))
        logs = [
            {
                "build_id": build_id,
                "position": position,
                "name": op.operation,
                "status": Status(op.status).value,
                "log": _compress(op.log),
            }
            for build_id, item in accepted
            for position, op in enumerate(item.result.results)
        ]
        if logs:
            conn.execute(operations.insert(), logs)
        conn.execute(
            attempts.update().where(attempts.c.session == sa.bindparam("b_session")),
            [
                {
                    "b_session": item.session,
                    "ended_at": now,
                    "outcome": OUTCOME_RESULT,
                    "agent": item.agent,
                    "machine": item.machine_name,
                    "metrics": json.dumps({k: float(v) for k, v in (item.metrics or {}).items()}),
                }
                for _, item in accepted
            ],
        )

    # ----------------------------------------------------------------- forced rebuilds

    def force(self, build_id: int, reason: str) -> ForceOutcome:
        """A person's rebuild request (brep's ?build-force): queue the build again, with a
        new round of attempts. A build that is building has its running attempt ended, so
        that attempt's late result is dropped as stale. BuildNotFound for an unknown id."""
        now = time.time()
        with self._tx(write=True) as conn:
            row = self._lock_build(conn, build_id)
            previous = BuildState(row["state"])
            if previous is BuildState.QUEUED:
                return ForceOutcome.QUEUED
            state = next_state(previous, LeaseEvent.FORCE)
            if previous is BuildState.LEASED:
                conn.execute(
                    attempts.update()
                    .where(attempts.c.build_id == build_id, attempts.c.session == row["session"])
                    .values(ended_at=now, outcome=OUTCOME_EXPIRED, detail=f"forced rebuild: {reason}")
                )
            conn.execute(
                builds.update()
                .where(builds.c.id == build_id)
                .values(state=state.value, forced=True, lease_deadline=None, finished_at=None,
                        first_attempt=int(row["attempt"]) + 1, reason=f"forced rebuild: {reason}")
            )
            return ForceOutcome.FORCED

    # ----------------------------------------------------------------- tasks handed out over HTTP

    def hand_over(self, lease: HttpLease, *, own: bool, deadline: float) -> bool:
        """Record that ``lease.session``'s task went to an HTTP agent.

        For this controller's own tasks (``own``) the session must still be the build's
        current lease: then the lease is renewed to ``deadline`` (an HTTP agent sends no
        heartbeats) and the agent named on it; otherwise nothing is written and the
        answer is False (a stale task, to be dropped). Another controller's task is
        recorded as it is.
        """
        values = {
            "b_session": lease.session, "b_agent": lease.agent, "b_reply_to": lease.reply_to,
            "b_machine_name": lease.machine_name, "b_machine_summary": lease.machine_summary,
            "b_fingerprint": lease.fingerprint, "b_challenge": lease.challenge,
            "b_handed_at": lease.handed_at or time.time(), "b_deadline": deadline,
        }
        with self._tx(write=True) as conn:
            # Statements made once (see _HandOver): a poll that hands a task out is a hot path.
            if own and conn.execute(_HandOver.renew_build, values).rowcount != 1:
                return False
            if own:
                conn.execute(_HandOver.renew_attempt, values)
            conn.execute(_HandOver.upsert(conn), values)
            return True

    def http_lease(self, session: str) -> HttpLease | None:
        with self._tx(write=False) as conn:
            row = conn.execute(sa.select(http_leases).where(http_leases.c.session == session)).first()
        if row is None:
            return None
        return HttpLease(session=row.session, agent=row.agent, reply_to=row.reply_to,
                         machine_name=row.machine_name, machine_summary=row.machine_summary,
                         fingerprint=row.fingerprint, challenge=row.challenge, handed_at=row.handed_at)

    def prune_http_leases(self, before: float) -> int:
        """Forget hand-overs older than ``before`` (their results can no longer be accepted)."""
        with self._tx(write=True) as conn:
            return int(conn.execute(http_leases.delete().where(http_leases.c.handed_at < before)).rowcount)

    # ----------------------------------------------------------------- tasks from an upper controller

    def add_upstream_build(
        self, task: UpstreamTask, new_set: NewBuildSet, new_build: NewBuild
    ) -> tuple[int, bool]:
        """A build for a task taken from an upper controller: ``(build id, created)``.

        The same upper session twice (the upper controller handed its task out again)
        gives the build made the first time, and ``created`` False.
        """
        if new_set.kind != "upstream":
            raise ValueError(f"add_upstream_build: the build set's kind is '{new_set.kind}', not 'upstream'")
        with self._tx(write=True) as conn:
            known = conn.execute(
                sa.select(upstream.c.build_id).where(upstream.c.session == task.session)
            ).scalar()
            if known is not None:
                return int(known), False
            set_id = self._insert_set(conn, new_set)
            (build_id,) = self._insert_builds(conn, set_id, [new_build])
            conn.execute(upstream.insert().values(
                build_id=build_id, url=task.url, session=task.session, result_url=task.result_url,
                challenge=task.challenge, agent_checksum=task.agent_checksum, task=_compress(task.task_text),
            ))
            return build_id, True

    def upstream_task_texts(self, build_ids: Sequence[int]) -> dict[int, str]:
        """The task manifest received from above, of each of these builds that has one."""
        found: dict[int, str] = {}
        with self._tx(write=False) as conn:
            for chunk in _chunks(sorted(set(build_ids))):
                query = sa.select(upstream.c.build_id, upstream.c.task).where(upstream.c.build_id.in_(chunk))
                found.update({int(b): _decompress(t) for b, t in conn.execute(query)})
        return found

    def upstream_open_count(self) -> int:
        """Builds taken from above that are not built yet."""
        with self._tx(write=False) as conn:
            query = (sa.select(sa.func.count()).select_from(upstream.join(builds))
                     .where(builds.c.state != BuildState.BUILT.value))
            return int(conn.execute(query).scalar_one())

    def upstream_results(self, limit: int = 100) -> list[UpstreamResult]:
        """Builds taken from above that ended here and whose result has not gone up yet."""
        query = (
            sa.select(upstream, builds.c.status, builds.c.worker_checksum, builds.c.dependency_checksum)
            .join(builds, builds.c.id == upstream.c.build_id)
            .where(builds.c.state == BuildState.BUILT.value, upstream.c.posted_at.is_(None))
            .order_by(builds.c.finished_at)
            .limit(limit)
        )
        with self._tx(write=False) as conn:
            rows = conn.execute(query).all()
            logs = _operations_of(conn, [int(r.build_id) for r in rows])
        return [
            UpstreamResult(
                build_id=int(r.build_id),
                task=UpstreamTask(url=r.url, session=r.session, result_url=r.result_url,
                                  task_text=_decompress(r.task), challenge=r.challenge,
                                  agent_checksum=r.agent_checksum),
                status=Status(r.status),
                operations=logs.get(int(r.build_id), []),
                worker_checksum=r.worker_checksum,
                dependency_checksum=r.dependency_checksum,
            )
            for r in rows
        ]

    def mark_upstream_posted(self, build_id: int, outcome: str) -> None:
        with self._tx(write=True) as conn:
            conn.execute(upstream.update().where(upstream.c.build_id == build_id)
                         .values(posted_at=time.time(), post_outcome=outcome))

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

    def queued_builds(self, limit: int = 100, patterns: Sequence[str] | None = None) -> list[BuildRow]:
        """The oldest queued builds (only those with one of ``patterns``, when given)."""
        query = self._select_builds().where(builds.c.state == BuildState.QUEUED.value)
        if patterns is not None:
            query = query.where(builds.c.machine_pattern.in_(list(patterns)))
        return self._fetch(query.order_by(builds.c.id).limit(limit))

    def queued_patterns(self) -> list[str]:
        """The machine patterns the queued builds ask for, each once."""
        queued = builds.c.state == BuildState.QUEUED.value
        query = sa.select(builds.c.machine_pattern).distinct().where(queued)
        with self._tx(write=False) as conn:
            return sorted(str(p) for (p,) in conn.execute(query))

    def set_waiting_reason(self, pattern: str, reason: str) -> int:
        """Say why the queued builds with ``pattern`` wait (only where it changes); how many."""
        with self._tx(write=True) as conn:
            return int(conn.execute(
                builds.update()
                .where(builds.c.state == BuildState.QUEUED.value, builds.c.machine_pattern == pattern,
                       sa.or_(builds.c.reason.is_(None), builds.c.reason != reason))
                .values(reason=reason)
            ).rowcount)

    def expired_leases(self, now: float) -> list[BuildRow]:
        query = (
            self._select_builds()
            .where(builds.c.state == BuildState.LEASED.value, builds.c.lease_deadline <= now)
            .order_by(builds.c.lease_deadline)
        )
        return self._fetch(query)

    def get_build(self, build_id: int) -> BuildRow | None:
        return self._fetch_one(self._select_builds().where(builds.c.id == build_id))

    def mail_facts(self, build_ids: Sequence[int]) -> list[MailFacts]:
        """(id, set kind, status, author email, submitter email) of these builds: what decides
        whether anybody could be mailed, without reading whole builds."""
        found: list[MailFacts] = []
        query = sa.select(builds.c.id, build_sets.c.kind, builds.c.status, build_sets.c.author_email,
                          build_sets.c.submitter_email).join(build_sets, builds.c.set_id == build_sets.c.id)
        with self._tx(write=False) as conn:
            for chunk in _chunks(sorted(set(build_ids))):
                for b, kind, status, author, submitter in conn.execute(query.where(builds.c.id.in_(chunk))):
                    found.append((int(b), str(kind), Status(status) if status else None, author, submitter))
        return found

    def get_builds(self, build_ids: Sequence[int]) -> list[BuildRow]:
        """The builds with these ids (those that exist), in one read."""
        found: list[BuildRow] = []
        for chunk in _chunks(sorted(set(build_ids))):
            found.extend(self._fetch(self._select_builds().where(builds.c.id.in_(chunk))))
        return found

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
            return _operations_of(conn, [build_id]).get(build_id, [])

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
                    infrastructure=bool(r.infrastructure),
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

    def find_builds(
        self,
        *,
        tenant: str | None = None,
        package: str | None = None,
        versions: Sequence[str] = (),
        toolchain: str | None = None,
        target: str | None = None,
        target_config: str | None = None,
        package_config: str | None = None,
        states: Sequence[BuildState] = (),
        statuses: Sequence[Status] = (),
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[int, list[tuple[BuildRow, list[OperationRow]]]]:
        """brep's build list (``?builds``): how many builds match, and one page of them, latest
        first, each with its operations (names and statuses; logs left out, as ``""``).

        ``package``, ``toolchain`` (over ``<name>-<version>``), ``target``, ``target_config``
        and ``package_config`` are shell wildcards over the whole value, ``*`` and ``?``
        the only special characters, matched case-sensitively on both databases; a build
        matches ``versions`` when it matches any of them. ``tenant`` None means every
        tenant; empty ``states`` or ``statuses`` mean any.
        """
        if limit < 0 or offset < 0:
            raise ValueError(f"limit ({limit}) and offset ({offset}) must not be negative")
        sqlite = self._engine.dialect.name == "sqlite"

        def matches(column: sa.ColumnElement[Any], wildcard: str) -> sa.ColumnElement[bool]:
            # SQLite's LIKE ignores case and PostgreSQL has no GLOB: each gets its own.
            if sqlite:
                return column.bool_op("GLOB")(wildcard.replace("[", "[[]"))
            escaped = wildcard.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\")

        where: list[sa.ColumnElement[bool]] = []
        if tenant is not None:
            where.append(builds.c.tenant == tenant)
        for column, wildcard in (
            (builds.c.package_name, package),
            (builds.c.toolchain_name + "-" + builds.c.toolchain_version, toolchain),
            (builds.c.target, target),
            (builds.c.configuration, target_config),
            (builds.c.package_config, package_config),
        ):
            if wildcard is not None:
                where.append(matches(column, wildcard))
        if versions:
            where.append(sa.or_(*(matches(builds.c.package_version, v) for v in versions)))
        if states:
            where.append(builds.c.state.in_([s.value for s in states]))
        if statuses:
            where.append(builds.c.status.in_([s.value for s in statuses]))
        latest = sa.func.coalesce(builds.c.finished_at, builds.c.issued_at, builds.c.created_at)
        with self._tx(write=False) as conn:
            total = int(conn.execute(sa.select(sa.func.count()).select_from(builds).where(*where))
                        .scalar_one())
            query = (self._select_builds().where(*where).order_by(latest.desc(), builds.c.id.desc())
                     .limit(limit).offset(offset))
            rows = [_build_row(m) for m in conn.execute(query).mappings()]
            found: dict[int, list[OperationRow]] = {row.id: [] for row in rows}
            for chunk in _chunks(list(found)):
                ops = conn.execute(
                    sa.select(operations.c.build_id, operations.c.name, operations.c.status)
                    .where(operations.c.build_id.in_(chunk))
                    .order_by(operations.c.build_id, operations.c.position)
                )
                for build_id, name, status in ops:
                    found[int(build_id)].append(OperationRow(name=name, status=Status(status), log=""))
        return total, [(row, found[row.id]) for row in rows]

    # ----------------------------------------------------------------- counters

    def counters(self) -> dict[str, int]:
        with self._tx(write=False) as conn:
            rows = conn.execute(sa.select(counters_table.c.name, counters_table.c.value))
            return {r.name: int(r.value) for r in rows}

    def bump(self, name: str, by: int = 1) -> None:
        with self._tx(write=True) as conn:
            self._bump(conn, name, by)

    def _bump(self, conn: Connection, name: str, by: int) -> None:
        statement = _insert(conn)(counters_table).values(name=name, value=by)
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
        first_attempt=m["first_attempt"],
    )


class _HandOver:
    """``Store.hand_over``'s statements, made once with bound parameters (``b_<name>``: SQLAlchemy
    keeps the plain column names for itself in INSERT and UPDATE)."""

    # The lease check is the update's own condition: one statement, under the row's lock.
    renew_build = (
        builds.update()
        .where(builds.c.id.in_(sa.select(attempts.c.build_id)
                               .where(attempts.c.session == sa.bindparam("b_session")).scalar_subquery()),
               builds.c.session == sa.bindparam("b_session"), builds.c.state == BuildState.LEASED.value)
        .values(agent=sa.bindparam("b_agent"), lease_deadline=sa.bindparam("b_deadline"))
    )
    renew_attempt = (
        attempts.update().where(attempts.c.session == sa.bindparam("b_session"))
        .values(agent=sa.bindparam("b_agent"), machine=sa.bindparam("b_machine_name"),
                deadline=sa.bindparam("b_deadline"))
    )
    _columns = ("agent", "reply_to", "machine_name", "machine_summary", "fingerprint", "challenge",
                "handed_at")
    _upserts: ClassVar[dict[str, Any]] = {}  # by dialect

    @classmethod
    def upsert(cls, conn: Connection) -> Any:
        """Insert the hand-over, or replace an earlier one of the same session (a redelivery:
        the later hand-over counts)."""
        dialect = conn.dialect.name
        if dialect not in cls._upserts:
            statement = _insert(conn)(http_leases).values(
                session=sa.bindparam("b_session"), **{c: sa.bindparam(f"b_{c}") for c in cls._columns})
            cls._upserts[dialect] = statement.on_conflict_do_update(
                index_elements=[http_leases.c.session],
                set_={c: statement.excluded[c] for c in cls._columns})
        return cls._upserts[dialect]


def _operations_of(conn: Connection, build_ids: Sequence[int]) -> dict[int, list[OperationRow]]:
    """The operations (with their logs) of these builds, in order, by build; one query a chunk."""
    found: dict[int, list[OperationRow]] = {}
    for chunk in _chunks(sorted(set(build_ids))):
        rows = conn.execute(
            sa.select(operations.c.build_id, operations.c.name, operations.c.status, operations.c.log)
            .where(operations.c.build_id.in_(chunk))
            .order_by(operations.c.build_id, operations.c.position)
        )
        for r in rows:
            found.setdefault(int(r.build_id), []).append(
                OperationRow(name=r.name, status=Status(r.status), log=_decompress(r.log)))
    return found


def _insert(conn: Connection) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_update`` (an upsert)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    raise RuntimeError(f"unsupported database dialect {conn.dialect.name}")  # pragma: no cover


def _chunks(values: Sequence[_V]) -> Iterator[Sequence[_V]]:
    """``values`` in slices small enough for one IN (...) list."""
    for start in range(0, len(values), IN_CHUNK):
        yield values[start:start + IN_CHUNK]


def _by_session(conn: Connection, sessions: Sequence[str], column: sa.Column[Any]) -> dict[str, Any]:
    """``column`` of the attempts of ``sessions`` (those that exist), by session."""
    found: dict[str, Any] = {}
    for chunk in _chunks(sessions):
        query = sa.select(attempts.c.session, column).where(attempts.c.session.in_(chunk))
        found.update((row[0], row[1]) for row in conn.execute(query))
    return found


def _attempts_text(count: int) -> str:
    return f"{count} attempt" if count == 1 else f"{count} attempts"


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



def _enter_wal_mode(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL``, waiting for other connections that hold the database.

    Changing the journal mode needs the database to itself, and SQLite answers "database is
    locked" at once, without its busy handler, when another connection is using it (stores
    opening together, a migration running): try again until the busy timeout has passed."""
    import sqlite3
    import time

    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)

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
                _enter_wal_mode(cursor)
                # In WAL mode NORMAL still survives any crash of the process (a commit is in
                # the log before it returns); only a power loss may undo the last commits,
                # and then the broker redelivers what their acks covered. FULL would fsync
                # every commit: half the controller's time in the throughput benchmark.
                cursor.execute("PRAGMA synchronous=NORMAL")
                # Checkpoints (copying the log into the database, with an fsync) run on the
                # store's own checkpointer thread, not inside a commit that holds up results.
                cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("bbot_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
