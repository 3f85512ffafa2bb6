"""What keeps the blog's database safe, for the blog and its migrations alike.

alembic/env.py and the blog both import this module, so that each piece exists
once: which database URL applies, SQLite's connection settings, backups, and
the checks around a migration. It imports neither Flask nor the blog (but
for the models, for `alembic check` and autogenerate): the migrations must
run whatever state the blog's code is in.
"""

import contextlib
import functools
import io
import logging
import math
import os
import re
import sqlite3
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import sqlalchemy
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.util import CommandError
from click import ClickException
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    MetaData,
    event,
    func,
    inspect,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import ColumnElement

log = logging.getLogger("alembic.env")


class DatabaseProblem(CommandError, ClickException):
    """Something about the database that its owner must fix; the message says how.

    alembic prints a CommandError, and flask and run.py a ClickException, as one line.
    """


class SettingProblem(CommandError, ClickException):
    """A setting (a BLOG_* variable) that cannot be used; the message says which and why."""


def whole_setting(variable: str, default: int, unit: str) -> int:
    """The environment's variable as a whole number, at least 1, of unit; default if unset."""
    value = os.environ.get(variable)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit() and int(value) >= 1):
        raise SettingProblem(f"{variable} must be a whole number of {unit}, not {value!r}")
    return int(value)


# --- Which database ---------------------------------------------------------


