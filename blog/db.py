"""The blog's connection to its database: one engine, one session per request,
and a connection for a quick read outside it."""

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from alembic.config import Config
from flask import current_app, g, has_request_context, request
from sqlalchemy import Connection, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, ServiceUnavailable

from database_safety import DatabaseProblem, create_engine, error_code, sqlite_path

from .csrf import SAFE_METHODS  # the methods that change nothing only read

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def alembic_config(ini: Path = ALEMBIC_INI) -> Config:
    if not ini.is_file():
        raise DatabaseProblem(f"{ini} is missing; it names the blog's database")
    return Config(ini)


class BlogSession(Session):
    def commit(self) -> None:
        # Checked again under the write lock, just before the commit: a file
        # that lost its name since the request began must take nothing more.
        self.flush()
        refuse_a_moved_file()
        super().commit()
        # Moved in the last instant: the commit reached no one's blog.db, and
        # the request must not say it was stored.
        refuse_a_moved_file()


def get_db() -> Session:
    """The request's session, opened on first use and closed at teardown."""
    if "db" not in g:
        refuse_a_moved_file()
        reads_only = has_request_context() and request.method in SAFE_METHODS
        engine = current_app.extensions["db_read_engine" if reads_only else "db_engine"]
        # Objects keep their values after a commit: the answer to a write is
        # built without touching the database again.
        g.db = BlogSession(engine, expire_on_commit=False)
    return g.db


@contextlib.contextmanager
def reading() -> Iterator[Connection]:
    """A connection for a read outside the request's session, in a transaction
    of its own that takes no write lock; closed when the read is done."""
    refuse_a_moved_file()
    with current_app.extensions["db_read_engine"].connect() as connection:
        yield connection


class DatabaseFileMoved(ServiceUnavailable):
    description = (
        "The blog's database file was removed or replaced while the blog was running, so "
        "the blog can neither show nor store anything until it is restarted. Its owner must "
        "restart it; the server's log says more."
    )


class DatabaseFile:
    """The SQLite file the blog opened, and whether its path still names it.

    SQLite's connections keep the file they opened, whatever happens to its
    name: after `rm` or `mv` they would write to a file that no path reaches.
    So each request first checks that the path still names that file (one
    stat(); the whole check takes a few microseconds).
    """

    def __init__(self, path: Path, logger: logging.Logger) -> None:
        self.path, self.logger = path, logger
        self.opened, self.moved = self.identity(), False

    def identity(self) -> tuple[int, int] | None:
        try:
            status = self.path.stat()
        except OSError:  # gone, or its folder is (the commands say which)
            return None
        return status.st_dev, status.st_ino

    def still_there(self) -> bool:
        if self.opened is None:
            self.opened = self.identity()  # created after the blog started, by init
        if not self.moved and self.identity() != self.opened:
            self.moved = True
            self.logger.error(
                "%s is no longer the file the blog opened (removed or replaced): refusing "
                "every request until a restart. To put a backup back, stop the blog and use "
                "`python run.py restore`, never cp or mv.",
                self.path,
            )
        return not self.moved

    def refuse_to_open_another(self, dialect, connection_record, cargs, cparams) -> None:
        """Before each new connection: a request that passed its check as the file
        went must not open (and so create, empty) whatever is now at the path."""
        if not self.still_there():
            raise DatabaseFileMoved()

    def close_if_moved(self, dbapi_connection, connection_record) -> None:
        """Each connection to the old file, as it goes back to the pool or is
        closed, empties the -wal into that file first: SQLite would otherwise
        apply the old file's pages to the new one at the path the next time it
        is opened (it never checkpoints a moved database on close)."""
        if self.moved and dbapi_connection is not None:
            with contextlib.suppress(sqlite3.Error):
                dbapi_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            dbapi_connection.close()


def refuse_a_moved_file() -> None:
    database_file = current_app.extensions["db_file"]
    if database_file is None or database_file.still_there():
        return  # a database server, or the file the blog opened
    current_app.extensions["db_engine"].dispose()
    raise DatabaseFileMoved()


def close_db(exception: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


# SQLite's errors that waiting will not cure, by the name of their code (and
# of its extended codes, SQLITE_IOERR_WRITE and the like): the owner must act.
LASTING_SQLITE_ERRORS = {
    "SQLITE_FULL": "the disk that holds the database is full",
    "SQLITE_READONLY": "the database cannot be written (a read-only file or folder)",
    "SQLITE_IOERR": "the disk that holds the database failed to read or write",
    "SQLITE_CORRUPT": "the database file is damaged",
    "SQLITE_NOTADB": "the file at the database's path is not a database",
    "SQLITE_CANTOPEN": "the database file cannot be opened",
}


# Of those, the ones that leave reading the blog as it was.
READS_GO_ON = {"SQLITE_FULL", "SQLITE_READONLY"}


def lasting_cause(error: DBAPIError) -> tuple[str, str] | None:
    """What is wrong, if it is something that will not pass by itself: the
    code's name and the cause in words."""
    code = getattr(error.orig, "sqlite_errorname", "")
    for name, cause in LASTING_SQLITE_ERRORS.items():
        if code == name or code.startswith(name + "_"):
            return name, cause
    return None


# What a database server refuses to store, whenever it is sent again: MariaDB's
# "Incorrect string value" and "Data too long"; PostgreSQL's value too long and
# characters its encoding lacks.
UNSTORABLE = {1366, 1406, "22001", "22021", "22P05"}


def database_unavailable(error: DBAPIError):
    # The page must not touch the database again: drop the failed session.
    # Who is logged in was read apart from it, so the page still shows that.
    close_db()
    if error_code(error) in UNSTORABLE:
        current_app.logger.error("the database refused the text of a request: %s", error.orig)
        return current_app.handle_http_exception(
            BadRequest(
                "The database cannot store this text as written (a character it cannot "
                "hold, or a value too long for it), so nothing was saved. Its owner can "
                "find why in the server's log."
            )
        )
    lasting = lasting_cause(error)
    if lasting:
        name, cause = lasting
        current_app.logger.error("the database cannot be used: %s (%s)", cause, error.orig)
        what = (
            "cannot store anything new now"
            if name in READS_GO_ON
            else "cannot store or show anything now"
        )
        still = " Reading the blog still works." if name in READS_GO_ON else ""
        unusable = ServiceUnavailable(
            f"The blog {what}: {cause}.{still} "
            "Its owner must put that right; the server's log says more."
        )
        return current_app.handle_http_exception(unusable)
    # A locked database, or one whose schema a migration is changing under
    # the running blog (each driver names a missing table or column with an
    # error class of its own): worth retrying, not a crash.
    current_app.logger.warning("database unavailable: %s", error.orig)
    busy = ServiceUnavailable(
        "The database is busy, perhaps being migrated. Please try again in a moment.",
        retry_after=1,
    )
    return current_app.handle_http_exception(busy)


def init_app(app) -> None:
    engine = create_engine(app.config["DATABASE_URL"], app.config.get("LOCK_WAIT_SECONDS"))
    path = sqlite_path(app.config["DATABASE_URL"])
    app.extensions["db_file"] = database_file = DatabaseFile(path, app.logger) if path else None
    if database_file:
        event.listen(engine, "do_connect", database_file.refuse_to_open_another)
        event.listen(engine, "checkin", database_file.close_if_moved)
        event.listen(engine, "close", database_file.close_if_moved)
    app.extensions["db_engine"] = engine
    app.extensions["db_read_engine"] = engine.execution_options(begin="DEFERRED")
    app.teardown_appcontext(close_db)
    app.register_error_handler(DBAPIError, database_unavailable)
