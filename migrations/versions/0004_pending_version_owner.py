"""pending versions record the process ingesting them and its heartbeat

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

Recovery used to discard every pending version, including one a live process (the API
server, another `policyhub ingest`) was still indexing. With an owner and a heartbeat,
recovery discards only versions whose process is gone. Rows pending before this
revision have no owner; recovery treats them as left by a crash, as it did before.
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("ingest_host", "ingest_pid", "ingest_token", "heartbeat_at")


def upgrade() -> None:
    op.add_column("document_versions", sa.Column("ingest_host", sa.String(300), nullable=True))
    op.add_column("document_versions", sa.Column("ingest_pid", sa.Integer, nullable=True))
    op.add_column("document_versions", sa.Column("ingest_token", sa.String(32), nullable=True))
    op.add_column("document_versions", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("document_versions") as batch:
        for column in reversed(COLUMNS):
            batch.drop_column(column)
