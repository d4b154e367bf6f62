"""audit protection: audit_records becomes append-only; per-chain append locks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

The hash chain makes tampering evident; these triggers make the everyday mistake (an
UPDATE or DELETE through the application's own connection) impossible. They do not
stop the database owner, who can drop or disable them — that is what the chain and the
signed checkpoints are for.

PostgreSQL in production: run migrations as the owner role and the application as a
separate, non-owner role (`policyhub_app`) holding only SELECT, INSERT on audit_records.
A non-owner cannot disable triggers, and without UPDATE/DELETE/TRUNCATE privileges the
database refuses before the triggers are even reached. This migration grants those
privileges to `policyhub_app` when that role exists; it never creates roles (that needs
CREATEROLE, which a migration role should not have).

SQLite: Alembic's batch mode rebuilds a table to alter it and drops its triggers on the
way. A later migration that alters audit_records must create these triggers again
(tests/governance/test_audit_tamper.py fails at head if they are missing).
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MESSAGE = "audit_records is append-only"

SQLITE_TRIGGERS = {
    "audit_records_no_update": f"BEFORE UPDATE ON audit_records BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
    "audit_records_no_delete": f"BEFORE DELETE ON audit_records BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
    # INSERT OR REPLACE deletes the row it collides with WITHOUT firing delete triggers
    # (unless recursive_triggers is on), so an insert onto an existing seq is refused here.
    "audit_records_no_replace": (
        "BEFORE INSERT ON audit_records WHEN EXISTS (SELECT 1 FROM audit_records WHERE seq = NEW.seq) "
        f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
    ),
}

PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{MESSAGE} (% refused)', TG_OP;
END
$$
"""

PG_GRANTS = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'policyhub_app') THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_records FROM policyhub_app;
        GRANT SELECT, INSERT ON audit_records TO policyhub_app;
        GRANT SELECT, INSERT, UPDATE ON audit_chain_locks TO policyhub_app;
    END IF;
END
$$
"""


def upgrade() -> None:
    # One row per chain; appending writes it first, which serialises appends per chain
    # (a row lock on PostgreSQL, the database write lock on SQLite). It holds no data.
    op.create_table(
        "audit_chain_locks",
        sa.Column("chain", sa.String(32), primary_key=True),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
            op.execute(f"CREATE TRIGGER {name} {body}")
    elif dialect == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute("DROP TRIGGER IF EXISTS audit_records_no_update_delete ON audit_records")
        op.execute("CREATE TRIGGER audit_records_no_update_delete BEFORE UPDATE OR DELETE ON audit_records "
                   "FOR EACH ROW EXECUTE FUNCTION audit_records_append_only()")
        op.execute("DROP TRIGGER IF EXISTS audit_records_no_truncate ON audit_records")
        op.execute("CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records "
                   "FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only()")
        op.execute("REVOKE UPDATE, DELETE, TRUNCATE ON audit_records FROM PUBLIC")
        op.execute(PG_GRANTS)
    else:
        raise NotImplementedError(f"no append-only protection for {dialect}: add it here before using it")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_records_no_truncate ON audit_records")
        op.execute("DROP TRIGGER IF EXISTS audit_records_no_update_delete ON audit_records")
        op.execute("DROP FUNCTION IF EXISTS audit_records_append_only()")
    op.drop_table("audit_chain_locks")
