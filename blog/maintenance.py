"""Operations on the whole database: create, back up, restore and check it."""

import contextlib
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import NamedTuple

import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Engine, MetaData, inspect, text

from before_migrations import legacy_metadata
from database_safety import (
    DISPOSABLE_TABLES,
    DatabaseProblem,
    back_up,
    check_sqlite_file,
    link_numbered,
    refuse_a_missing_database,
    refuse_a_stray_wal,
    shown,
    sqlite_path,
    value_columns,
)

from .db import alembic_config
from .models import Base


def migration_scripts(app) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(app.config["ALEMBIC_INI"]))


def init_db(engine: Engine, scripts: ScriptDirectory) -> Path | None:
    """Create the current schema, stamped at the Alembic head, in one transaction.

    An existing SQLite database is backed up first, then emptied, all under one
    write lock; the backup's path is returned. A database server's tables are
    never dropped: back them up with the server's own tools first.
    """
    path = sqlite_path(engine.url)
    if path:
        check_sqlite_file(path)
        refuse_a_stray_wal(path)
    backup = None
    try:
        with engine.begin() as connection:  # on SQLite, BEGIN IMMEDIATE: the write lock
            existing = MetaData()
            existing.reflect(connection)
            if existing.tables:
                if path is None:
                    raise DatabaseProblem(
                        f"{shown(engine.url)} already has tables "
                        f"({', '.join(sorted(existing.tables))}); drop them yourself after a "
                        "backup, or keep them and run `alembic upgrade head`"
                    )
                backup = back_up(path)
            existing.drop_all(connection)
            Base.metadata.create_all(connection)
            MigrationContext.configure(connection).stamp(scripts, "head")
    except BaseException:
        if backup:
            backup.unlink()  # the database is as it was: the backup adds nothing
        raise
    if backup:
        # The old rows' pages stay in the file as free space: give them back.
        # The new database is made either way: a VACUUM that a long writer
        # keeps waiting only leaves the file as large as it was.
        with engine.connect() as connection, contextlib.suppress(sqlite3.OperationalError):
            sqlite = connection.connection.driver_connection
            assert sqlite is not None  # an open connection has its driver's
            sqlite.execute("VACUUM")  # outside any transaction, as it must be
            sqlite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return backup


class Restored(NamedTuple):
    kept: Path | None  # where the database as it was is now, if it held anything
    damaged: bool  # it was damaged, and moved aside whole rather than copied


def restore_db(engine: Engine, source: Path, scripts: ScriptDirectory) -> Restored:
    """Replace a SQLite database's schema and rows with a backup's, in one transaction.

    The backup must hold the blog and nothing else, at a revision of scripts.
    The database is backed up first, under the same write lock; a damaged one,
    which SQLite cannot copy, is moved aside instead, with its -wal.
    """
    path = sqlite_path(engine.url)
    if path is None:
        raise DatabaseProblem(
            "restore works on SQLite files; restore a database server "
            "from a dump with the server's own tools"
        )
    check_sqlite_file(path)
    source = source.resolve()
    if not source.is_file():
        raise DatabaseProblem(f"{source} is not a file")
    if source == path:
        raise DatabaseProblem(f"{source} is the database itself; name a backup of it")
    try:
        refuse_a_bad_backup(source, scripts)
        if path.exists() and damage(path):
            aside = set_aside(path)
            try:
                restore_whole_blog(engine, path, source, scripts)
            except BaseException:
                put_back(aside, path)
                raise
            return Restored(aside, damaged=True)
        return Restored(restore_whole_blog(engine, path, source, scripts), damaged=False)
    except DatabaseProblem as problem:
        good = newest_good_backup(path, but=source)
        if not str(problem).startswith("cannot restore") or good is None:
            raise
        raise DatabaseProblem(
            f"{problem}; the newest good backup beside it is {good.name} "
            f"(`python run.py restore {good}`)"
        ) from problem


def damage(path: Path) -> str | None:
    """What SQLite's quick_check finds wrong with a database file, if anything."""
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as database:
        try:
            verdict = database.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as error:
            if getattr(error, "sqlite_errorname", "").startswith(
                ("SQLITE_CORRUPT", "SQLITE_NOTADB")
            ):
                return str(error)
            raise DatabaseProblem(f"cannot check {path}: {error}") from error
    if verdict == "ok":
        return None
    # One line a person reads: SQLite's first finding, not its every one.
    first = " ".join(verdict.split())
    return first if len(first) <= 200 else first[:200] + " ..."


