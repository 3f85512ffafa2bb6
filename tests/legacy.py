"""The blog as it was before migrations: one model, its table made by create_all."""

from sqlalchemy import Column, DateTime, Engine, Integer, MetaData, String, Table, Text

legacy_metadata = MetaData()

legacy_post = Table(
    "post",
    legacy_metadata,
    Column("id", Integer, primary_key=True),
    Column("title", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("created", DateTime, nullable=False),
)


def make_legacy_database(engine: Engine, posts: list[dict]) -> None:
    with engine.begin() as connection:
        legacy_metadata.create_all(connection)
        if posts:
            connection.execute(legacy_post.insert(), posts)
