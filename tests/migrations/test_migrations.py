"""Only migrations create the schema; an old schema is refused with a clear message."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic import command
from sqlalchemy import inspect

from services.db.session import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    require_current_schema,
    upgrade,
)
from services.errors import SchemaOutOfDate


def test_migrations_reach_head_with_every_table(db_url):
    engine = make_engine(db_url)
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert {"users", "documents", "document_versions", "chunks", "clauses", "registered_models",
            "model_signoffs", "audit_records", "revoked_web_sessions", "faq_entries"} <= tables
    require_current_schema(engine)


def test_signed_out_sessions_downgrade_and_upgrade_again(db_url):
    command.downgrade(alembic_config(db_url), "0004")
    engine = make_engine(db_url)
    assert "revoked_web_sessions" not in inspect(engine).get_table_names()
    upgrade(db_url)
    assert current_revision(engine) == head_revision()
    assert "revoked_web_sessions" in inspect(engine).get_table_names()
    engine.dispose()


def test_an_old_schema_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0001")
    with pytest.raises(SchemaOutOfDate, match="run `policyhub db upgrade`"):
        require_current_schema(make_engine(url))


def test_serve_refuses_to_start_on_an_old_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0001")
    env = {"POLICYHUB_DATABASE_URL": url, "POLICYHUB_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "services.cli", "serve", "--port", "1"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "policyhub db upgrade" in done.stderr


def test_faq_entries_downgrade_and_upgrade_again(db_url):
    command.downgrade(alembic_config(db_url), "0006")
    engine = make_engine(db_url)
    assert "faq_entries" not in inspect(engine).get_table_names()
    upgrade(db_url)
    assert current_revision(engine) == head_revision()
    assert {c["name"] for c in inspect(engine).get_columns("faq_entries")} >= {
        "id", "questions", "answer", "clauses", "status", "author", "approver", "created_at", "approved_at",
        "retired_at"}
    with engine.connect() as conn:  # the generation every approval and retirement raises starts at 0
        assert conn.exec_driver_sql("SELECT id, generation FROM faq_generation").all() == [(1, 0)]
    engine.dispose()
