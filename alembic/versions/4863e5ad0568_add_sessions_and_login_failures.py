"""Add sessions and login failures

Accounts as a trusted site keeps them. A session is a row: logging out deletes
it, changing a password deletes the account's others, and deleting the
account deletes them all, so a cookie never outlives what it was issued for.
Failed logins are rows too, counted across every process of the blog to slow
down password guessing. And usernames become unique whatever their case:
user.username_key is lower(username), kept by the database, with a unique
index. Names that already differ only in case stop the upgrade, listed, for
their owner to rename first.

On PostgreSQL the unique index is built CONCURRENTLY, after a commit, so that
the blog goes on reading and writing meanwhile; the STORED column rewrites the
user table under its lock, which costs milliseconds for thousands of users.
Each step is skipped if done (IF NOT EXISTS, IF EXISTS), so that a run that
was interrupted, on MariaDB between any two statements, is finished by running
the command again.

Revision ID: 4863e5ad0568
Revises: 2bb463ae1725
Create Date: 2026-11-25 10:09:08.358241

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from alembic.util import CommandError

# revision identifiers, used by Alembic.
revision: str = "4863e5ad0568"
down_revision: str | Sequence[str] | None = "2bb463ae1725"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    refuse_names_that_differ_only_in_case()
    if op.get_context().as_sql:
        # For squawk, the PostgreSQL linter: the user table is small (see above).
        op.get_context().impl.static_output("-- squawk-ignore-file adding-field-with-default")
    op.add_column(
        "user",
        sa.Column(
            "username_key",
            sa.String(80),
            # PostgreSQL indexes only STORED generated columns; SQLite can
            # add only VIRTUAL ones to an existing table.
            sa.Computed("lower(username)", persisted=True if on_postgresql() else None),
        ),
        if_not_exists=not on_sqlite(),
    )
    op.create_table(
        "user_session",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("user.id", name="fk_user_session_user_id_user", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created", sa.DateTime, nullable=False),
        if_not_exists=True,
        # On MariaDB, text that holds any character (an emoji), whatever the default.
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )
    op.create_index(
        "ix_user_session_token_hash",
        "user_session",
        ["token_hash"],
        unique=True,
        if_not_exists=True,
    )
    op.create_index("ix_user_session_user_id", "user_session", ["user_id"], if_not_exists=True)
    op.create_table(
        "login_failure",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username_key", sa.String(80), nullable=False),
        sa.Column("address", sa.String(45), nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        if_not_exists=True,
        # On MariaDB, text that holds any character (an emoji), whatever the default.
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )
    op.create_index(
        "ix_login_failure_username_key",
        "login_failure",
        ["username_key", "created"],
        if_not_exists=True,
    )
    op.create_index(
        "ix_login_failure_address", "login_failure", ["address", "created"], if_not_exists=True
    )
    if not on_postgresql():
        op.create_index(
            "ix_user_username_key", "user", ["username_key"], unique=True, if_not_exists=True
        )
        return
    with op.get_context().autocommit_block():
        # An interrupted CONCURRENTLY build leaves an invalid index of that name.
        op.drop_index("ix_user_username_key", "user", postgresql_concurrently=True, if_exists=True)
        op.create_index(
            "ix_user_username_key",
            "user",
            ["username_key"],
            unique=True,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_user_username_key", table_name="user", if_exists=True)
    # A table's indexes go with it (MariaDB refuses to drop one that its
    # foreign key uses).
    op.drop_table("login_failure", if_exists=True)
    op.drop_table("user_session", if_exists=True)
    op.drop_column("user", "username_key", if_exists=not on_sqlite())


def on_sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def on_postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"


def refuse_names_that_differ_only_in_case() -> None:
    if op.get_context().as_sql:
        return  # `--sql` writes a script without reading the database
    user = sa.table("user", sa.column("id"), sa.column("username"))
    key = sa.func.lower(user.c.username)
    colliding = (
        op.get_bind()
        .execute(
            sa.select(user.c.username)
            .where(key.in_(sa.select(key).group_by(key).having(sa.func.count() > 1)))
            .order_by(key, user.c.id)
        )
        .scalars()
        .all()
    )
    if colliding:
        raise CommandError(
            f"usernames that differ only in case: {', '.join(colliding)}. Rename all but one "
            "of each (UPDATE \"user\" SET username = 'new name' WHERE username = 'old name'), "
            "then run the upgrade again"
        )
