"""What a user could see of a database: its schema and every row of every table."""

import sqlite3

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, func, inspect, select, text

from blog.db import get_db


def schema(engine: Engine) -> dict:
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # The text SQLite keeps, white space folded (offline SQL indents
            # with spaces, online with tabs); a half-done batch copy shows here.
            return {
                "sqlite_master": [
                    (type_, name, table, sql and " ".join(sql.split()))
                    for type_, name, table, sql in connection.execute(
                        text("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")
                    )
                ]
            }
        inspector = inspect(connection)
        return {
            table: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)
                ],
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"])) for i in inspector.get_indexes(table)
                ),
                "foreign_keys": sorted(
                    (fk["name"], tuple(fk["constrained_columns"]), fk["referred_table"])
                    for fk in inspector.get_foreign_keys(table)
                ),
                "unique": sorted(
                    (u["name"], tuple(u["column_names"]))
                    for u in inspector.get_unique_constraints(table)
                ),
            }
            for table in sorted(inspector.get_table_names())
        }


def rows(engine: Engine) -> dict[str, list[dict]]:
    """Every row of every table, as column -> value, in primary key order."""
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as connection:
        return {
            name: [
                dict(row._mapping)
                for row in connection.execute(
                    select(table).order_by(*(table.primary_key.columns or table.columns))
                )
            ]
            for name, table in tables.tables.items()
        }


def state(engine: Engine) -> dict:
    return {"schema": schema(engine), "rows": rows(engine)}


def current_revision(engine: Engine) -> str | None:
    """What `alembic current` shows: the database's revision, or None before the first."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def columns(engine: Engine) -> dict[str, set[str]]:
    inspector = inspect(engine)
    return {
        table: {c["name"] for c in inspector.get_columns(table)}
        for table in inspector.get_table_names()
    }


def unchanged_part(rows_before: dict, columns_before: dict, engine: Engine) -> tuple:
    """The rows before and now, cut to the tables and columns present both times.

    What a revision adds or removes is its own; everything else must not change.
    """
    columns_now = columns(engine)
    # alembic_version is Alembic's to change at every step.
    tables = (columns_before.keys() & columns_now.keys()) - {"alembic_version"}
    shared = {table: columns_before[table] & columns_now[table] for table in tables}

    def cut(all_rows):
        return {
            table: [{c: row[c] for c in shared[table]} for row in all_rows[table]]
            for table in shared
        }

    return cut(rows_before), cut(rows(engine))


def titles(path) -> list[str]:
    """The titles of the posts in the SQLite file at path, in id order."""
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT title FROM post ORDER BY id")]


def version(path) -> list[tuple]:
    """The SQLite file's alembic_version rows."""
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT version_num FROM alembic_version").fetchall()


def count_rows(app, model) -> int:
    """How many rows the model's table holds, as the blog sees them."""
    with app.app_context():
        return get_db().execute(select(func.count()).select_from(model)).scalar_one()


def files_beside(db):
    """The database and what lies beside it, but for its own -wal and -shm,
    which are there while any connection (the test's too) has it open."""
    own = {f"{db.name}-wal", f"{db.name}-shm"}
    return sorted(
        path.name
        for path in db.parent.iterdir()
        if path.name.startswith(db.name) and path.name not in own
    )