def database_url(config: Config) -> str:
    """The one setting both the blog and its migrations use: BLOG_DATABASE_URL,
    else alembic.ini's sqlalchemy.url."""
    url = os.environ.get("BLOG_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise DatabaseProblem(f"{config.config_file_name} names no sqlalchemy.url")
    return url


# What a host name or address holds. Anything else, an "@" above all, is most
# likely the rest of a password that was not URL-encoded.
HOST_CHARACTERS = re.compile(r"[A-Za-z0-9._:%\[\]-]+")


def parsed_url(url: str | URL) -> URL:
    """The URL, refused without being repeated if its host could hold part of a password."""
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise DatabaseProblem(
            "the database URL cannot be read as dialect+driver://user:password@host/database"
        ) from None
    if parsed.host is not None and not HOST_CHARACTERS.fullmatch(parsed.host):
        raise DatabaseProblem(
            "the database URL's host is not a host name, so its password may hold an @, / or "
            "space: write each such character URL-encoded (@ as %40, / as %2F, a space as %20)"
        )
    return parsed


def shown(url: str | URL) -> str:
    """A database URL as it may be printed: without its password, wherever the URL
    holds one (user:password@host, or ?password= as the drivers also take it)."""
    url = parsed_url(url)
    passwords = [name for name in url.query if "pass" in name.lower()]
    return url.difference_update_query(passwords).render_as_string(hide_password=True)


def sqlite_path(url: str | URL) -> Path | None:
    """The file behind a SQLite URL; None for a database server or memory."""
    parsed = parsed_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


def check_sqlite_file(path: Path) -> None:
    """Refuse, before SQLite opens it, a path that can never hold the database."""
    if not path.parent.is_dir():
        raise DatabaseProblem(f"cannot create {path}: {path.parent} is not a folder")
    if path.exists() and not path.is_file():
        # A FIFO would hang SQLite forever; a device is nobody's database.
        raise DatabaseProblem(f"{path} is not a regular file, so it cannot be a database")
    # Else SQLite's own word for both is "attempt to write a readonly database".
    if not os.access(path.parent, os.W_OK):
        raise DatabaseProblem(
            f"the folder {path.parent} is read-only: SQLite keeps {path.name}-wal and "
            f"{path.name}-shm beside the database; make the folder writable"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise DatabaseProblem(f"{path} is read-only; make it writable")


def refuse_a_stray_wal(path: Path) -> None:
    """A -wal with writes in it but without its database belongs to a blog.db
    that was moved or removed: SQLite would apply its pages to a new file of
    that name, and they may be the last writes of the old one."""
    wal = path.with_name(f"{path.name}-wal")
    if not path.exists() and wal.exists() and wal.stat().st_size > 0:
        raise DatabaseProblem(
            f"{path} is gone but {wal.name} is still beside it: the last writes of a "
            f"{path.name} that was moved or removed. Stop the blog if it runs, then put that "
            f"{path.name} back (SQLite folds them in when it next opens it) or "
            f"move {wal.name} and {path.name}-shm away, and run this again"
        )


def refuse_a_missing_database(url: str | URL) -> None:
    """Before connecting, which would create an empty SQLite file: the file must be there."""
    path = sqlite_path(url)
    if path and not path.exists():
        raise DatabaseProblem(f"{path} does not exist; run `python run.py init`")
    if path:
        check_sqlite_file(path)


# --- SQLite's connection ----------------------------------------------------

# SQLite as production apps run it: write-ahead logging, so that readers never
# wait for a writer; a page's writer waits up to 5 s for another; foreign keys
# checked. synchronous=FULL, not the usual NORMAL: with NORMAL a power cut can
# take back the last commits, and the blog promises that a post it has
# acknowledged stays.
PAGE_LOCK_WAIT = 5
SQLITE_BUSY_TIMEOUT = f"PRAGMA busy_timeout = {PAGE_LOCK_WAIT * 1000}"
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    SQLITE_BUSY_TIMEOUT,
    "PRAGMA foreign_keys = ON",
    "PRAGMA journal_size_limit = 67108864",
)


# How long `alembic` and `run.py` commands wait for SQLite's write lock: a person
# waiting on a command can wait longer than a page does (BLOG_COMMAND_WAIT_SECONDS).
COMMAND_LOCK_WAIT = 60


def command_lock_wait() -> int:
    return whole_setting("BLOG_COMMAND_WAIT_SECONDS", COMMAND_LOCK_WAIT, "seconds")


def create_engine(url: str | URL, lock_wait: int | None = None, **kwargs) -> Engine:
    """An engine for the blog's database, with SQLite's settings on SQLite.

    A command passes lock_wait, the seconds it waits for SQLite's write lock
    (a page waits 5 s): after those 5 s it says what it waits for."""
    try:
        engine = sqlalchemy.create_engine(parsed_url(url), **kwargs)
    except ModuleNotFoundError as error:  # the URL's driver
        raise DatabaseProblem(
            f"{shown(url)} needs the Python module {error.name}, which is not installed; the "
            "drivers for database servers are in requirements-servers.txt "
            "(pip install -r requirements-servers.txt)"
        ) from error
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", functools.partial(_configure_sqlite, sqlite_path(url)))
        event.listen(
            engine, "begin", functools.partial(_begin_waiting, lock_wait) if lock_wait else _begin
        )
    return engine


def create_reading_engine(url: str | URL) -> Engine:
    """An engine that reads another database and never changes it: a SQLite
    file is opened read-only, without the settings that write (WAL, the file's
    mode) and without the write lock."""
    path = sqlite_path(url)
    if path is None:
        return create_engine(url)
    if not path.is_file():
        raise DatabaseProblem(f"{path} does not exist")
    file_uri = f"{path.as_uri()}?mode=ro"
    engine = sqlalchemy.create_engine(
        url, creator=lambda: sqlite3.connect(file_uri, uri=True, check_same_thread=False)
    )
    event.listen(engine, "connect", _configure_sqlite_reader)
    event.listen(engine, "begin", _begin)
    return engine.execution_options(begin="DEFERRED")


def fold_the_wal(url: str | URL) -> None:
    """Leave a SQLite database whole in its one file: the last connection to
    close folds -wal into it and removes -wal and -shm. Called once nothing else
    has it open, so that a `cp` or `mv` of the file takes every commit."""
    path = sqlite_path(url)
    if path is None or not path.exists():
        return
    engine = create_engine(url)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def keep_private(path: Path) -> None:
    """The database holds password hashes: readable by its owner alone, whatever
    the umask. SQLite gives a new -wal and -shm its mode, and back_up() each copy."""
    for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        # Missing, or another user's: nothing of ours to change.
        with contextlib.suppress(FileNotFoundError, PermissionError):
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & 0o700)


