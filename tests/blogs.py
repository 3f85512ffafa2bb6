"""Blogs the tests start from: as the blog was before migrations (made by
before_migrations.py), as `run.py init` makes it, brought to a revision, with
filler posts and accounts."""

import os
import sqlite3
from contextlib import closing
from datetime import datetime
from pathlib import Path
from unittest import mock

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text

from before_migrations import make_legacy_database
from blog.maintenance import init_db
from database_safety import create_engine as create_blog_engine

from .pages import PASSWORD_HASH

# The one post of the pre-migration blog.db that most tests start from.
OLD_POST = {"title": "Old post", "body": "From before migrations.", "created": datetime(2020, 1, 1)}


def make_legacy_blog(path) -> None:
    """A pre-migration blog.db at path, holding OLD_POST."""
    engine = create_engine(f"sqlite:///{path}")
    make_legacy_database(engine, [OLD_POST])
    engine.dispose()


def database_of(project: Path, env: dict | None) -> str:
    """The database the project's commands would use: env's BLOG_DATABASE_URL, or its blog.db."""
    return (env or {}).get("BLOG_DATABASE_URL") or f"sqlite:///{project / 'blog.db'}"


def init_blog(project: Path, env: dict | None = None) -> None:
    """What `python run.py init` does to a copy of the project (or to env's
    BLOG_DATABASE_URL), done in this process: a test that starts from a new
    blog spends no process on it."""
    engine = create_blog_engine(database_of(project, env))
    try:
        init_db(engine, ScriptDirectory.from_config(Config(project / "alembic.ini")))
    finally:
        engine.dispose()


def upgrade_blog(project: Path, revision: str = "head", env: dict | None = None) -> None:
    """What `alembic upgrade REVISION` does to a copy of the project (or to env's
    BLOG_DATABASE_URL), done in this process, for a test about what follows."""
    # Named outright: a BLOG_DATABASE_URL of the shell running the tests must not count.
    with mock.patch.dict(os.environ, {"BLOG_DATABASE_URL": database_of(project, env)}):
        command.upgrade(Config(project / "alembic.ini"), revision)


def copy_blog(source: Path | str, target: Path | str) -> None:
    """A copy of the SQLite file at source, as its last commit left it (the -wal included)."""
    with closing(sqlite3.connect(source)) as original, closing(sqlite3.connect(target)) as copy:
        original.backup(copy)


def add_filler_posts(path, count: int) -> None:
    """COUNT more posts in the SQLite file at path, so that copying it takes a while."""
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO post (title, body, created) VALUES (?, ?, '2024-01-01')",
            ((f"filler {i}", "x" * 500) for i in range(count)),
        )


def add_posts_on_server(engine: Engine, count: int) -> None:
    """COUNT more posts on PostgreSQL or MariaDB, made by the server itself: fast at any size."""
    numbers = (
        f"generate_series(1, {count}) AS n(seq)"
        if engine.dialect.name == "postgresql"
        else f"seq_1_to_{count}"
    )
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO post (title, body, created) SELECT CONCAT('Post ', seq),"
                f" 'A body of a few words.', CURRENT_TIMESTAMP FROM {numbers}"
            )
        )


def add_accounts(db):
    """Two users, each with a post, beside the ownerless posts."""
    with closing(sqlite3.connect(db)) as connection, connection:
        for name in ("alice", "bob"):
            user = connection.execute(
                "INSERT INTO user (username, password_hash, created) VALUES (?, ?, '2024-01-01')",
                (name, PASSWORD_HASH),
            ).lastrowid
            connection.execute(
                "INSERT INTO post (title, body, created, author_id) "
                "VALUES (?, 'text', '2024-01-02', ?)",
                (f"{name}'s post", user),
            )