def refuse_a_damaged_database(engine: Engine) -> None:
    """Serve only a whole SQLite file: quick_check reads all of it, so this runs
    once before serving, not in every worker."""
    path = sqlite_path(engine.url)
    if path:
        refuse_a_missing_database(engine.url)  # and a FIFO, on which SQLite would hang
    problem = damage(path) if path else None
    if path and problem:
        good = newest_good_backup(path, but=path)
        raise DatabaseProblem(
            f"{path} is damaged ({problem}); "
            + (
                f"put back the newest good backup beside it: `python run.py restore {good}`"
                if good
                else "put back a backup with `python run.py restore FILE`"
            )
        )


def newest_good_backup(path: Path, but: Path) -> Path | None:
    """The newest of the database's backups that is whole and holds a blog."""
    backups = sorted(
        (backup for backup in path.parent.glob(f"{path.name}.bak*") if backup != but),
        key=lambda backup: backup.stat().st_mtime,
        reverse=True,
    )
    for backup in backups:
        if damage(backup) is None:
            with closing(sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True)) as database:
                if database.execute("SELECT 1 FROM sqlite_master WHERE name = 'post'").fetchone():
                    return backup
    return None


def set_aside(path: Path) -> Path:
    """Move a damaged database, with its -wal and -shm, to blog.db.damaged (or
    .damaged.1, ...), never over another file; its new path."""
    aside = link_numbered(path, path, ".damaged")
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            companion.rename(aside.with_name(aside.name + suffix))
    path.unlink()
    return aside


def put_back(aside: Path, path: Path) -> None:
    """Undo set_aside(): whatever was made at the path since goes."""
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
        moved = aside.with_name(aside.name + suffix)
        if moved.exists():
            moved.rename(path.with_name(path.name + suffix))


def refuse_a_bad_backup(source: Path, scripts: ScriptDirectory) -> None:
    """Before anything is locked, copied or moved: the backup must be whole and
    hold the blog alone."""
    problem = damage(source)
    if problem:
        raise DatabaseProblem(f"cannot restore {source}: it is damaged ({problem})")
    engine = sqlalchemy.create_engine("sqlite://")
    try:
        with engine.connect() as alone:
            alone.exec_driver_sql("ATTACH DATABASE ? AS backup", (f"{source.as_uri()}?mode=ro",))
            refuse_what_is_not_a_blog(alone, source, scripts)
    finally:
        engine.dispose()


def restore_whole_blog(
    engine: Engine, path: Path, source: Path, scripts: ScriptDirectory
) -> Path | None:

    backup = None
    try:
        with engine.connect() as connection:
            sqlite = connection.connection.driver_connection
            assert sqlite is not None  # an open connection has its driver's
            # ATTACH is refused inside a transaction, so it comes before BEGIN.
            sqlite.execute("ATTACH DATABASE ? AS backup", (f"{source.as_uri()}?mode=ro",))
            try:
                with connection.begin():  # BEGIN IMMEDIATE: the write lock
                    existing = MetaData()
                    existing.reflect(connection)
                    if existing.tables:
                        backup = back_up(path)
                    # Rows arrive table by table; their references are checked at COMMIT.
                    connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
                    existing.drop_all(connection)
                    # The blog's own tables, as its revisions make them: nothing of
                    # the backup's definitions (a CHECK, a conflict clause, a
                    # generated column) runs or stays. Then its rows alone.
                    build_schema(connection, backup_revision(connection, source), scripts)
                    refuse_what_has_no_place(connection, source)
                    for name in inspect(connection).get_table_names():
                        # A restored backup must not bring back a session that
                        # has logged out since; the revisions stamped the version.
                        if name not in DISPOSABLE_TABLES | {"alembic_version"}:
                            copy_rows(connection, name, source)
            finally:
                sqlite.execute("DETACH DATABASE backup")
    except BaseException:
        if backup:
            backup.unlink()  # the database is as it was: the backup adds nothing
        raise
    return backup


