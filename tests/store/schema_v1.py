"""The store's schema version 1, frozen: a copy of the tables as bbot first created them.

Migration tests build a version-1 database from this, fill it, and open a
``Store`` on it. Never change this file to follow ``bbot.controller.store``:
it stands for databases already out there.
"""

from __future__ import annotations

import sqlalchemy as sa

VERSION = 1

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


def create(url: str) -> None:
    """Create the version-1 tables in the (empty) database at ``url`` and stamp version 1."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            metadata.create_all(conn)
            conn.execute(schema_version_table.insert().values(version=VERSION, applied_at=1.0))
    finally:
        engine.dispose()
