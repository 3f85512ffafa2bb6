import itertools
import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app, g
from sqlalchemy import Engine, MetaData, create_engine, event, func, inspect, make_url, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from werkzeug.exceptions import ServiceUnavailable

from .models import Base

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


class DatabaseProblem(Exception):
    """Something about the database that its owner must fix; the message says how."""


def alembic_config(ini: Path = ALEMBIC_INI) -> Config:
    if not ini.is_file():
        raise DatabaseProblem(f"{ini} is missing; it names the blog's database")
    return Config(ini)


def migration_scripts(app) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(app.config["ALEMBIC_INI"]))


def database_url(config: Config) -> str:
    """The one setting both the blog and its migrations use."""
    return os.environ.get("BLOG_DATABASE_URL") or config.get_main_option("sqlalchemy.url")


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL; None for a database server or memory."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).resolve()


def create_db_engine(url: str) -> Engine:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
    return engine


def _configure_sqlite(dbapi_connection, connection_record) -> None:
    # SQLite checks foreign keys only when asked, connection by connection.
    dbapi_connection.execute("PRAGMA foreign_keys = ON")
    # Let SQLAlchemy emit BEGIN (below) instead of pysqlite, which runs DDL
    # outside any transaction (SQLAlchemy's pysqlite documentation).
    dbapi_connection.isolation_level = None


def _begin_immediate(connection) -> None:
    # Take the write lock up front: a transaction that reads first and
    # writes later fails at once when another writer holds the lock,
    # while one that asks at BEGIN waits its turn.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def get_db() -> Session:
    """The request's session, opened on first use and closed at teardown."""
    if "db" not in g:
        g.db = Session(current_app.extensions["db_engine"])
    return g.db


def close_db(exception: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def database_busy(error: OperationalError):
    # A locked database or one mid-migration: worth retrying, not a crash.
    current_app.logger.warning("database unavailable: %s", error.orig)
    # The page must not touch the database again: drop the failed session
    # and the user it loaded (the page then shows the logged-out menu).
    close_db()
    g.pop("user", None)
    busy = ServiceUnavailable(
        "The database is busy, perhaps being migrated. Please try again in a moment.",
        retry_after=1,
    )
    return current_app.handle_http_exception(busy)


def init_app(app) -> None:
    app.extensions["db_engine"] = create_db_engine(app.config["DATABASE_URL"])
    app.teardown_appcontext(close_db)
    app.register_error_handler(OperationalError, database_busy)


def backup_database(path: Path) -> Path:
    """Copy a SQLite database beside itself with SQLite's online backup API.

    The copy is consistent even while the blog is writing. It goes to
    blog.db.bak, or blog.db.bak.1, .2, ...: an earlier backup is never
    overwritten.
    """
    for n in itertools.count():
        backup = path.with_name(f"{path.name}.bak" + (f".{n}" if n else ""))
        try:
            backup.touch(exist_ok=False)  # claims the name, even against a racing init
            break
        except FileExistsError:
            continue
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as source:
            with closing(sqlite3.connect(backup)) as target:
                source.backup(target)
    except sqlite3.DatabaseError as error:
        backup.unlink()
        raise DatabaseProblem(f"cannot back up {path}: {error}") from error
    except BaseException:
        backup.unlink()
        raise
    return backup


def init_db(engine: Engine, scripts: ScriptDirectory) -> Path | None:
    """Create the current schema, stamped at the Alembic head, in one transaction.

    An existing SQLite database is backed up first, then emptied; the backup's
    path is returned. A database server's tables are never dropped: back them
    up with the server's own tools first.
    """
    path = sqlite_path(str(engine.url))
    if path and not path.parent.is_dir():
        raise DatabaseProblem(f"cannot create {path}: {path.parent} is not a folder")
    backup = backup_database(path) if path and path.exists() else None
    with engine.begin() as connection:
        existing = MetaData()
        existing.reflect(connection)
        if existing.tables and backup is None:
            raise DatabaseProblem(
                f"{engine.url.render_as_string()} already has tables "
                f"({', '.join(sorted(existing.tables))}); drop them yourself after a "
                "backup, or keep them and run `alembic upgrade head`"
            )
        existing.drop_all(connection)
        Base.metadata.create_all(connection)
        MigrationContext.configure(connection).stamp(scripts, "head")
    return backup


def check_database(engine: Engine, scripts: ScriptDirectory) -> None:
    """Raise DatabaseProblem, saying how to fix it, unless the database
    exists and is at this code's latest revision."""
    path = sqlite_path(str(engine.url))
    if path and not path.exists():
        raise DatabaseProblem(f"{path} does not exist; run `python run.py init`")
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
        has_posts_table = inspect(connection).has_table("post")
    heads = set(scripts.get_heads())
    if current == heads:
        return
    if not has_posts_table:
        raise DatabaseProblem("the database has no blog tables; run `python run.py init`")
    if not current:
        raise DatabaseProblem(
            "the database has no migration revision (a blog.db from before "
            "migrations?); run `alembic upgrade head`"
        )
    known = {revision.revision for revision in scripts.walk_revisions()}
    unknown = current - known
    if unknown:
        raise DatabaseProblem(
            f"the database is at revision {', '.join(sorted(unknown))}, which this "
            "code does not know; run the code that migrated it, or downgrade with it"
        )
    raise DatabaseProblem(
        f"the database is at revision {', '.join(sorted(current))}, behind "
        f"this code's {', '.join(sorted(heads))}; run `alembic upgrade head`"
    )


def copy_database(source: Engine, target: Engine, scripts: ScriptDirectory,
                  progress: Callable[[str], None], batch_size: int = 1000) -> None:
    """Copy every user and post to another database, keeping their ids.

    The target gets the current schema if it has no tables; otherwise it must
    be at the latest revision and hold no users or posts. Rows go over in
    batches of batch_size, all in one transaction on the target, so a failed
    copy leaves nothing half-done there.
    """
    check_database(source, scripts)
    target_path = sqlite_path(str(target.url))
    # (Inspecting a missing SQLite file would create it, and init would back it up.)
    if (target_path and not target_path.exists()) or not inspect(target).get_table_names():
        init_db(target, scripts)
    check_database(target, scripts)
    with source.connect() as reader, target.begin() as writer:
        for table in Base.metadata.sorted_tables:  # users before the posts that name them
            if writer.scalar(select(func.count()).select_from(table)):
                raise DatabaseProblem(f"the target already has rows in {table.name}; "
                                      "copy into an empty database")
            total = reader.scalar(select(func.count()).select_from(table))
            copied, last_id = 0, 0
            while rows := reader.execute(
                select(table).where(table.c.id > last_id).order_by(table.c.id).limit(batch_size)
            ).mappings().all():
                writer.execute(table.insert(), rows)
                copied, last_id = copied + len(rows), rows[-1]["id"]
                progress(f"{table.name}: copied {copied:,} of {total:,}")
            if writer.dialect.name == "postgresql":
                # Explicit ids do not move PostgreSQL's sequence; new rows would collide.
                name = writer.dialect.identifier_preparer.format_table(table)
                writer.execute(text(
                    f"SELECT setval(pg_get_serial_sequence(:name, 'id'), "
                    f"coalesce(max(id), 0) + 1, false) FROM {name}"), {"name": name})
