"""Stores on real databases for tests: a SQLite file and a PostgreSQL schema of its own.

PostgreSQL must be running at 127.0.0.1:5432 (database ``test``, trust auth);
when it is not, the tests that use it fail with a message saying so.
"""

from __future__ import annotations

import getpass
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from bbot.controller.store import Store

POSTGRES_HOST = "127.0.0.1:5432"
POSTGRES_DATABASE = "test"


def _postgres_admin_url() -> str:
    errors = []
    for user in (getpass.getuser(), "postgres", "root"):
        url = f"postgresql+psycopg://{user}@{POSTGRES_HOST}/{POSTGRES_DATABASE}"
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
            return url
        except sa.exc.OperationalError as error:
            errors.append(f"{user}: {error.orig}")
        finally:
            engine.dispose()
    raise RuntimeError(
        f"PostgreSQL is needed at {POSTGRES_HOST} database '{POSTGRES_DATABASE}' with trust "
        f"auth; start it (e.g. `service postgresql start`): {'; '.join(errors)}"
    )


@contextmanager
def postgres_url() -> Iterator[str]:
    """A store URL whose tables live in a fresh schema, dropped afterwards."""
    admin_url = _postgres_admin_url()
    schema = f"bbot_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        yield f"{admin_url}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def database_url(backend: str, directory: Path) -> Iterator[str]:
    """The URL of an empty database of ``backend``, without opening a store on it."""
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'bbot.sqlite'}"
    elif backend == "postgresql":
        with postgres_url() as url:
            yield url
    else:
        raise ValueError(f"unknown test backend {backend}: expected sqlite or postgresql")


@contextmanager
def open_store(backend: str, directory: Path) -> Iterator[Store]:
    if backend == "sqlite":
        store = Store(f"sqlite:///{directory / 'bbot.sqlite'}")
        try:
            yield store
        finally:
            store.close()
    elif backend == "postgresql":
        with postgres_url() as url:
            store = Store(url)
            try:
                yield store
            finally:
                store.close()
    else:
        raise ValueError(f"unknown test backend {backend}")
