"""audit records are keyed by (chain, seq), so each chain numbers its records from 1

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

append, verify and checkpoints all name a chain, and the lock table has a row per chain,
but the primary key was seq alone: a second chain's seq 1 collided with main's. The
unique index on (chain, seq) becomes the primary key. Every row is kept as stored, so
every hash still verifies and checkpoints signed before still match.

PostgreSQL: the existing unique index is promoted to the primary key (no rebuild, no row
touched, so the append-only triggers and grants of 0002 stay as they are).

SQLite cannot change a primary key in place. The table is rebuilt by SQLite's own
procedure (new table, copy, drop, rename) inside one transaction, with the column types
of 0001 exactly, so every value keeps its storage class and its text (verify's fast path
hashes created_at from the stored text). The append-only triggers go with the old table
and are created again; the one refusing INSERT OR REPLACE now looks for the same
(chain, seq), not the same seq.

Downgrading is refused while two chains share a seq: 0005's key cannot hold both records.
"""
from alembic import op
from alembic.util import CommandError
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

MESSAGE = "audit_records is append-only"

COLUMNS = ("seq", "chain", "request_id", "event", "created_at", "actor", "actor_role", "channel", "question",
           "effective_classification", "tier", "model_key", "refused", "pii_present", "policy_ids", "cost",
           "payload", "prev_hash", "hash")

# 0001's table as SQLite stores it; only the primary key differs between revisions.
SQLITE_TABLE = """CREATE TABLE {name} (
    seq INTEGER NOT NULL,
    chain VARCHAR(32) NOT NULL,
    request_id VARCHAR(64) NOT NULL,
    event VARCHAR(64) NOT NULL,
    created_at DATETIME NOT NULL,
    actor VARCHAR(200) NOT NULL,
    actor_role VARCHAR(32) NOT NULL,
    channel VARCHAR(32) NOT NULL,
    question TEXT,
    effective_classification VARCHAR(32),
    tier INTEGER,
    model_key VARCHAR(200),
    refused BOOLEAN NOT NULL,
    pii_present BOOLEAN NOT NULL,
    policy_ids TEXT NOT NULL,
    cost FLOAT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash VARCHAR(64) NOT NULL,
    hash VARCHAR(64) NOT NULL,
    CONSTRAINT pk_audit_records PRIMARY KEY ({key})
)"""

SQLITE_INDEXES = (
    "CREATE INDEX ix_audit_records_request_id ON audit_records (request_id)",
    "CREATE INDEX ix_audit_records_created_at ON audit_records (created_at)",
    "CREATE INDEX ix_audit_records_actor ON audit_records (actor)",
)
# 0001's unique index, which 0006 makes the primary key.
CHAIN_SEQ_INDEX = "CREATE UNIQUE INDEX ix_audit_records_chain_seq ON audit_records (chain, seq)"


def sqlite_triggers(same_record: str) -> dict[str, str]:
    """0002's triggers; `same_record` is how the no-replace trigger finds a collision."""
    return {
        "audit_records_no_update": f"BEFORE UPDATE ON audit_records BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
        "audit_records_no_delete": f"BEFORE DELETE ON audit_records BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END",
        # INSERT OR REPLACE deletes the row it collides with WITHOUT firing delete triggers.
        "audit_records_no_replace": (
            f"BEFORE INSERT ON audit_records WHEN EXISTS (SELECT 1 FROM audit_records WHERE {same_record}) "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        ),
    }


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _rebuild_sqlite(key="chain, seq", same_record="chain = NEW.chain AND seq = NEW.seq", indexes=SQLITE_INDEXES)
    elif dialect == "postgresql":
        op.execute("ALTER TABLE audit_records DROP CONSTRAINT pk_audit_records")
        op.execute("ALTER TABLE audit_records ADD CONSTRAINT pk_audit_records "
                   "PRIMARY KEY USING INDEX ix_audit_records_chain_seq")
    else:
        raise NotImplementedError(f"no audit_records migration for {dialect}")


def downgrade() -> None:
    _refuse_overlapping_chains()
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        _rebuild_sqlite(key="seq", same_record="seq = NEW.seq", indexes=(CHAIN_SEQ_INDEX, *SQLITE_INDEXES))
    elif dialect == "postgresql":
        op.execute(CHAIN_SEQ_INDEX)
        op.execute("ALTER TABLE audit_records DROP CONSTRAINT pk_audit_records")
        op.execute("ALTER TABLE audit_records ADD CONSTRAINT pk_audit_records PRIMARY KEY (seq)")
    else:
        raise NotImplementedError(f"no audit_records migration for {dialect}")


def _refuse_overlapping_chains() -> None:
    clash = op.get_bind().execute(sa.text(
        "SELECT seq, MIN(chain), MAX(chain) FROM audit_records GROUP BY seq HAVING COUNT(*) > 1 ORDER BY seq LIMIT 1"
    )).first()
    if clash is not None:
        seq, first, second = clash
        raise CommandError(
            f"refusing to downgrade below 0006: seq {seq} is in chain {first!r} and in chain {second!r}, and "
            "revision 0005 keys audit records by seq alone, so it could not keep both; the audit trail stays at 0006")


def _rebuild_sqlite(key: str, same_record: str, indexes: tuple[str, ...]) -> None:
    # One transaction for the whole rebuild (Alembic runs SQLite DDL outside one): a failure
    # part-way leaves the old table, its rows and its triggers as they were. A savepoint
    # opens the transaction, or nests in one already open; the migration's commit ends it.
    op.execute("SAVEPOINT audit_records_rebuild")
    for name in sqlite_triggers(same_record):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    columns = ", ".join(COLUMNS)
    op.execute(SQLITE_TABLE.format(name="audit_records_rebuild", key=key))
    op.execute(f"INSERT INTO audit_records_rebuild ({columns}) SELECT {columns} FROM audit_records ORDER BY {key}")
    op.execute("DROP TABLE audit_records")
    op.execute("ALTER TABLE audit_records_rebuild RENAME TO audit_records")
    for statement in indexes:
        op.execute(statement)
    for name, body in sqlite_triggers(same_record).items():
        op.execute(f"CREATE TRIGGER {name} {body}")
