"""Add author to posts

Each post may now name the user who wrote it. Posts from before accounts
existed keep a NULL author.

Revision ID: 2bb463ae1725
Revises: c0fc45dc5ca6
Create Date: 2026-11-24 17:55:40.099845

"""

import logging
import sqlite3
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "2bb463ae1725"
down_revision: str | Sequence[str] | None = "c0fc45dc5ca6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column(
        "post",
        sa.Column(
            "author_id",
            sa.Integer,
            sa.ForeignKey("user.id", name="fk_post_author_id_user"),
            nullable=True,
        ),
        # SQLite cannot add a constraint to a table, but it can add a column
        # that REFERENCES another one: no table copy, as fast at a million
        # posts as at ten. Elsewhere the foreign key is a named constraint.
        inline_references=on_sqlite(),
    )
    op.create_index("ix_post_author_id", "post", ["author_id"])


def downgrade() -> None:
    """Downgrade schema."""
    if not on_sqlite():
        op.drop_constraint("fk_post_author_id_user", "post", type_="foreignkey")
    op.drop_index("ix_post_author_id", table_name="post")
    if on_sqlite() and not drops_author_in_place():
        copy_posts_without_author()
    else:
        # SQLite 3.35+ drops a column whose REFERENCES is its own in place,
        # as upgrade() added it: no copy of the post table.
        op.drop_column("post", "author_id")


def on_sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def drops_author_in_place() -> bool:
    """Whether SQLite can drop post.author_id without copying the table.

    Not before SQLite 3.35, and not when a table-level FOREIGN KEY names the
    column, as `run.py init` wrote it before it wrote the column's own
    REFERENCES. Offline (--sql) there is no table to look at: in place.
    """
    if sqlite3.sqlite_version_info < (3, 35):
        reason = f"SQLite {sqlite3.sqlite_version} has no DROP COLUMN"
    elif op.get_context().as_sql:
        return True
    else:
        table_sql = (
            op.get_bind()
            .exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'post'")
            .scalar_one()
        )
        if "FOREIGN KEY" not in table_sql.upper():
            return True
        reason = "a table-level FOREIGN KEY names post.author_id"
    logging.getLogger("alembic.env").info(
        "%s: copying the post table without it (batch mode)", reason
    )
    return False


def copy_posts_without_author() -> None:
    # copy_from says what the table is at this revision, so that batch mode
    # need not reflect it; every other column of every post is kept.
    post = sa.Table(
        "post",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created", sa.DateTime, nullable=False),
        sa.Column("author_id", sa.Integer, sa.ForeignKey("user.id")),
    )
    with op.batch_alter_table("post", copy_from=post) as batch_op:
        batch_op.drop_column("author_id")
