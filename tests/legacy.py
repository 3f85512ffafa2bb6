"""Blogs the tests start from: as the blog was before migrations (one model, its
table made by create_all), as `run.py init` makes it, and with filler posts."""

import sqlite3
from datetime import datetime
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    text,
)

from blog.maintenance import init_db
from database_safety import create_engine as create_blog_engine

legacy_metadata = MetaData()

legacy_post = Table(
    "post",
    legacy_metadata,
    Column("id", Integer, primary_key=True),
    Column("title", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("created", DateTime, nullable=False),
)


# The three posts the README's lesson starts from.
LESSON_POSTS = [
    {"title": "Hello, world", "body": "The first post.", "created": datetime(2024, 3, 1, 9)},
    {"title": "On SQLite", "body": "One file holds it all.", "created": datetime(2024, 3, 2, 9)},
    {
        "title": "Still here",
        "body": "Posts outlive schema changes.",
        "created": datetime(2024, 3, 3, 9),
    },
]


def make_legacy_database(engine: Engine, posts: list[dict]) -> None:
    with engine.begin() as connection:
        legacy_metadata.create_all(connection)
        if posts:
            connection.execute(legacy_post.insert(), posts)


# The one post of the pre-migration blog.db that most tests start from.
OLD_POST = {"title": "Old post", "body": "From before migrations.", "created": datetime(2020, 1, 1)}


def make_legacy_blog(path) -> None:
    """A pre-migration blog.db at path, holding OLD_POST."""
    engine = create_engine(f"sqlite:///{path}")
    make_legacy_database(engine, [OLD_POST])
    engine.dispose()


def init_blog(project: Path, env: dict | None = None) -> None:
    """What `python run.py init` does to a copy of the project (or to env's
    BLOG_DATABASE_URL), done in this process: a test that starts from a new
    blog spends no process on it."""
    url = (env or {}).get("BLOG_DATABASE_URL") or f"sqlite:///{project / 'blog.db'}"
    engine = create_blog_engine(url)
    try:
        init_db(engine, ScriptDirectory.from_config(Config(project / "alembic.ini")))
    finally:
        engine.dispose()


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


if __name__ == "__main__":
    # python -m tests.legacy [PATH]: the blog.db you would have had before
    # migrations, with a few posts, for following the README's lesson.
    import sys
    from pathlib import Path

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "blog.db").resolve()
    if path.exists():
        sys.exit(f"error: {path} exists; move it away first")
    make_legacy_database(create_engine(f"sqlite:///{path}"), LESSON_POSTS)
    print(f"Created {path} as the blog made it before migrations, with 3 posts")
