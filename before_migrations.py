"""The blog's database as it was before migrations, to follow the README's lesson.

    python before_migrations.py [PATH]

makes PATH (by default the blog.db beside this file, the one alembic.ini names)
with the posts table alone, made by create_all as the first version of the blog
made it, and three posts. It never overwrites a file.
"""

import sys
from datetime import datetime
from pathlib import Path

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
)

from database_safety import DatabaseProblem, refuse_a_stray_wal

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


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "blog.db").resolve()
    if path.exists():
        sys.exit(f"error: {path} exists; move it away first")
    try:
        refuse_a_stray_wal(path)
    except DatabaseProblem as problem:
        sys.exit(f"error: {problem}")
    engine = create_engine(f"sqlite:///{path}")
    make_legacy_database(engine, LESSON_POSTS)
    engine.dispose()
    print(f"Created {path} as the blog made it before migrations, with 3 posts")