def backup_revision(connection: Connection, source: Path) -> str | None:
    """The attached backup's revision; None for a blog from before migrations."""
    if not inspect(connection).has_table("alembic_version", schema="backup"):
        return None
    stamped = connection.scalars(text("SELECT version_num FROM backup.alembic_version")).all()
    if len(stamped) != 1:
        raise DatabaseProblem(
            f"cannot restore {source}: its alembic_version holds {len(stamped)} revisions, not one"
        )
    return stamped[0]


def refuse_what_has_no_place(connection: Connection, source: Path) -> None:
    """Every table and column of the backup's, but the disposable ones, has its
    place in the schema its revision makes: none of its rows is left behind."""
    inspector = inspect(connection)
    ours = set(inspector.get_table_names())
    left = []
    for name in inspector.get_table_names(schema="backup"):
        if name in DISPOSABLE_TABLES or name == "alembic_version":
            continue
        if name not in ours:
            left.append(f"table {name}")
            continue
        columns = set(value_columns(connection, name))
        left += [
            f"column {name}.{column}"
            for column in value_columns(connection, name, schema="backup")
            if column not in columns
        ]
    if left:
        raise DatabaseProblem(
            f"cannot restore {source}: its revision has no place for its {', '.join(left)}"
        )


def build_schema(connection: Connection, revision: str | None, scripts: ScriptDirectory) -> None:
    """In the connection's transaction, the blog's tables as they are at
    revision: the blog from before migrations, then its revisions up to it."""
    legacy_metadata.create_all(connection)
    if revision is None:
        return
    # Alembic's "Sharing a Connection": its upgrade runs in this transaction.
    # No file: its logging settings would replace the command's.
    config = Config()
    config.set_main_option("script_location", scripts.dir)
    config.set_main_option("sqlalchemy.url", "sqlite://")  # unused: the connection is given
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def copy_rows(connection: Connection, name: str, source: Path) -> None:
    """The backup's values of the table's columns, and nothing else of it (its
    generated columns, which would run an expression of the backup's, are not read)."""
    if name not in inspect(connection).get_table_names(schema="backup"):
        return
    ours = set(value_columns(connection, name))
    theirs = set(value_columns(connection, name, schema="backup"))
    missing = {
        column["name"]
        for column in inspect(connection).get_columns(name)
        if not column["nullable"] and column["name"] in ours - theirs
    }
    if missing:
        raise DatabaseProblem(
            f"cannot restore {source}: its table {name} gives no value for "
            f"{', '.join(sorted(missing))}"
        )
    columns = ", ".join(f'"{column}"' for column in sorted(ours & theirs))
    connection.exec_driver_sql(
        f'INSERT INTO main."{name}" ({columns}) SELECT {columns} FROM backup."{name}"'
    )


def refuse_what_is_not_a_blog(
    connection: Connection, source: Path, scripts: ScriptDirectory
) -> None:
    """The attached backup may hold the blog's own tables, columns and indexes only,
    at a revision this code knows: its CREATE statements are about to run, and a
    trigger or a view in them would run with every request of the blog."""
    tables = {table.name: set(table.columns.keys()) for table in Base.metadata.tables.values()}
    tables["alembic_version"] = {"version_num"}
    indexes = {index.name for table in Base.metadata.tables.values() for index in table.indexes}
    inspector = inspect(connection)
    foreign = []
    for type_, name in connection.execute(
        text("SELECT type, name FROM backup.sqlite_master WHERE name NOT LIKE 'sqlite_%'")
    ):
        if type_ == "table" and name in tables:
            columns = {c["name"] for c in inspector.get_columns(name, schema="backup")}
            foreign += [f"column {name}.{column}" for column in sorted(columns - tables[name])]
        elif not (type_ == "index" and name in indexes):
            foreign.append(f"{type_} {name}")
    if foreign:
        raise DatabaseProblem(
            f"cannot restore {source}: it holds what the blog does not: {', '.join(foreign)}"
        )
    if not inspector.has_table("post", schema="backup"):
        raise DatabaseProblem(f"cannot restore {source}: it holds no blog (no post table)")
    if inspector.has_table("alembic_version", schema="backup"):
        known = {revision.revision for revision in scripts.walk_revisions()}
        stamped = set(connection.scalars(text("SELECT version_num FROM backup.alembic_version")))
        if stamped - known:
            raise DatabaseProblem(
                f"cannot restore {source}: it is at revision {', '.join(sorted(stamped - known))}, "
                "which this code does not know"
            )


