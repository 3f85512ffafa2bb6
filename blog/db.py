"""The blog's connection to its database: one engine, one session per request."""

from pathlib import Path

from alembic.config import Config
from flask import current_app, g, has_request_context, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from werkzeug.exceptions import ServiceUnavailable

from database_safety import DatabaseProblem, create_engine

from .csrf import SAFE_METHODS  # the methods that change nothing only read

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def alembic_config(ini: Path = ALEMBIC_INI) -> Config:
    if not ini.is_file():
        raise DatabaseProblem(f"{ini} is missing; it names the blog's database")
    return Config(ini)


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
    engine = create_engine(app.config["DATABASE_URL"])
    app.extensions["db_engine"] = engine
    app.extensions["db_read_engine"] = engine.execution_options(begin="DEFERRED")
    app.teardown_appcontext(close_db)
    app.register_error_handler(DBAPIError, database_unavailable)
