"""Add author to posts

Each post may now name the user who wrote it. Posts from before accounts
existed keep a NULL author.

The blog keeps serving while this runs, at any number of posts:
- SQLite adds a column that REFERENCES user in place: no copy of the table.
- PostgreSQL holds the lock that stops readers only for ADD COLUMN and ADD
  CONSTRAINT ... NOT VALID, which touch no row (milliseconds), and commits;
  then it checks the foreign key and builds the index CONCURRENTLY, with the
  blog reading and writing posts meanwhile.
- MariaDB adds the foreign key in place, not checking the rows (all NULL),
  so the blog keeps writing posts. It commits each statement as it runs: IF
  NOT EXISTS, and a foreign key added only if missing, let an interrupted run
  be finished by running the command again.

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


FOREIGN_KEY = "fk_post_author_id_user"


def upgrade() -> None:
    """Upgrade schema."""
    if on_sqlite():
        # SQLite cannot add a constraint to a table, but it can add a column
        # that REFERENCES another one.
        op.add_column(
            "post",
            sa.Column("author_id", sa.Integer, sa.ForeignKey("user.id", name=FOREIGN_KEY)),
            inline_references=True,
        )
        op.create_index("ix_post_author_id", "post", ["author_id"])
        return
    op.add_column("post", sa.Column("author_id", sa.Integer), if_not_exists=True)
    if on_postgresql():
        if offline() or not has_foreign_key():
            op.create_foreign_key(
                FOREIGN_KEY, "post", "user", ["author_id"], ["id"], postgresql_not_valid=True
            )
        with op.get_context().autocommit_block():
            op.execute(f"ALTER TABLE post VALIDATE CONSTRAINT {FOREIGN_KEY}")
            # An interrupted CONCURRENTLY build leaves an invalid index of that name.
            op.drop_index("ix_post_author_id", "post", postgresql_concurrently=True, if_exists=True)
            op.create_index(
                "ix_post_author_id",
                "post",
                ["author_id"],
                postgresql_concurrently=True,
                if_not_exists=True,
            )
        return
    if offline() or not has_foreign_key():
        # Told not to check the rows (every author_id is NULL yet), MariaDB
        # adds the foreign key in place instead of copying the table.
        op.execute("SET SESSION foreign_key_checks = 0")
        op.create_foreign_key(FOREIGN_KEY, "post", "user", ["author_id"], ["id"])
        op.execute("SET SESSION foreign_key_checks = 1")
    op.create_index("ix_post_author_id", "post", ["author_id"], if_not_exists=True)


def downgrade() -> None:
    """Downgrade schema."""
    if not on_sqlite() and (offline() or has_foreign_key()):
        op.drop_constraint(FOREIGN_KEY, "post", type_="foreignkey")
    op.drop_index("ix_post_author_id", table_name="post", if_exists=True)
    if on_sqlite() and not drops_author_in_place():
        copy_posts_without_author()
    else:
        # SQLite 3.35+ drops a column whose REFERENCES is its own in place,
        # as upgrade() added it: no copy of the post table.
        op.drop_column("post", "author_id", if_exists=not on_sqlite())


def on_sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def on_postgresql() -> bool:
    return op.get_context().dialect.name == "postgresql"


def offline() -> bool:
    return op.get_context().as_sql


def has_foreign_key() -> bool:
    """Whether post has it: an interrupted run may have added or dropped it."""
    foreign_keys = sa.inspect(op.get_bind()).get_foreign_keys("post")
    return any(foreign_key["name"] == FOREIGN_KEY for foreign_key in foreign_keys)


def drops_author_in_place() -> bool:
    """Whether SQLite can drop post.author_id without copying the table.

    Not before SQLite 3.35, and not when a table-level FOREIGN KEY names the
    column, as `run.py init` wrote it before it wrote the column's own
    REFERENCES. Offline (--sql) there is no table to look at: in place.
    """
    if sqlite3.sqlite_version_info < (3, 35):
        reason = f"SQLite {sqlite3.sqlite_version} has no DROP COLUMN"
    elif offline():
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