def check_database(engine: Engine, scripts: ScriptDirectory) -> None:
    """Raise DatabaseProblem, saying how to fix it, unless the database
    exists and is at this code's latest revision."""
    refuse_a_missing_database(engine.url)
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
        has_posts_table = inspect(connection).has_table("post")
        refuse_text_it_cannot_store(connection)
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


def narrow_text_tables(connection: Connection) -> dict[str, str]:
    """On MariaDB, the blog's tables whose character set is not utf8mb4, with it:
    they cannot hold every character a form accepts (an emoji, among others).
    The database's own default does not matter: the blog makes its tables in
    utf8mb4 whatever it is."""
    if connection.dialect.name != "mysql":
        return {}
    charsets = connection.execute(
        text(
            "SELECT t.TABLE_NAME, c.CHARACTER_SET_NAME FROM information_schema.TABLES t"
            " JOIN information_schema.COLLATION_CHARACTER_SET_APPLICABILITY c"
            " ON c.COLLATION_NAME = t.TABLE_COLLATION WHERE t.TABLE_SCHEMA = DATABASE()"
        )
    ).all()
    return {
        name: charset
        for name, charset in charsets
        if charset != "utf8mb4" and name in Base.metadata.tables
    }


def narrow_text_fixes(narrow: dict[str, str]) -> str:
    utf8mb4 = "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    return "; ".join(f"ALTER TABLE `{name}` CONVERT TO {utf8mb4}" for name in sorted(narrow))


def refuse_text_it_cannot_store(connection: Connection) -> None:
    """Refused before serving, with the statements that fix it: such a post would be lost."""
    narrow = narrow_text_tables(connection)
    if narrow:
        raise DatabaseProblem(
            f"the database stores text as {', '.join(sorted(set(narrow.values())))} in "
            f"{', '.join(sorted(narrow))}, which cannot hold every character a post may have "
            f"(an emoji, for one); stop the blog, take a dump, then run: "
            f"{narrow_text_fixes(narrow)}."
        )


def schema_differences(engine: Engine) -> list[str]:
    """Every way the database's tables differ from the models, in words; none when
    they match. What `alembic revision --autogenerate` would write, as a report."""
    refuse_a_missing_database(engine.url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        narrow = narrow_text_tables(connection)
    # A column's changes come as a list of modify_* tuples.
    flat = [d for group in differences for d in (group if isinstance(group, list) else [group])]
    return [describe_difference(*difference) for difference in flat] + [
        f"table {name} stores text as {charset}, the models as utf8mb4 "
        f"(run: {narrow_text_fixes({name: charset})})"
        for name, charset in sorted(narrow.items())
    ]


def integrity_problems(engine: Engine) -> list[str]:
    """What SQLite's quick_check and foreign_key_check find in the file, in words
    (a database server keeps its own files whole and its foreign keys checked)."""
    if sqlite_path(engine.url) is None:
        return []
    with engine.connect() as connection:
        verdicts = connection.exec_driver_sql("PRAGMA quick_check").scalars().all()
        dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    problems = [f"quick_check: {verdict}" for verdict in verdicts if verdict != "ok"]
    for table, rowid, parent, _ in dangling:
        problems.append(f"{table} row {rowid} refers to a row of {parent} that does not exist")
    return problems


def describe_difference(kind: str, *details) -> str:
    action, _, what = kind.partition("_")
    if action in ("add", "remove"):
        item = details[-1]  # a Table, Column, Index or constraint
        name = item.name or "(unnamed)"
        if isinstance(item, Column):
            name = f"{details[-2]}.{name}"
        where = {
            "add": "in the models but not in the database",
            "remove": "in the database but not in the models",
        }[action]
        label = {"fk": "foreign key", "constraint": "constraint"}.get(what, what)
        return f"{label} {name} is {where}"
    # modify_type, modify_nullable, ...: (schema, table, column, existing, database, models)
    _, table, column, _, in_database, in_models = details
    return (
        f"column {table}.{column}: {what} is {in_database} in the database, "
        f"{in_models} in the models"
    )
