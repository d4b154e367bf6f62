"""FAQ templates: approved short answers bound to exact clauses, served at Tier-0 without a model

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

A row's questions, answer and bound clauses are never edited: a change is a new entry and
the old one retired, as a policy change is a new document version. Only the status and
who approved or retired it, and when, move.

faq_generation holds one row whose counter every approval and retirement raises in its own
transaction: each request reads it (a primary-key lookup) to learn whether the approved set
it holds in memory is still current, in this process or any other.
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "faq_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("questions", sa.JSON, nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("clauses", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("approver", sa.String(200), nullable=True),
        sa.Column("retired_by", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("approved_at", TS, nullable=True),
        sa.Column("retired_at", TS, nullable=True),
    )
    op.create_index("ix_faq_entries_status", "faq_entries", ["status"])
    generation = op.create_table(
        "faq_generation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("generation", sa.Integer, nullable=False),
    )
    op.bulk_insert(generation, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("faq_generation")
    op.drop_index("ix_faq_entries_status", table_name="faq_entries")
    op.drop_table("faq_entries")
