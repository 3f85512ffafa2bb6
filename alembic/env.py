import io
import itertools
import logging
import os
import sqlite3
import stat
from contextlib import closing
from logging.config import fileConfig

from alembic import context
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.util import CommandError
from sqlalchemy import (
    column,
    create_engine,
    event,
    func,
    inspect,
    literal_column,
    make_url,
    pool,
    select,
    table,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import ColumnElement

# this is the Alembic Config object, which provides
# access to the values within the .ini file in use.
config = context.config

# Interpret the config file for Python logging.
# This line sets up loggers basically.
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

# add your model's MetaData object here
# for 'autogenerate' support
# from myapp import mymodel
# target_metadata = mymodel.Base.metadata
# env.py never imports the blog; a caller that compares the models with the
# database (pytest-alembic, `python run.py check`) passes their metadata.
target_metadata = config.attributes.get("target_metadata")

# other values from the config, defined by the needs of env.py,
# can be acquired:
# my_important_option = config.get_main_option("my_important_option")
# ... etc.

# BLOG_DATABASE_URL points the blog and its migrations at another database.
url = os.environ.get("BLOG_DATABASE_URL") or config.get_main_option("sqlalchemy.url", "")


def transactional_ddl(backend_name: str) -> bool | None:
    # SQLite's DDL is transactional once BEGIN is ours (see run_migrations_online).
    return True if backend_name == "sqlite" else None


def run_migrations_offline() -> None:
    """Run migrations in 'offline' mode.

    This configures the context with just a URL
    and not an Engine, though an Engine is acceptable
    here as well.  By skipping the Engine creation
    we don't even need a DBAPI to be available.

    Calls to context.execute() here emit the given string to the
    script output.

    """
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transactional_ddl=transactional_ddl(make_url(url).get_backend_name()),
    )

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations in 'online' mode.

    In this scenario we need to create an Engine
    and associate a connection with the context.

    """
    # A caller may share its own connection or engine (the Alembic cookbook's
    # "Sharing a Connection"); pytest-alembic does.
    connectable = config.attributes.get("connection")
    if connectable is None:
        connectable = create_engine(url, poolclass=pool.NullPool)
        if connectable.dialect.name == "sqlite":
            database = connectable.url.database
            # Connecting would create an empty file that no revision can upgrade.
            if not database or not os.path.isfile(database):
                raise CommandError(
                    f"{database} does not exist; create it with `python run.py init`"
                )
            # pysqlite runs DDL outside any transaction; emit BEGIN ourselves so
            # that a failing migration rolls back whole (SQLAlchemy's pysqlite docs).
            # IMMEDIATE takes the write lock first, waiting for the blog's writers.
            event.listen(connectable, "connect", _configure_sqlite)
            event.listen(connectable, "begin", _begin_immediate)

    try:
        if isinstance(connectable, Connection):
            do_run_migrations(connectable)
        else:
            with connectable.connect() as connection:
                do_run_migrations(connection)
    except DBAPIError as error:
        # A failure in batch mode's clean-up hides the one that set it off
        # ("database or disk is full"): report the first.
        while isinstance(error.__context__, DBAPIError):
            error = error.__context__
        reason = str(error.orig)
        if getattr(error.orig, "sqlite_errorname", None) == "SQLITE_IOERR_SHMSIZE":
            reason = "database or disk is full (no room for the -shm file)"
        # One line, not a traceback (--raiseerr shows that): "file is not a database".
        raise CommandError(f"{reason} ({connectable.engine.url.render_as_string()})") from error


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transactional_ddl=transactional_ddl(connection.dialect.name),
    )

    backup = None
    try:
        with context.begin_transaction():
            refuse_a_database_without_the_blog(connection)
            # Nothing the blog holds is dropped without a copy of it.
            backup = safeguard_downgrades(connection)
            context.run_migrations()
    except BaseException:
        if backup:
            os.remove(backup)  # the database is as it was: the copy adds nothing
        raise


def _configure_sqlite(dbapi_connection, connection_record) -> None:
    # The blog's settings (blog/db.py): WAL lets its readers go on while a
    # migration holds the write lock.
    for pragma in (
        "journal_mode = WAL",
        "synchronous = FULL",
        "busy_timeout = 5000",
        "foreign_keys = ON",
        "journal_size_limit = 67108864",
    ):
        dbapi_connection.execute(f"PRAGMA {pragma}")
    dbapi_connection.isolation_level = None


def _begin_immediate(connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def planned_steps() -> list[RevisionStep]:
    """The revisions the command is about to run, as MigrationContext.run_migrations
    gets them; none for `alembic current` and its like, which only look."""
    migration_context = context.get_context()
    migrations_fn = migration_context._migrations_fn
    if migrations_fn is None or migration_context.opts.get("dont_mutate"):
        return []
    steps = migrations_fn(migration_context.get_current_heads(), migration_context)
    return [step for step in steps if isinstance(step, RevisionStep)]


def refuse_a_database_without_the_blog(connection) -> None:
    """The first revision upgrades the blog as it was before migrations, so a
    database without its post table has nothing to upgrade. Refuse before the
    first revision runs: on a database server its DDL would stay behind."""
    from_base = any(step.is_upgrade and not step.from_revisions for step in planned_steps())
    if from_base and not inspect(connection).has_table("post"):
        raise CommandError(
            f"{connection.engine.url} holds no blog to upgrade (it has no post table); "
            "create the blog at the latest revision with `python run.py init`"
        )


def safeguard_downgrades(connection) -> str | None:
    """Before the first downgrade() runs: back up a SQLite file (returning the
    copy's path), or refuse on a database server if the downgrade would drop
    data, unless told to go ahead."""
    downgrades = [step for step in planned_steps() if not step.is_upgrade]
    if not downgrades:
        return None
    if connection.dialect.name == "sqlite":
        database = connection.engine.url.database
        # A database in memory (a caller's) ends with its connection: no file to copy.
        return back_up(database) if database not in (None, "", ":memory:") else None
    losses = data_that_would_be_dropped(connection, downgrades)
    if losses and context.get_x_argument(as_dictionary=True).get("drop_data") != "yes":
        raise CommandError(
            f"this downgrade would drop {', '.join(losses)}; take a dump of the database "
            "first, then run again with `alembic -x drop_data=yes downgrade ...`"
        )
    return None


def back_up(database: str) -> str:
    """Copy the SQLite file, as the last commit left it, to a new blog.db.bak[.N].

    blog/maintenance.py's back_up(), repeated because env.py never imports the
    blog: keep the two alike.
    """
    path = os.path.abspath(database)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    for n in itertools.count():
        backup = f"{path}.bak" + (f".{n}" if n else "")
        try:
            fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            break
        except FileExistsError:
            continue
    try:
        os.fchmod(fd, mode)
        # Another connection sees only what is committed: this one holds the
        # write lock and has changed nothing yet.
        with closing(sqlite3.connect(path)) as source, closing(sqlite3.connect(backup)) as copy:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
        os.fsync(fd)
        folder = os.open(os.path.dirname(path), os.O_RDONLY)  # the new name, on disk too
        os.fsync(folder)
        os.close(folder)
    except BaseException as error:
        for leftover in (backup, f"{backup}-journal"):
            if os.path.exists(leftover):
                os.remove(leftover)
        if isinstance(error, sqlite3.Error):
            raise CommandError(f"cannot back up {path} before the downgrade: {error}") from error
        raise
    finally:
        os.close(fd)
    logging.getLogger("alembic.env").info(
        "Backed up %s to %s; `python run.py restore %s` puts it back", path, backup, backup
    )
    return backup


# Revision 3's sessions and failed logins: dropping them logs everyone out
# and forgets old failures, but loses nothing anyone wrote.
DISPOSABLE_TABLES = {"user_session", "login_failure"}


def data_that_would_be_dropped(connection, downgrades) -> list[str]:
    """Tables with rows and columns with values that the downgrades would drop."""
    # A dry run: the revisions' operations go to an offline context, which
    # notes each table and column dropped instead of running anything.
    migration_log = logging.getLogger("alembic.runtime.migration")
    migration_log.disabled = True  # its "Generating static SQL" would mislead
    dry_run = MigrationContext.configure(
        dialect_name=connection.dialect.name, opts={"as_sql": True, "output_buffer": io.StringIO()}
    )
    migration_log.disabled = False
    dropped = []
    dry_run.impl.drop_table = lambda gone, **kw: dropped.append((gone.name, None))  # type: ignore[method-assign]
    dry_run.impl.drop_column = lambda table_name, gone, **kw: dropped.append(  # type: ignore[method-assign]
        (table_name, gone.name)
    )
    with Operations.context(dry_run):
        for step in downgrades:
            step.migration_fn()
    losses = []
    for table_name, column_name in dropped:
        if column_name and is_generated(connection, table_name, column_name):
            continue  # the database computed its values from others that stay
        if table_name in DISPOSABLE_TABLES:
            continue
        counted: ColumnElement = column(column_name) if column_name else literal_column("*")
        count = connection.scalar(select(func.count(counted)).select_from(table(table_name)))
        if count and column_name:
            losses.append(f"column {table_name}.{column_name} (set in {count:,} rows)")
        elif count:
            losses.append(f"table {table_name} ({count:,} rows)")
    return losses


def is_generated(connection, table_name: str, column_name: str) -> bool:
    columns = inspect(connection).get_columns(table_name)
    return any(c["name"] == column_name and "computed" in c for c in columns)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
