"""Create users table

The blog's models gained a User class. This revision adds its table to a
database that already holds posts, leaving the posts as they are.

IF NOT EXISTS and IF EXISTS let a run that was interrupted be finished by
running the command again: MariaDB commits each statement as it runs, so it
may hold the table while alembic_version still names the revision before.

Revision ID: c0fc45dc5ca6
Revises:
Create Date: 2026-11-24 17:55:30.904227

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "c0fc45dc5ca6"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "user",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(80), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.UniqueConstraint("username", name="uq_user_username"),
        if_not_exists=True,
        # On MariaDB, text that holds any character (an emoji), whatever the default.
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("user", if_exists=True)
