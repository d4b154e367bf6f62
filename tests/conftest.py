"""Shared database fixtures: every database test runs on SQLite and on PostgreSQL.

`db_url` is a fresh, migrated database per test (Alembic `upgrade head`, never
create_all): a temporary SQLite file, and — when POLICYHUB_TEST_POSTGRES_URL names a
server (an admin URL, e.g. postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres)
— a new PostgreSQL database created for the test and dropped after it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, create_engine, make_url, pool
from sqlalchemy.orm import Session, sessionmaker

from services.db.session import make_engine, make_session_factory, upgrade

POSTGRES_ENV = "POLICYHUB_TEST_POSTGRES_URL"
NO_POSTGRES = f"{POSTGRES_ENV} not set: no PostgreSQL server"


def _admin_engine(admin_url: str) -> Engine:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    return create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(NO_POSTGRES)
    return url


@pytest.fixture(scope="session")
def postgres_template(postgres_admin_url: str) -> Iterator[str]:
    """A database migrated once per run; each test gets a copy (CREATE DATABASE ... TEMPLATE),
    which takes a fraction of the time of migrating again."""
    name = f"test_template_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(postgres_admin_url)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        upgrade(make_url(postgres_admin_url).set(database=name).render_as_string(hide_password=False))
        yield name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def _postgres_database(admin_url: str, template: str | None = None) -> Iterator[str]:
    """The URL of a new database on the server (a copy of `template`, if named), dropped after."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    admin = _admin_engine(admin_url)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            # FORCE: a test may leave an engine with open connections behind.
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_admin_url: str, postgres_template: str) -> Iterator[str]:
    with _postgres_database(postgres_admin_url, postgres_template) as url:
        upgrade(url)  # a no-op at head; keeps "the fixture runs the migrations" true for any copy
        yield url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'policyhub.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """A fresh database at the head migration, once per backend."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return request.getfixturevalue("sqlite_url")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db_url(request, tmp_path) -> Iterator[str]:
    """A fresh database with no schema at all, once per backend, for tests that migrate it
    themselves (to an older revision, say)."""
    if request.param == "postgresql":
        with _postgres_database(request.getfixturevalue("postgres_admin_url")) as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'policyhub.db'}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)