def _configure_sqlite(path: Path | None, dbapi_connection, connection_record) -> None:
    if path:
        keep_private(path)  # opening it has just created it, if it was not there
    for pragma in SQLITE_PRAGMAS:
        dbapi_connection.execute(pragma)
    # Let SQLAlchemy emit BEGIN (below) instead of pysqlite, which runs DDL
    # outside any transaction (SQLAlchemy's pysqlite documentation): a
    # migration that fails rolls back whole.
    dbapi_connection.isolation_level = None


def _configure_sqlite_reader(dbapi_connection, connection_record) -> None:
    dbapi_connection.execute(SQLITE_BUSY_TIMEOUT)  # alone: the other settings write
    dbapi_connection.isolation_level = None  # BEGIN is ours, as above


def _begin(connection) -> None:
    # A transaction that may write takes the write lock at BEGIN IMMEDIATE:
    # one that read first would fail at once when it came to write while
    # another held the lock. Reads begin DEFERRED and take no lock at all.
    begin = f"BEGIN {connection.get_execution_options().get('begin', 'IMMEDIATE')}"
    # Straight to the driver: through SQLAlchemy's execution, each request's
    # BEGIN cost a fifth of a login's read. Its errors wrapped as SQLAlchemy
    # wraps the others, so that a lock waited out is "busy", not a crash.
    dbapi = connection.dialect.loaded_dbapi
    try:
        connection.connection.dbapi_connection.cursor().execute(begin)
    except dbapi.Error as error:
        raise DBAPIError.instance(
            begin, None, error, dbapi.Error, dialect=connection.dialect
        ) from error


def _begin_waiting(lock_wait: int, connection) -> None:
    """A command's BEGIN: a page's wait, then a line saying what it waits for,
    then the rest of lock_wait."""
    try:
        return _begin(connection)
    except DBAPIError as error:
        if getattr(error.orig, "sqlite_errorname", "") != "SQLITE_BUSY":
            raise
    log.warning(
        "waiting for the write lock of %s, which another process holds (the blog writing, or "
        "another command), for up to %s s more (BLOG_COMMAND_WAIT_SECONDS)",
        sqlite_path(connection.engine.url),
        max(lock_wait - PAGE_LOCK_WAIT, 0),
    )
    driver = connection.connection.dbapi_connection
    driver.execute(f"PRAGMA busy_timeout = {max(lock_wait - PAGE_LOCK_WAIT, 0) * 1000}")
    try:
        _begin(connection)
    finally:
        driver.execute(SQLITE_BUSY_TIMEOUT)


def transactional_ddl(url: str | URL) -> bool | None:
    """For context.configure: SQLite's DDL is transactional once BEGIN is ours,
    and a whole command runs as one transaction. A server commits each revision
    on its own (transaction_per_migration), so that a retry after a lock timeout
    repeats only the revision that waited, and a revision may build an index
    outside any transaction."""
    return True if make_url(url).get_backend_name() == "sqlite" else None


def value_columns(connection: Connection, table_name: str, schema: str | None = None) -> list[str]:
    """The table's columns that hold values, as the database has them: not the
    generated ones (user.username_key), which it computes and refuses values for."""
    columns = inspect(connection).get_columns(table_name, schema=schema)
    return [info["name"] for info in columns if "computed" not in info]


# Revision 3's sessions and failed logins belong to the database they were
# made on: dropping them logs everyone out and forgets old failures, but loses
# nothing anyone wrote, and a restored backup must not bring them back.
DISPOSABLE_TABLES = frozenset({"user_session", "login_failure"})


# --- Backups ----------------------------------------------------------------

# A backup being written, or one that a killed process left unfinished.
PARTIAL_BACKUP_PREFIX = ".partial-backup-of-"


