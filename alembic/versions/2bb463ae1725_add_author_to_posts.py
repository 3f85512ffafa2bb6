"""Add author to posts

Each post may now name the user who wrote it. Posts from before accounts
existed keep a NULL author.

Revision ID: 2bb463ae1725
Revises: c0fc45dc5ca6
Create Date: 2026-11-24 17:55:40.099845

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '2bb463ae1725'
down_revision: Union[str, Sequence[str], None] = 'c0fc45dc5ca6'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


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
    # SQLite cannot drop a column that references another table: batch mode
    # copies the table without it, keeping every other column of every post.
    # copy_from says what the table is at this revision, so that offline
    # (--sql) mode, which cannot look at the database, can copy it too.
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


def on_sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"
