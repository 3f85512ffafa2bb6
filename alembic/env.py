import os
from logging.config import fileConfig

from sqlalchemy import create_engine
from sqlalchemy import event
from sqlalchemy import make_url
from sqlalchemy import pool
from sqlalchemy.exc import DBAPIError

from alembic import context
from alembic.util import CommandError

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
target_metadata = None

# other values from the config, defined by the needs of env.py,
# can be acquired:
# my_important_option = config.get_main_option("my_important_option")
# ... etc.

# BLOG_DATABASE_URL points the blog and its migrations at another database.
url = os.environ.get("BLOG_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
# SQLite's DDL is transactional once BEGIN is ours (see run_migrations_online).
transactional_ddl = True if make_url(url).get_backend_name() == "sqlite" else None


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
        transactional_ddl=transactional_ddl,
    )

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations in 'online' mode.

    In this scenario we need to create an Engine
    and associate a connection with the context.

    """
    connectable = create_engine(url, poolclass=pool.NullPool)

    if connectable.dialect.name == "sqlite":
        database = connectable.url.database
        # Connecting would create an empty file that no revision can upgrade.
        if not database or not os.path.isfile(database):
            raise CommandError(f"{database} does not exist; create it with `python run.py init`")
        # pysqlite runs DDL outside any transaction; emit BEGIN ourselves so
        # that a failing migration rolls back whole (SQLAlchemy's pysqlite docs).
        # IMMEDIATE takes the write lock first, waiting for the blog's writers.
        event.listen(connectable, "connect", _autocommit_driver)
        event.listen(connectable, "begin", _begin_immediate)

    try:
        with connectable.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                transactional_ddl=transactional_ddl,
            )

            with context.begin_transaction():
                context.run_migrations()
    except DBAPIError as error:
        # One line, not a traceback (--raiseerr shows that): "file is not a database".
        raise CommandError(f"{error.orig} ({connectable.url.render_as_string()})") from error


def _autocommit_driver(dbapi_connection, connection_record) -> None:
    dbapi_connection.isolation_level = None


def _begin_immediate(connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
