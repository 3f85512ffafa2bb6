"""The blog's connection to its database: one engine, one session per request."""

import os
from pathlib import Path

from alembic.config import Config
from click import ClickException
from flask import current_app, g, has_request_context, request
from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from werkzeug.exceptions import ServiceUnavailable

from .csrf import SAFE_METHODS  # the methods that change nothing only read

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"

# SQLite as production apps run it: write-ahead logging, so that readers never
# wait for a writer; a writer waits up to 5 s for another; foreign keys
# checked. synchronous=FULL, not the usual NORMAL: with NORMAL a power cut can
# take back the last commits, and the blog promises that a post it has
# acknowledged stays.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
    "PRAGMA journal_size_limit = 67108864",
)


class DatabaseProblem(ClickException):
    """Something about the database that its owner must fix; the message says how.

    A ClickException, so that `flask run` shows it as one line, as run.py does.
    """


def alembic_config(ini: Path = ALEMBIC_INI) -> Config:
    if not ini.is_file():
        raise DatabaseProblem(f"{ini} is missing; it names the blog's database")
    return Config(ini)


def database_url(config: Config) -> str:
    """The one setting both the blog and its migrations use."""
    url = os.environ.get("BLOG_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise DatabaseProblem(f"{config.config_file_name} names no sqlalchemy.url")
    return url


def shown(url: str | URL) -> str:
    """A database URL as it may be printed: without its password, wherever the URL
    holds one (user:password@host, or ?password= as the drivers also take it)."""
    url = make_url(url)
    passwords = [name for name in url.query if "pass" in name.lower()]
    return url.difference_update_query(passwords).render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL; None for a database server or memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


def create_db_engine(url: str) -> Engine:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin)
    return engine


def _configure_sqlite(dbapi_connection, connection_record) -> None:
    for pragma in SQLITE_PRAGMAS:
        dbapi_connection.execute(pragma)
    # Let SQLAlchemy emit BEGIN (below) instead of pysqlite, which runs DDL
    # outside any transaction (SQLAlchemy's pysqlite documentation).
    dbapi_connection.isolation_level = None


def _begin(connection) -> None:
    # A transaction that may write takes the write lock at BEGIN IMMEDIATE:
    # one that read first would fail at once when it came to write while
    # another held the lock. Reads begin DEFERRED and take no lock at all.
    connection.exec_driver_sql(
        f"BEGIN {connection.get_execution_options().get('begin', 'IMMEDIATE')}"
    )


def get_db() -> Session:
    """The request's session, opened on first use and closed at teardown."""
    if "db" not in g:
        reads_only = has_request_context() and request.method in SAFE_METHODS
        engine = current_app.extensions["db_read_engine" if reads_only else "db_engine"]
        # Objects keep their values after a commit: the answer to a write is
        # built without touching the database again.
        g.db = Session(engine, expire_on_commit=False)
    return g.db


def close_db(exception: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


def database_unavailable(error: DBAPIError):
    # A locked database, or one whose schema a migration is changing under
    # the running blog (each driver names a missing table or column with an
    # error class of its own): worth retrying, not a crash.
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
    engine = create_db_engine(app.config["DATABASE_URL"])
    app.extensions["db_engine"] = engine
    app.extensions["db_read_engine"] = engine.execution_options(begin="DEFERRED")
    app.teardown_appcontext(close_db)
    app.register_error_handler(DBAPIError, database_unavailable)
