"""signed-out web sessions are refused on the server

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

Signing out used to clear only the browser's cookie; a copy of it stayed valid until it
expired. Each sign-out now records its session id here until that expiry, and a cookie
whose session id is listed is refused.
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revoked_web_sessions",
        sa.Column("sid", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_revoked_web_sessions_expires_at", "revoked_web_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("revoked_web_sessions")