def back_up(path: Path) -> Path:
    """Copy a SQLite database to a new file beside it and return the copy's path.

    The copy goes to blog.db.bak, or blog.db.bak.1, .2, ...: an earlier backup is
    never overwritten. It holds what the last commit left (SQLite's online backup
    API reads blog.db-wal too); called while another connection holds the write
    lock and has changed nothing yet, no commit can fall between the backup and
    what that connection does next. The copy is a single file, with the
    database's permissions, on disk before this returns.

    It is whole or absent: written under a name nobody takes for a backup,
    then linked to its own. Whatever stops it, SIGKILL included, leaves at most
    a partial copy under that other name, which the next backup removes.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    # Callers hold the write lock: no other backup of this database is under way.
    for leftover in path.parent.glob(f"{PARTIAL_BACKUP_PREFIX}{path.name}.*"):
        leftover.unlink(missing_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{PARTIAL_BACKUP_PREFIX}{path.name}.")
    partial = Path(name)
    try:
        os.fchmod(fd, mode)  # exactly the database's mode, whatever the umask
        with closing(sqlite3.connect(path)) as source, closing(sqlite3.connect(partial)) as target:
            source.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")  # no -wal beside the copy
        os.fsync(fd)
        backup = link_numbered(partial, path, ".bak")
        fsync_folder(path.parent)
    except sqlite3.Error as error:
        raise DatabaseProblem(f"cannot back up {path}: {error}") from error
    finally:
        os.close(fd)
        for leftover in (partial, partial.with_name(partial.name + "-journal")):
            leftover.unlink(missing_ok=True)
    return backup


def link_numbered(file: Path, path: Path, suffix: str) -> Path:
    """Give file a second name beside path: blog.db.bak, or blog.db.bak.1, .2, ...
    for suffix ".bak"; never a name another file has."""
    n = 0
    while True:
        name = path.with_name(f"{path.name}{suffix}" + (f".{n}" if n else ""))
        try:
            os.link(file, name)  # never replaces a file of that name
            return name
        except FileExistsError:
            n += 1


def fsync_folder(folder: Path) -> None:
    # A new file's name is on disk only once its folder is.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- Around a migration (alembic/env.py) --------------------------------------


def models_metadata(config: Config) -> MetaData | None:
    """The models' metadata, for the commands that compare them with the database.

    A caller may pass it (pytest-alembic does). Otherwise only
    `alembic check` and `alembic revision --autogenerate` import the blog's
    models: upgrades and downgrades never import the blog.
    """
    if "target_metadata" in config.attributes:
        return config.attributes["target_metadata"]
    command = getattr(config.cmd_opts, "cmd", None)
    name = command[0].__name__ if command else None
    if name == "check" or (name == "revision" and getattr(config.cmd_opts, "autogenerate", False)):
        from blog.models import Base

        return Base.metadata
    return None


@contextlib.contextmanager
def connect(connectable: Engine | Connection) -> Iterator[Connection]:
    """A connection for the migration, holding the database's migration lock
    (one_migration_at_a_time), and its errors as one line naming the database
    (without its password); `alembic --raiseerr` shows the traceback.

    A caller may share its own connection (Alembic's cookbook, "Sharing a
    Connection"): it is used as it is, its transactions the caller's own.
    """
    try:
        if isinstance(connectable, Connection):
            yield connectable
            return
        if isinstance(connectable, Engine):
            # Connecting would create an empty file that no revision can upgrade.
            refuse_a_missing_database(connectable.url)
        with connectable.connect() as connection, one_migration_at_a_time(connection):
            yield connection
    except DBAPIError as error:
        # A failure in batch mode's clean-up hides the one that set it off
        # ("database or disk is full"): report the first.
        while isinstance(error.__context__, DBAPIError):
            error = error.__context__
        reason = str(error.orig).strip()
        if getattr(error.orig, "sqlite_errorname", None) == "SQLITE_IOERR_SHMSIZE":
            reason = "database or disk is full (no room for the -shm file)"
        raise DatabaseProblem(f"{reason} ({shown(connectable.engine.url)})") from error


@contextlib.contextmanager
def safeguards(migration: MigrationContext) -> Iterator[None]:
    """Around the migration's transaction, before the first revision runs:
    refuse an upgrade of a database without the blog; before a downgrade,
    back up a SQLite file, or on a database server refuse one that would drop
    data unless run with `-x drop_data=yes`. The backup goes again if the
    migration fails, COMMIT included: the database is as it was. On a server,
    no statement waits for a lock or runs longer than its timeout.

    Offline (`--sql`), the script sets the same timeouts, and a server
    downgrade whose SQL drops a table or column is refused in the same way."""
    if migration.as_sql:
        limit_waits(migration)
        steps = planned_steps(migration)
        dropped = [step for step in steps if not step.is_upgrade]
        if migration.dialect.name != "sqlite" and dropped:
            refuse_dropping_data(migration, None, dropped)
        yield
        return
    connection = migration.bind
    assert connection is not None
    # begin_transaction() then takes this transaction over; on SQLite, BEGIN
    # IMMEDIATE takes the write lock before the backup, so no commit falls between.
    if not connection.in_transaction():
        connection.begin()
    limit_waits(migration)
    steps = planned_steps(migration)
    refuse_a_database_without_the_blog(connection, steps)
    downgrades = [step for step in steps if not step.is_upgrade]
    backup = None
    if downgrades and connection.dialect.name == "sqlite":
        path = sqlite_path(connection.engine.url)
        # A database in memory (a caller's) ends with its connection: no file to copy.
        if path:
            backup = back_up(path)
            log.info(
                "Backed up %s to %s; `python run.py restore %s` puts it back", path, backup, backup
            )
    elif downgrades:
        refuse_dropping_data(migration, connection, downgrades)
    try:
        yield
    except DBAPIError as error:
        if backup:
            backup.unlink()
        # (SQLite rolls a failed command back whole: nothing of an upgrade stays.)
        if not downgrades or lock_not_granted(error) or connection.dialect.name == "sqlite":
            raise
        # A server keeps what an interrupted upgrade did before it was killed:
        # part of the next revision, which the downgrade of this one trips on.
        reason = str(error.orig).strip().splitlines()[0]
        raise DatabaseProblem(
            f"{reason} ({shown(connection.engine.url)}); if an upgrade was interrupted, the "
            "database may hold part of a later revision: run `alembic upgrade head` first, "
            "then this downgrade"
        ) from error
    except BaseException:
        if backup:
            backup.unlink()
        raise


# --- Locks on a database server ----------------------------------------------

# How long a migration on a server waits for a lock (-x lock_timeout=SECONDS).
# Every query that arrives meanwhile queues behind the migration, so this is
# also the longest a page of the blog waits: 2 s is a slow page, not an outage,
# and far more than a lock takes when no long transaction is open.
LOCK_TIMEOUT = 2.0
# The longest one statement of a migration runs (-x statement_timeout=SECONDS):
# building an index on millions of posts takes seconds, not ten minutes.
STATEMENT_TIMEOUT = 600.0
# After a lock timeout the revision rolls back, and is tried again after each
# of these waits: 5 tries over about 25 s outlast most reports and dumps.
RETRY_DELAYS = (1, 2, 4, 8)


def timeout(migration: MigrationContext, name: str, default: float) -> float:
    value = x_argument(migration, name)
    try:
        seconds = default if value is None else float(value)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise DatabaseProblem(f"-x {name}={value}: give a number of seconds, such as {default:g}")
    return seconds


def limit_waits(migration: MigrationContext) -> None:
    """Set the lock and statement timeouts for the migration's session (printed
    into the script offline)."""
    lock = timeout(migration, "lock_timeout", LOCK_TIMEOUT)
    statement = timeout(migration, "statement_timeout", STATEMENT_TIMEOUT)
    if migration.dialect.name == "postgresql":
        # Not SET LOCAL: they must outlast the commit of each revision.
        settings = [
            f"SET lock_timeout = '{math.ceil(lock * 1000)}ms'",
            f"SET statement_timeout = '{math.ceil(statement * 1000)}ms'",
        ]
    elif migration.dialect.name == "mysql":
        # Table (metadata) locks, then row locks; both in whole seconds.
        settings = [
            f"SET SESSION lock_wait_timeout = {math.ceil(lock)}",
            f"SET SESSION innodb_lock_wait_timeout = {math.ceil(lock)}",
        ]
        if getattr(migration.dialect, "is_mariadb", False):
            settings.append(f"SET SESSION max_statement_time = {statement:g}")
    else:
        return  # SQLite: readers never wait for a migration (WAL)
    for setting in settings:
        migration.execute(setting)


# How long a migration on a server waits for another one of the same database
# to finish: as long as the longest statement.
MIGRATION_WAIT = STATEMENT_TIMEOUT
# A lock per alembic_version table (a schema on PostgreSQL, a database on
# MariaDB), held by the migration's connection until released, across commits.
MIGRATION_LOCKS = {
    "postgresql": (
        "SELECT pg_try_advisory_lock(hashtext('alembic ' || current_schema()))",
        "SELECT pg_advisory_unlock(hashtext('alembic ' || current_schema()))",
    ),
    "mysql": (
        "SELECT GET_LOCK(CONCAT('alembic ', DATABASE()), 0)",
        "SELECT RELEASE_LOCK(CONCAT('alembic ', DATABASE()))",
    ),
}


@contextlib.contextmanager
def one_migration_at_a_time(connection: Connection) -> Iterator[None]:
    """On a server, hold the database's migration lock for the whole command: a
    second `alembic upgrade` started meanwhile waits, then finds the revisions
    already run and runs only what is left, and `alembic current` waits to name
    the revision the first one reached. (SQLite needs none: each command runs in
    one transaction that holds its write lock from the start.)"""
    if connection.dialect.name not in MIGRATION_LOCKS:
        yield
        return
    take, release = (text(statement) for statement in MIGRATION_LOCKS[connection.dialect.name])
    deadline, said = time.monotonic() + MIGRATION_WAIT, False
    while not (taken := connection.execute(take).scalar()):
        connection.rollback()
        if taken is None:  # an error of the lock itself, not another migration's hold
            raise DatabaseProblem("the server refused the migration lock (NULL from its function)")
        if not said:
            log.info("Waiting for another migration of this database to finish")
            said = True
        if time.monotonic() > deadline:
            raise DatabaseProblem(
                f"another migration of this database has been running for over "
                f"{MIGRATION_WAIT:g} s; run this again once it ends"
            )
        time.sleep(0.2)
    # The migration's own transactions start after the lock, and read what the
    # other migration committed.
    connection.commit()
    try:
        yield
    finally:
        # A connection the server broke has lost its lock already.
        with contextlib.suppress(DBAPIError):
            connection.rollback()
            connection.execute(release)
            connection.commit()


def attempts(migration: MigrationContext) -> Iterator[contextlib.AbstractContextManager]:
    """The migration's attempts, each under the safeguards() above, used as

        for attempt in attempts(migration):
            with attempt, context.begin_transaction():
                context.run_migrations()

    On a server, a lock not granted in time rolls back the revision that
    waited, logs one line, and the next attempt runs it again after a pause;
    the last one fails in one line. Revisions committed before stay (each
    commits on its own), so an attempt runs only the rest of the plan.
    """
    if migration.as_sql or migration.dialect.name == "sqlite":
        yield safeguards(migration)
        return
    first_plan = [step_key(step) for step in planned_steps(migration)]
    for number, delay in enumerate((*RETRY_DELAYS, None), start=1):
        plan = [step_key(step) for step in planned_steps(migration)]
        # A relative target (-1, +2) counts from where the database is now.
        if plan != first_plan[len(first_plan) - len(plan) :]:
            raise DatabaseProblem(
                f"stopped at revision {revision_of(migration)} after a lock timeout; "
                "run the command again, with the revision to reach rather than a count"
            )
        attempt = Attempt(migration, last=delay is None)
        yield attempt
        if attempt.wait is None:
            return
        log.warning(
            "%s; rolled back, trying again in %s s (try %s of %s)",
            attempt.wait,
            delay,
            number + 1,
            len(RETRY_DELAYS) + 1,
        )
        time.sleep(delay or 0)


def step_key(step: RevisionStep) -> tuple[str, bool]:
    return step.revision.revision, step.is_upgrade


def revision_of(migration: MigrationContext) -> str:
    return ", ".join(migration.get_current_heads()) or "base (none)"


class Attempt(contextlib.AbstractContextManager):
    """One try of the migration, under its safeguards: notes a lock that was not
    granted in time."""

    def __init__(self, migration: MigrationContext, last: bool) -> None:
        self.migration, self.last = migration, last
        self.safeguards = safeguards(migration)
        self.wait: str | None = None

    def __enter__(self) -> "Attempt":
        self.safeguards.__enter__()
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        self.safeguards.__exit__(kind, error, traceback)
        if not lock_not_granted(error):
            return False
        self.wait = waited_for(self.migration, error)
        if self.last:
            raise DatabaseProblem(
                f"{self.wait}, {len(RETRY_DELAYS) + 1} times; the database is at revision "
                f"{revision_of(self.migration)}. Run the same command again once that "
                "transaction ends, or wait longer with `alembic -x lock_timeout=SECONDS ...`"
            ) from error
        return True


# PostgreSQL's lock_not_available and deadlock_detected; MariaDB's
# ER_LOCK_WAIT_TIMEOUT and ER_LOCK_DEADLOCK.
LOCK_TIMEOUTS = {"55P03", 1205}
DEADLOCKS = {"40P01", 1213}


def error_code(error: DBAPIError) -> str | int | None:
    # PyMySQL gives MariaDB's error number first; psycopg names the SQLSTATE.
    number = next(iter(getattr(error.orig, "args", ())), None)
    return number if isinstance(number, int) else getattr(error.orig, "sqlstate", None)


def lock_not_granted(error: BaseException | None) -> bool:
    """A lock timeout, or a deadlock the server broke by ending the migration:
    either passes once the other transaction ends."""
    return isinstance(error, DBAPIError) and error_code(error) in LOCK_TIMEOUTS | DEADLOCKS


# The table a statement locks first: ALTER TABLE post, CREATE INDEX ... ON post, ...
LOCKED_TABLE = re.compile(
    r"(?:TABLE|\bON|INTO|UPDATE|FROM)\s+(?:IF (?:NOT )?EXISTS\s+)?[`\"]?(\w+)", re.IGNORECASE
)


def waited_for(migration: MigrationContext, error: DBAPIError) -> str:
    """One line: the table whose lock was not granted, and who held it where the
    server tells."""
    found = LOCKED_TABLE.search(str(error.statement or ""))
    table = found[1] if found else "a table"
    if error_code(error) in DEADLOCKS:
        waited = f"a lock on {table} was not granted: the server broke a deadlock"
    else:
        seconds = timeout(migration, "lock_timeout", LOCK_TIMEOUT)
        waited = f"a lock on {table} was not granted within {seconds:g} s"
    connection = migration.bind
    assert connection is not None
    if connection.dialect.name == "postgresql":
        transactions = connection.execute(
            text(
                "SELECT a.pid, a.application_name, a.state,"
                " round(extract(epoch FROM now() - a.xact_start)),"
                " EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid AND l.granted"
                "  AND l.relation = to_regclass(quote_ident(:table)))"
                " FROM pg_stat_activity a WHERE a.datname = current_database()"
                " AND a.xact_start IS NOT NULL AND a.pid <> pg_backend_pid()"
                " ORDER BY a.xact_start"
            ),
            {"table": table},
        ).all()
        holders = [row for row in transactions if row[4]]
        # CREATE INDEX CONCURRENTLY waits for every older transaction, not a lock.
        who = "held by " if holders else "open transactions: "
        who += ", ".join(
            f"process {pid} ({name or 'no name'}, {state}, for {seconds:g} s)"
            for pid, name, state, seconds, _ in holders or transactions
        )
    else:
        # MariaDB tells which transactions are open, not which lock each holds.
        transactions = connection.execute(
            text(
                "SELECT p.ID, p.USER, p.HOST, TIMESTAMPDIFF(SECOND, t.trx_started, NOW())"
                " FROM information_schema.INNODB_TRX t"
                " JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
                " WHERE p.ID <> CONNECTION_ID() ORDER BY t.trx_started"
            )
        ).all()
        who = "open transactions: " + ", ".join(
            f"connection {id} ({user}@{host}, for {seconds} s)"
            for id, user, host, seconds in transactions
        )
    connection.rollback()
    return f"{waited} ({who})" if transactions else waited


def planned_steps(migration_context: MigrationContext) -> list[RevisionStep]:
    """The revisions the command is about to run; none for `alembic current` and
    its like, which only look.

    Alembic has no public way to ask this: it is the function the command gave
    the context, which run_migrations() calls the same way (tested in
    tests/test_database_safety.py, so that an Alembic upgrade that changes it fails).
    """
    plan = migration_context._migrations_fn
    # `current` and the like only look; `check` and autogenerate compare.
    looks_only = migration_context.opts.get("dont_mutate")
    if plan is None or looks_only or migration_context.opts.get("revision_context"):
        return []
    steps = plan(migration_context.get_current_heads(), migration_context)
    return [step for step in steps if isinstance(step, RevisionStep)]


def refuse_a_database_without_the_blog(connection: Connection, steps: list[RevisionStep]) -> None:
    """The first revision upgrades the blog as it was before migrations, so a
    database without its post table has nothing to upgrade. Refuse before the
    first revision runs: on a database server its DDL would stay behind."""
    from_base = any(step.is_upgrade and not step.from_revisions for step in steps)
    if from_base and not inspect(connection).has_table("post"):
        raise DatabaseProblem(
            f"{shown(connection.engine.url)} holds no blog to upgrade (it has no post table); "
            "create the blog at the latest revision with `python run.py init`"
        )


def refuse_dropping_data(
    migration: MigrationContext, connection: Connection | None, downgrades: list[RevisionStep]
) -> None:
    """Online, what the downgrades would drop of the data the database holds;
    offline (no connection), every table and column their SQL drops."""
    losses = data_that_would_be_dropped(migration.dialect.name, connection, downgrades)
    if losses and x_argument(migration, "drop_data") != "yes":
        raise DatabaseProblem(
            f"this downgrade would drop {', '.join(losses)}; take a dump of the database "
            "first, then run again with `alembic -x drop_data=yes downgrade ...`"
        )


def x_argument(migration: MigrationContext, name: str) -> str | None:
    """The value of `alembic -x NAME=VALUE`, if given."""
    assert migration.environment_context is not None  # env.py's
    return migration.environment_context.get_x_argument(as_dictionary=True).get(name)


def data_that_would_be_dropped(
    dialect_name: str, connection: Connection | None, downgrades: list[RevisionStep]
) -> list[str]:
    """Tables with rows and columns with values that the downgrades would drop;
    without a connection, every one that they drop, whatever it holds."""
    losses = []
    for table_name, column_name in dropped_by(dialect_name, downgrades):
        if table_name in DISPOSABLE_TABLES:
            continue
        if connection is None:
            losses.append(
                f"column {table_name}.{column_name}" if column_name else f"table {table_name}"
            )
            continue
        if not inspect(connection).has_table(table_name):
            continue  # an interrupted run of this downgrade dropped it already
        if column_name and column_name not in value_columns(connection, table_name):
            continue  # generated (computed from columns that stay), or dropped already
        table = sqlalchemy.table(table_name)
        counted: ColumnElement = (
            sqlalchemy.column(column_name) if column_name else sqlalchemy.literal_column("*")
        )
        count = connection.scalar(select(func.count(counted)).select_from(table))
        if count and column_name:
            losses.append(f"column {table_name}.{column_name} (set in {rows(count)})")
        elif count:
            losses.append(f"table {table_name} ({rows(count)})")
    return losses


def rows(count: int) -> str:
    return f"{count:,} row" + ("" if count == 1 else "s")


def dropped_by(dialect_name: str, downgrades: list[RevisionStep]) -> list[tuple[str, str | None]]:
    """(table, column) for each column and (table, None) for each table that the
    downgrades drop, found by a dry run: their operations go to an offline
    context that notes each drop instead of running anything."""
    migration_log = logging.getLogger("alembic.runtime.migration")
    migration_log.disabled = True  # its "Generating static SQL" would mislead
    try:
        dry_run = MigrationContext.configure(
            dialect_name=dialect_name, opts={"as_sql": True, "output_buffer": io.StringIO()}
        )
    finally:
        migration_log.disabled = False
    dropped: list[tuple[str, str | None]] = []
    # Every op.drop_table() and op.drop_column() ends in these two methods of
    # the context's implementation (also tested against Alembic's upgrades).
    dry_run.impl.drop_table = lambda table, **kw: dropped.append((table.name, None))  # type: ignore[method-assign]
    dry_run.impl.drop_column = lambda table_name, column, **kw: dropped.append(  # type: ignore[method-assign]
        (table_name, column.name)
    )
    with Operations.context(dry_run):
        for step in downgrades:
            step.migration_fn()
    return dropped
