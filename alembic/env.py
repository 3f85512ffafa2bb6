from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool

# The blog's safeguards for its database, shared with the blog (see README).
import database_safety

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
# Only `alembic check` and `revision --autogenerate` import the blog's models.
target_metadata = database_safety.models_metadata(config)

# other values from the config, defined by the needs of env.py,
# can be acquired:
# my_important_option = config.get_main_option("my_important_option")
# ... etc.

# BLOG_DATABASE_URL, when set, points the blog and its migrations elsewhere.
url = database_safety.database_url(config)


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
        # One transaction on SQLite, one per revision on a server, as online.
        transactional_ddl=database_safety.transactional_ddl(url),
        transaction_per_migration=not database_safety.transactional_ddl(url),
    )

    # The same timeouts as online, and no downgrade that drops data unasked.
    with database_safety.safeguards(context.get_context()), context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations in 'online' mode.

    In this scenario we need to create an Engine
    and associate a connection with the context.

    """
    # A caller may share its connection (the cookbook's "Sharing a Connection");
    # otherwise an engine with the blog's SQLite settings, waiting as a command does.
    connectable = config.attributes.get("connection") or database_safety.create_engine(
        url, database_safety.command_lock_wait(), poolclass=pool.NullPool
    )

    # Errors as one line, without the password; one migration at a time.
    with database_safety.connect(connectable) as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite rolls a whole command back if it fails; a server, the revision.
            transactional_ddl=database_safety.transactional_ddl(connection.engine.url),
            transaction_per_migration=not database_safety.transactional_ddl(connection.engine.url),
        )

        # No upgrade of a database without the blog; a backup of SQLite before a
        # downgrade, and on a server no downgrade that drops data unless told to;
        # there, a revision that waits too long for a lock is tried again.
        for attempt in database_safety.attempts(context.get_context()):
            with attempt, context.begin_transaction():
                context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
